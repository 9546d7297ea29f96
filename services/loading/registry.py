"""Loaded models in memory: what the router and the catalogue see of the loaded_models table.

A loaded model is routed by its `name` before anything else (a wildcard provider would
otherwise take any name), to the configured Ollama that holds it or to its own
OpenAI-compatible base URL, whose key is opened once and kept here for the router.

Every replica sees the same table: each polls it every `refresh_s` (1 s, like users' own
keys), and a request this replica cannot route (a model loaded on another replica a moment
ago) triggers a re-read, shared by concurrent misses and at most every `miss_s`, so such a
request is routable at once with no database read on any request that routes.
Removal takes the model out of routing; calls already under way hold their target and key
and finish.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from services.catalog.pricing import ModelInfo
from services.clock import Clock
from services.config.schema import ProviderConfig
from services.core.poller import Changes, Poller
from services.core.types import Target
from services.routing.strategies.base import CandidateView
from services.store.records import LoadedModelRecord

log = logging.getLogger("tollgate.loading")

LOADED_PROVIDER = "loaded"  # the provider name shown for a model with its own base URL
FORMAT_VENDORS = {"gguf": "local", "ollama": "ollama", "openai": ""}


@dataclass(frozen=True, slots=True)
class LoadedModel:
    record: LoadedModelRecord
    info: ModelInfo
    providers: tuple[str, ...]
    targets: tuple[tuple[Target, int, float], ...]  # (target, priority, weight)


class LoadedModels:
    def __init__(self, store: Any, secrets: Any, providers: dict[str, ProviderConfig], clock: Clock, *,
                 set_secret: Any = None, refresh_s: float = 1.0, miss_s: float = 0.2,
                 changes: Changes | None = None) -> None:
        self.store = store
        self.secrets = secrets  # auth/provider_secrets.py: opens a loaded model's sealed key
        self.providers = providers
        self.clock = clock
        self.miss_s = miss_s
        self._set_secret = set_secret or (lambda key_id, secret: None)
        self._by_name: dict[str, LoadedModel] = {}
        self._read_at = -1e9  # when the last finished read began (monotonic)
        self._reading_started = -1e9
        self._reading: asyncio.Task | None = None
        self.poller = Poller("loaded-models", self.refresh, refresh_s, log, changes=changes)  # the periodic read

    # ------------------------------------------------------------------ reads (hot path: no I/O)

    def get(self, name: str) -> LoadedModel | None:
        return self._by_name.get(name)

    def all(self) -> list[LoadedModel]:
        return sorted(self._by_name.values(), key=lambda m: m.record.name)

    def views(self, name: str, hint: str = "") -> list[CandidateView] | None:
        """Candidates for a loaded model's name, or None when `name` is not a loaded model."""
        m = self._by_name.get(name)
        if m is None:
            return None
        hint = "" if hint in ("", "auto") else hint
        return [CandidateView(target=t, priority=prio, weight=w) for t, prio, w in m.targets
                if not hint or hint in (t.provider, t.kind)]

    async def on_miss(self, name: str) -> bool:
        """For a request nothing here can route (it would be a 404): makes sure a read that began
        after it arrived has finished, so a model loaded on another replica before the request is
        seen; True when `name` is loaded now. Reads for misses are shared and start at most every
        `miss_s`: a flood of unknown names costs a few reads a second, each such request waits at
        most `miss_s`. Requests that route (a wildcard provider takes any name) never come here,
        so on such a deployment another replica picks a new name up with its periodic read."""
        if not name:
            return False
        try:
            await self._read_since(self.clock.monotonic(), name)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the store is down: the request goes on with what this replica knows
            log.debug("loaded models re-read failed: %s", type(e).__name__)
        return name in self._by_name

    async def _read_since(self, arrived: float, name: str) -> None:
        while self._read_at < arrived and name not in self._by_name:
            task = self._reading
            if task is None or task.done() or self._reading_started < arrived:
                if task is not None and not task.done():
                    await asyncio.shield(task)  # began before we arrived: it may not see the row
                    continue
                wait = self._reading_started + self.miss_s - self.clock.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                task = self._reading = asyncio.ensure_future(self._read())
                self._reading_started = self.clock.monotonic()
            await asyncio.shield(task)

    # ------------------------------------------------------------------ changes

    async def refresh(self) -> None:
        """Re-read the table; concurrent callers share one read."""
        task = self._reading
        if task is None or task.done():
            task = self._reading = asyncio.ensure_future(self._read())
            self._reading_started = self.clock.monotonic()
        await asyncio.shield(task)

    async def add(self, record: LoadedModelRecord, secret: str = "") -> LoadedModel:
        """This replica routes it at once (others within refresh_s, or at their first request for it)."""
        m = self._build(record)
        if secret:
            self._set_secret(record.id, secret)
        self._by_name[record.name] = m
        return m

    def remove(self, name: str) -> LoadedModel | None:
        m = self._by_name.pop(name, None)
        if m is not None and m.record.has_key:
            self._set_secret(m.record.id, None)
        return m

    def start(self) -> None:
        self.poller.start()

    async def close(self) -> None:
        await self.poller.close()
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)

    # ------------------------------------------------------------------ internals

    async def _read(self) -> None:
        started = self.clock.monotonic()
        records = await self.store.list_loaded_models()
        fresh: dict[str, LoadedModel] = {}
        for rec in records:
            old = self._by_name.get(rec.name)
            if old is not None and old.record.id == rec.id:
                fresh[rec.name] = old
                continue
            if rec.has_key:
                try:
                    self._set_secret(rec.id, await self.secrets.open_loaded_model(rec.id))
                except Exception as e:
                    log.warning("loaded model %s: its key cannot be opened (%s); not routable", rec.id, type(e).__name__)
                    continue
            built = self._build(rec)
            if built.targets:
                fresh[rec.name] = built
        for name, old in self._by_name.items():
            if fresh.get(name) is not old and old.record.has_key:
                self._set_secret(old.record.id, None)
        self._by_name = fresh
        self._read_at = started

    def _build(self, rec: LoadedModelRecord) -> LoadedModel:
        targets: list[tuple[Target, int, float]] = []
        if rec.provider:
            p = self.providers.get(rec.provider)
            if p is not None:
                for k in p.keys:
                    targets.append((Target(provider=p.name, kind=p.kind, key_id=k.id, model=rec.upstream_model,
                                           base_url=p.base_url, timeout_s=p.timeout_s), p.priority, p.weight))
        else:
            # Its own base URL came from a caller: the SSRF-guarded connector carries it (F8).
            targets.append((Target(provider=LOADED_PROVIDER, kind=rec.kind, key_id=rec.id, model=rec.upstream_model,
                                   base_url=rec.base_url, timeout_s=60.0, guarded=True), 0, 1.0))
        vendor = FORMAT_VENDORS.get(rec.format, "") or (rec.upstream_model.partition("/")[0]
                                                        if "/" in rec.upstream_model else "openai-compatible")
        info = ModelInfo(id=rec.name, name=rec.name, owned_by=vendor,
                         description=rec.description or f"Loaded from {rec.format} source ({rec.upstream_model})",
                         context_length=rec.context_length, kind="chat",
                         supported_parameters=("temperature", "max_tokens", "top_p", "stop", "stream"))
        return LoadedModel(rec, info, tuple(sorted({t.provider for t, _, _ in targets})), tuple(targets))
