"""The key gate: whether a provider key may take a try now, and what a try's outcome does to it.

One gate for every way an upstream is tried (chat, streams, embeddings, the native
pass-through). Before a try it checks the key's Retry-After or auth cool-down, its concurrency
cap (A8), its breaker (A1; in half-open one request holds the probe) and its own limits (rpm,
daily quota, C6); after a try it tells the breaker (a count, or just the probe back) and cools
the key down after a 429 (A3) or a refused key (A4). It holds the gateway's keys' secrets and
opens a user's own keys only for their owner (F5). The checks that skip a key return the
skip's outcome name; the router records it.
"""

from __future__ import annotations

from typing import Callable

from services.clock import Clock
from services.config.schema import Config
from services.core import errors as E
from services.core.errors import UpstreamFailure
from services.core.types import Target
from services.limits.base import Limiter, Rule
from services.providers.transport import PROVIDER_AUTH_MESSAGE
from services.routing.breaker import HALF_OPEN, Breaker
from services.routing.cooldown import Cooldowns
from services.routing.route_log import Tries
from services.routing.user_keys import UserKeys

AUTH_DISABLE_S = 3600.0
KEY_BUSY_RETRY_S = 1.0  # what a caller turned away by a per-key concurrency cap is told to wait (A8)


class KeyGate:
    def __init__(self, cfg: Config, limiter: Limiter, clock: Clock, user_keys: UserKeys | None = None,
                 on_open: Callable[[str], None] | None = None,
                 on_disabled: Callable[[str], None] | None = None) -> None:
        """`on_open` / `on_disabled`: called with a key id when its circuit opens / when its
        provider refuses it (issue 16: alerts); neither may raise."""
        self.limiter = limiter
        self.user_keys = user_keys  # issue 7: users' own provider keys, tried before the gateway's
        self.breaker = Breaker(clock, failure_threshold=cfg.breaker_threshold, base_cooldown_s=cfg.breaker_cooldown_s,
                               on_open=on_open)
        self.on_disabled = on_disabled
        self.cooldowns = Cooldowns(clock)
        self._secrets: dict[str, str] = {}
        self._rules: dict[str, tuple[Rule, ...]] = {}
        # RELIABILITY A8: at most this many tries in flight per provider key (absent or 0 = no cap).
        # Read from ProviderConfig.max_in_flight where the schema has it; settable at run time.
        self.caps: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}  # per key: routes in use, for caps; 0s are dropped
        self._cooldown_kind: dict[str, str] = {}  # per key: what its last cool-down was for (auth | rate_limited)
        for p in cfg.providers:
            cap = int(getattr(p, "max_in_flight", 0) or 0)
            for k in p.keys:
                self._secrets[k.id] = k.secret
                if cap > 0:
                    self.caps[k.id] = cap
                rules = []
                if p.rpm:
                    rules.append(Rule("key_rpm", p.rpm, window_s=p.rate_window_s))
                if p.daily_quota:
                    rules.append(Rule("key_daily", p.daily_quota, period="day", tz=cfg.quota_timezone))
                if rules:
                    self._rules[k.id] = tuple(rules)

    # ------------------------------------------------------------------ secrets and rules

    def set_secret(self, key_id: str, secret: str | None) -> None:
        """A key that appears at run time (a loaded model's, issue 19); None forgets it."""
        if secret is None:
            self._secrets.pop(key_id, None)
        else:
            self._secrets[key_id] = secret

    def secret(self, key_id: str) -> str:
        """A configured key's secret (never logged, never put in an error); "" for a keyless provider."""
        return self._secrets.get(key_id, "")

    async def owned_secret(self, t: Target) -> str | None:
        """A user's own key, opened only for its owner. None (skip the key, say nothing why) when
        it is gone or unreadable."""
        if self.user_keys is None:
            return None
        try:
            return await self.user_keys.secret(t.key_id, owner=t.owner)
        except E.TollgateError:  # deleted meanwhile (NotFound) or unreadable (SealError)
            return None

    def key_rules(self, key_id: str) -> tuple[Rule, ...]:
        return self._rules.get(key_id, ())

    # ------------------------------------------------------------------ before a try

    def unavailable(self, t: Target, tr: Tries) -> str | None:
        """The checks that claim nothing: a Retry-After or auth cool-down, the per-key cap."""
        key = t.key_id
        left = self.cooldowns.remaining(key)
        if left > 0.0:
            # The skip explains the answer if nothing else is left: 502 for a disabled key (A4),
            # 429 with the time left for a rate-limited one (A3).
            if self._cooldown_kind.get(key) == "auth":
                tr.failures.append(UpstreamFailure("auth", 401, PROVIDER_AUTH_MESSAGE))
            else:
                tr.failures.append(UpstreamFailure("rate_limited", 429, "provider key is cooling down after a 429", left))
            return "cooldown"
        cap = self.caps.get(key, 0)
        if cap and self.in_flight.get(key, 0) >= cap:
            # RELIABILITY A8: our own 429, not the key's fault: the breaker is not told.
            tr.failures.append(UpstreamFailure("rate_limited", 429, "provider key is at its concurrency cap", KEY_BUSY_RETRY_S))
            return "key_busy"
        return None

    def closed(self, t: Target, tr: Tries) -> str | None:
        """Asks the breaker; in half-open, a pass hands this request the one probe (A1)."""
        key = t.key_id
        if not self.breaker.tracks(key):  # closed and clean: allowed, and no probe to hold
            tr.probe = False
            return None
        half_open = self.breaker.state(key) == HALF_OPEN
        if not self.breaker.allow(key):
            return "breaker_open"
        tr.probe = half_open
        return None

    def limited(self, t: Target) -> bool:
        """Whether the key may have limits of its own; most have none, and then no coroutine is made."""
        return t.key_id in self._rules or (bool(t.owner) and self.user_keys is not None)

    async def over_limits(self, t: Target, tr: Tries) -> str | None:
        """The key's own rpm and daily quota (C6), counted once per upstream call."""
        rules = self._rules.get(t.key_id)
        if not rules and t.owner and self.user_keys is not None:
            rules = self.user_keys.rules(t.key_id)
        if not rules:
            return None
        try:
            d = await self.limiter.hit("pk:" + t.key_id, rules)
        except BaseException:
            self.release_probe(tr, t.key_id)  # a limiter that fails (closed mode) must not strand the probe
            raise
        if d.allowed:
            return None
        self.release_probe(tr, t.key_id)
        tr.failures.append(UpstreamFailure("rate_limited", 429, "provider key over its own limit", d.retry_after_s))
        return "key_rate_limited"

    def hold(self, key: str) -> None:
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def let_go(self, key: str) -> None:
        n = self.in_flight[key] - 1
        if n:
            self.in_flight[key] = n
        else:
            del self.in_flight[key]

    # ------------------------------------------------------------------ after a try

    def succeeded(self, tr: Tries, key: str) -> None:
        if self.breaker.tracks(key):  # a clean closed circuit has nothing to reset
            self.breaker.record_success(key)
        tr.probe = False

    def verdict(self, tr: Tries, key: str, f: UpstreamFailure) -> None:
        """Tells the breaker about a failed try: a count (A1), or just the probe back (429, 4xx)."""
        if f.counts_for_breaker:
            self.breaker.record_failure(key)
        elif tr.probe:
            self.breaker.release_probe(key)
        tr.probe = False

    def release_probe(self, tr: Tries, key: str) -> None:
        if tr.probe:
            self.breaker.release_probe(key)
            tr.probe = False

    def cool_down(self, key: str, f: UpstreamFailure) -> None:
        """Benches a key after a 429 (for its Retry-After) or a refused key (an hour); other failures do not."""
        if f.kind == "rate_limited":
            self.cooldowns.set(key, f.retry_after_s if f.retry_after_s is not None else 1.0)
            self._cooldown_kind[key] = "rate_limited"
        elif f.kind == "auth":
            # RELIABILITY A4: the provider refused our key; bench it instead of hammering it.
            self.cooldowns.set(key, AUTH_DISABLE_S)
            self._cooldown_kind[key] = "auth"
            if self.on_disabled is not None:
                self.on_disabled(key)  # issue 16: an alert (non-blocking)
