"""A user's own provider keys as routing candidates, tried before the gateway's (seed 001).

`UserKeys.candidates(user_id, model)` turns the caller's enabled provider keys that allow the
model (an empty allow-list allows any; a request naming no model uses each key's default) into
CandidateViews whose Target carries `owner=user_id`, `key_id` = the provider key's id and the
key's base URL (or its kind's default). Views keep the key's own priority for ordering among
the user's keys; the router places them all before the gateway's candidates.

Isolation (RELIABILITY F5): keys are listed with the store's owner filter and checked again
here, and `secret(key_id, owner)` opens a key only for the user it was listed for, so one
user's request can reach only that user's keys and the gateway's shared ones.

The hot path does not touch the database per request: each user's key list is cached for at
most `ttl_s` (1 s: a deleted key stops within a second on every replica), concurrent misses
share one lookup, and opened secrets are kept in memory briefly.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from typing import Any

from services.clock import Clock
from services.core.types import Target
from services.limits.base import Rule
from services.config.kinds import resolve
from services.routing.strategies.base import CandidateView
from services.store.records import ProviderKeyNotFound, ProviderKeyRecord

CACHE_TTL_S = 1.0
SHARED = "*"  # issue 16: the owner id of gateway-wide keys an admin added at run time (user_id NULL)
SECRET_TTL_S = 30.0
MAX_USERS = 10_000
MAX_SECRETS = 10_000
DEFAULT_TIMEOUT_S = 60.0


class UserKeys:
    def __init__(self, store: Any, secrets: Any, clock: Clock, *, catalog: Any = None, ttl_s: float = CACHE_TTL_S,
                 secret_ttl_s: float = SECRET_TTL_S, timeout_s: float = DEFAULT_TIMEOUT_S,
                 quota_tz: str = "UTC") -> None:
        self.store = store
        self.secrets = secrets  # auth/provider_secrets.py: opens a sealed key
        self.clock = clock
        self.catalog = catalog
        self.ttl_s = ttl_s
        self.secret_ttl_s = secret_ttl_s
        self.timeout_s = timeout_s
        self.quota_tz = quota_tz
        self._keys: OrderedDict[str, tuple[float, list[ProviderKeyRecord]]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task] = {}
        self._owners: dict[str, str] = {}  # provider key id -> user id, from the last listing
        self._rules: dict[str, tuple[Rule, ...]] = {}
        self._secrets: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def fresh(self, user_id: str) -> bool:
        """Whether `user_id`'s listing is cached and fresh (candidates() then awaits nothing slow)."""
        hit = self._keys.get(user_id)
        return hit is not None and self.clock.monotonic() - hit[0] < self.ttl_s

    async def candidates(self, user_id: str, model: str) -> list[CandidateView]:
        """The user's own candidates for `model` ("" = each key's default model), best first."""
        if not user_id:
            return []
        views = []
        for rec in await self._records(user_id):
            if rec.disabled or (rec.user_id or SHARED) != user_id:
                continue
            kind = resolve(rec.provider_kind)
            if kind is None:
                continue
            upstream_model = model or rec.default_model
            if not upstream_model or (rec.models and upstream_model not in rec.models):
                continue
            base_url = rec.base_url or kind.base_url
            if not base_url and kind.wire != "demo":
                continue
            price = self.catalog.price(upstream_model) if self.catalog is not None else (0.0, 0.0)
            target = Target(provider=kind.name, kind=kind.name, key_id=rec.id, model=upstream_model, base_url=base_url,
                            timeout_s=self.timeout_s, owner=user_id)
            views.append(CandidateView(target=target, priority=rec.priority, price_in_per_mtok=price[0],
                                       price_out_per_mtok=price[1]))
        return views

    async def secret(self, key_id: str, owner: str | None = None) -> str:
        """The provider key in clear (for the router's Call only). With `owner`, only when that
        user owns the key as of the last listing; ProviderKeyNotFound otherwise."""
        if owner is not None and self._owners.get(key_id) != owner:
            raise ProviderKeyNotFound("provider key not found", metadata={"provider_key_id": key_id})
        now = self.clock.monotonic()
        hit = self._secrets.get(key_id)
        if hit is not None and now - hit[0] < self.secret_ttl_s:
            return hit[1]
        plain = await self.secrets.open(key_id)
        self._secrets[key_id] = (now, plain)
        self._secrets.move_to_end(key_id)
        if len(self._secrets) > MAX_SECRETS:
            self._secrets.popitem(last=False)
        return plain

    def rules(self, key_id: str) -> tuple[Rule, ...]:
        """The key's own rpm / daily quota as limiter rules (like config keys' in the router)."""
        return self._rules.get(key_id, ())

    def forget(self, user_id: str | None = None, key_id: str | None = None) -> None:
        """Drop cached listings (one user's or all) and a cached secret, after a change here."""
        if user_id is None:
            self._keys.clear()
            self._inflight.clear()
        else:
            self._keys.pop(user_id, None)
            self._inflight.pop(user_id, None)
        if key_id is not None:
            self._secrets.pop(key_id, None)
            self._owners.pop(key_id, None)
            self._rules.pop(key_id, None)
        elif user_id is None:
            self._secrets.clear()

    # ------------------------------------------------------------------ internals

    async def _records(self, user_id: str) -> list[ProviderKeyRecord]:
        now = self.clock.monotonic()
        hit = self._keys.get(user_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        task = self._inflight.get(user_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch(user_id, now))
            self._inflight[user_id] = task
            task.add_done_callback(functools.partial(self._fetched, user_id))
        # Shielded: one request going away must not cancel the lookup others wait for.
        return await asyncio.shield(task)

    async def _fetch(self, user_id: str, started: float) -> list[ProviderKeyRecord]:
        if user_id == SHARED:  # the gateway-wide run-time keys (issue 16)
            recs = [r for r in await self.store.list_provider_keys(None) if r.user_id is None]
        else:
            recs = [r for r in await self.store.list_provider_keys(user_id) if r.user_id == user_id]
        if self._inflight.get(user_id) is asyncio.current_task():  # not forgotten meanwhile
            old = self._keys.get(user_id)
            live = {r.id for r in recs}
            for r in old[1] if old else ():
                if r.id not in live:  # deleted: its secret must not outlive the listing
                    self._secrets.pop(r.id, None)
                    self._owners.pop(r.id, None)
                    self._rules.pop(r.id, None)
            for r in recs:
                self._owners[r.id] = user_id
                self._rules[r.id] = self._rules_of(r)
            self._keys[user_id] = (started, recs)
            self._keys.move_to_end(user_id)
            if len(self._keys) > MAX_USERS:
                _, (_, dropped) = self._keys.popitem(last=False)
                for r in dropped:
                    self._owners.pop(r.id, None)
                    self._rules.pop(r.id, None)
                    self._secrets.pop(r.id, None)
        return recs

    def _fetched(self, user_id: str, task: asyncio.Task) -> None:
        if self._inflight.get(user_id) is task:
            del self._inflight[user_id]
        if not task.cancelled():
            task.exception()  # observed here: waiters that went away must not leave it unretrieved

    def _rules_of(self, rec: ProviderKeyRecord) -> tuple[Rule, ...]:
        rules = []
        if rec.rpm:
            rules.append(Rule("key_rpm", rec.rpm, window_s=60.0))
        if rec.daily_quota:
            rules.append(Rule("key_daily", rec.daily_quota, period="day", tz=self.quota_tz))
        return tuple(rules)
