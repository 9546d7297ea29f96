"""The router: orders a request's candidates and tries them under one deadline.

Per try it checks the key's breaker, its Retry-After cool-down and its own limits (rpm,
daily quota), calls the adapter with a timeout no longer than the time left, and decides
from the UpstreamFailure what happens next (RELIABILITY A1-A8):
- caller errors (400, content policy, context length) end the request at once, no breaker;
- 429 with Retry-After ≤ retry_after_wait_max_s waits and retries the same key once,
  a longer one cools the key down and moves on;
- 401/403 from the provider disables the key for an hour and moves on (hidden from the caller);
- 5xx, connect errors, resets and protocol errors count for the breaker, get one same-route
  retry with jitter (none after a timeout), then the next candidate;
- a stream fails over only until its first content reaches the caller (A6).
Every try and skip is recorded in the RouteLog; quotas are not touched here (the pipeline
charges once per request).
"""

from __future__ import annotations

import asyncio
import random
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from services.clock import Clock
from services.config.schema import Config
from services.core import errors as E
from services.core.errors import UpstreamFailure
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Target
from services.limits.base import Limiter, Rule
from services.providers.base import Call
from services.providers.upstreams import Upstreams
from services.routing.breaker import Breaker
from services.routing.candidates import CandidateIndex
from services.routing.cooldown import Cooldowns
from services.routing.latency import LatencyTracker
from services.routing.strategies import make_strategy, canonical_name
from services.routing.strategies.base import CandidateView, Strategy

AUTH_DISABLE_S = 3600.0


@dataclass(slots=True)
class AttemptRecord:
    provider: str
    key_id: str
    model: str
    outcome: str  # ok | server | timeout | connect | rate_limited | auth | protocol | breaker_open | cooldown | key_rate_limited | cancelled ...
    status: int = 0
    latency_ms: float = 0.0


@dataclass(slots=True)
class RouteLog:
    """What happened to one request on its way through the router."""

    strategy: str = ""
    attempts: list[AttemptRecord] = field(default_factory=list)
    target: Target | None = None  # who answered (or was tried last)
    upstream_model: str = ""

    @property
    def tries(self) -> int:
        return sum(1 for a in self.attempts if a.outcome not in ("breaker_open", "cooldown", "key_rate_limited"))

    def header(self) -> str:
        """`provider/key_id=outcome` per try or skip: the X-Tollgate-Route header (ids only, never keys)."""
        return ", ".join(f"{a.provider}/{a.key_id}={a.outcome}" + (f"({a.status})" if a.status else "") for a in self.attempts)


@dataclass(slots=True)
class RouterStats:
    requests: int = 0
    failovers: int = 0
    unroutable: int = 0
    per_key_requests: dict[str, int] = field(default_factory=dict)
    per_key_failures: dict[str, int] = field(default_factory=dict)


class Router:
    def __init__(
        self,
        cfg: Config,
        index: CandidateIndex,
        upstreams: Upstreams,
        limiter: Limiter,
        clock: Clock,
        rng: random.Random,
        on_attempt: Callable[[AttemptRecord], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.index = index
        self.upstreams = upstreams
        self.limiter = limiter
        self.clock = clock
        self.rng = rng
        self.breaker = Breaker(clock, failure_threshold=cfg.breaker_threshold, base_cooldown_s=cfg.breaker_cooldown_s)
        self.cooldowns = Cooldowns(clock)
        self.latency = LatencyTracker()
        self.stats = RouterStats()
        self._strategies: dict[str, Strategy] = {}
        self.default_strategy = canonical_name(cfg.strategy)
        self._secrets: dict[str, str] = {}
        self._key_rules: dict[str, tuple[Rule, ...]] = {}
        for p in cfg.providers:
            for k in p.keys:
                self._secrets[k.id] = k.secret
                rules = []
                if p.rpm:
                    rules.append(Rule("key_rpm", p.rpm, window_s=p.rate_window_s))
                if p.daily_quota:
                    rules.append(Rule("key_daily", p.daily_quota, period="day", tz=cfg.quota_timezone))
                if rules:
                    self._key_rules[k.id] = tuple(rules)
        self._on_attempt = on_attempt
        self.same_route_retries = 1
        self.retry_jitter_s = (0.1, 1.0)

    def key_rules(self, key_id: str) -> tuple[Rule, ...]:
        return self._key_rules.get(key_id, ())

    def strategy(self, name: str) -> Strategy:
        name = canonical_name(name) if name else self.default_strategy
        s = self._strategies.get(name)
        if s is None:
            s = self._strategies[name] = make_strategy(name)
        return s

    def plan(self, model: str, provider_hint: str, strategy_name: str) -> tuple[str, list[CandidateView]]:
        try:
            strategy = self.strategy(strategy_name)
        except ValueError as e:
            raise E.InvalidArgument(str(e), reason="UNKNOWN_STRATEGY", metadata={"strategy": strategy_name}) from None
        views = self.index.resolve(model, provider_hint)
        if strategy.name in ("least-latency", "balanced"):
            for v in views:
                v.latency_ewma_ms = self.latency.get(v.target.key_id)
        return strategy.name, strategy.order(views, self.rng) if len(views) > 1 else views

    # ------------------------------------------------------------------ unary

    async def chat(self, req: ChatRequest, deadline: float, log: RouteLog) -> ChatResult:
        async def attempt(call: Call) -> ChatResult:
            return await self.upstreams.adapter(call.target.kind).chat(req, call)

        return await self._run(req.model, req.route.provider, req.route.strategy, deadline, log, attempt)

    async def embed(self, req: EmbedRequest, deadline: float, log: RouteLog) -> EmbedResult:
        async def attempt(call: Call) -> EmbedResult:
            return await self.upstreams.adapter(call.target.kind).embed(req, call)

        return await self._run(req.model, req.route.provider, req.route.strategy, deadline, log, attempt)

    async def _run(self, model, provider_hint, strategy_name, deadline, log, attempt):
        self.stats.requests += 1
        log.strategy, ordered = self.plan(model, provider_hint, strategy_name)
        failures: list[UpstreamFailure] = []
        async with aclosing(self._calls(ordered, deadline, log, failures)) as calls:
            async for call in calls:
                t0 = self.clock.monotonic()
                try:
                    result = await attempt(call)
                except UpstreamFailure as f:
                    if self._failed(call, f, t0, log, failures):
                        continue
                    raise self._caller_error(f) from None
                except asyncio.CancelledError:
                    self._record(log, call.target, "cancelled", 0, t0)
                    self.breaker.release_probe(call.target.key_id)
                    raise
                self._succeeded(call.target, t0, log)
                return result
        raise self._exhausted(log, failures, deadline)

    # ------------------------------------------------------------------ streams

    async def stream(self, req: ChatRequest, deadline: float, log: RouteLog) -> AsyncIterator[list[Chunk]]:
        """Yields batches; fails over until the first batch with content is handed out."""
        self.stats.requests += 1
        log.strategy, ordered = self.plan(req.model, req.route.provider, req.route.strategy)
        failures: list[UpstreamFailure] = []
        async with aclosing(self._calls(ordered, deadline, log, failures, stream=True)) as calls:
            async for call in calls:
                t0 = self.clock.monotonic()
                agen = self.upstreams.adapter(call.target.kind).stream_chat(req, call)
                held: list[Chunk] = []
                try:
                    try:
                        # Hold role-only batches back: until content arrives, failover is still silent.
                        async for batch in agen:
                            held.extend(batch)
                            if any(c.text or c.tool_calls or c.finish_reason or c.reasoning for c in batch):
                                break
                        else:
                            if not held:
                                raise UpstreamFailure("protocol", 200, "upstream stream ended before any content")
                    except UpstreamFailure as f:
                        if self._failed(call, f, t0, log, failures):
                            continue
                        raise self._caller_error(f) from None
                    log.target = call.target
                    self.latency.observe(call.target.key_id, (self.clock.monotonic() - t0) * 1000.0)
                    yield held
                    try:
                        async for batch in agen:
                            yield batch
                    except UpstreamFailure as f:
                        # RELIABILITY A6: after the first token there is no failover, only an in-band error.
                        self._record(log, call.target, f.kind, f.status, t0)
                        if f.counts_for_breaker:
                            self.breaker.record_failure(call.target.key_id)
                        raise E.Unavailable(f"upstream stream broke: {f.message}", reason="UPSTREAM_STREAM_BROKEN",
                                            metadata={"provider": call.target.provider}) from None
                    self._succeeded(call.target, t0, log, observe=False)
                    return
                except asyncio.CancelledError:
                    self._record(log, call.target, "cancelled", 0, t0)
                    self.breaker.release_probe(call.target.key_id)
                    raise
                except GeneratorExit:
                    # The consumer stopped reading (client gone): not the key's fault.
                    self._record(log, call.target, "cancelled", 0, t0)
                    self.breaker.release_probe(call.target.key_id)
                    raise
                finally:
                    await agen.aclose()
        raise self._exhausted(log, failures, deadline)

    # ------------------------------------------------------------------ shared

    async def _calls(self, ordered: list[CandidateView], deadline: float, log: RouteLog,
                     failures: list[UpstreamFailure], stream: bool = False) -> AsyncIterator[Call]:
        """Yields one Call per try: skips keys that are open, cooling down or over their limits,
        retries a route once when _failed() asks for it, stops at max_attempts or the deadline."""
        for view in ordered:
            t = view.target
            if log.tries >= self.cfg.max_attempts or self.clock.monotonic() >= deadline:
                return
            # Cool-down first: allow() hands out a half-open probe that must then be used or released.
            if not self.cooldowns.ready(t.key_id):
                self._record(log, t, "cooldown", 0, None)
                continue
            if not self.breaker.allow(t.key_id):
                self._record(log, t, "breaker_open", 0, None)
                continue
            rules = self._key_rules.get(t.key_id)
            if rules:
                d = await self.limiter.hit("pk:" + t.key_id, rules)
                if not d.allowed:
                    self.breaker.release_probe(t.key_id)
                    self._record(log, t, "key_rate_limited", 0, None)
                    failures.append(UpstreamFailure("rate_limited", 429, "provider key over its own limit", d.retry_after_s))
                    continue
            route_tries = 0
            while True:
                left = deadline - self.clock.monotonic()
                if left <= 0.0 or (route_tries and log.tries >= self.cfg.max_attempts):
                    if route_tries == 0:
                        self.breaker.release_probe(t.key_id)
                    return
                session = self.upstreams.session(t.base_url)
                if stream:
                    call = Call(t, self._secrets.get(t.key_id, ""), session, left,
                                first_token_timeout_s=min(t.timeout_s, self.cfg.first_token_timeout_s or t.timeout_s, left),
                                idle_timeout_s=self.cfg.idle_timeout_s or t.timeout_s)
                else:
                    call = Call(t, self._secrets.get(t.key_id, ""), session, min(t.timeout_s, left))
                n_fail = len(failures)
                yield call
                if len(failures) == n_fail:
                    return  # the try succeeded or ended the request
                f = failures[-1]
                if f.kind == "rate_limited" and f.retry_after_s is not None and route_tries == 0 \
                        and f.retry_after_s <= self.cfg.retry_after_wait_max_s \
                        and self.clock.monotonic() + f.retry_after_s < deadline:
                    await self.clock.sleep(f.retry_after_s)
                    route_tries += 1
                    continue
                if f.kind == "rate_limited":
                    self.cooldowns.set(t.key_id, f.retry_after_s if f.retry_after_s is not None else 1.0)
                elif f.kind == "auth":
                    self.cooldowns.set(t.key_id, AUTH_DISABLE_S)
                elif f.kind in ("server", "connect", "protocol") and route_tries < self.same_route_retries \
                        and self.breaker.state(t.key_id) == "closed":
                    pause = self.rng.uniform(*self.retry_jitter_s)
                    if self.clock.monotonic() + pause < deadline:
                        await self.clock.sleep(pause)
                        route_tries += 1
                        continue
                self.stats.failovers += 1
                break

    def _failed(self, call: Call, f: UpstreamFailure, t0: float, log: RouteLog, failures: list[UpstreamFailure]) -> bool:
        """Records a failed try; True when the router may go on (retry or next candidate)."""
        key = call.target.key_id
        self._record(log, call.target, f.kind, f.status, t0)
        self.stats.per_key_failures[key] = self.stats.per_key_failures.get(key, 0) + 1
        if f.counts_for_breaker:
            self.breaker.record_failure(key)
        else:
            self.breaker.release_probe(key)
        if f.retryable or f.kind == "not_found":
            failures.append(f)
            return True
        return False

    def _succeeded(self, target: Target, t0: float, log: RouteLog, observe: bool = True) -> None:
        self.breaker.record_success(target.key_id)
        ms = (self.clock.monotonic() - t0) * 1000.0
        if observe:
            self.latency.observe(target.key_id, ms)
        log.target = target
        self.stats.per_key_requests[target.key_id] = self.stats.per_key_requests.get(target.key_id, 0) + 1
        log.attempts.append(AttemptRecord(target.provider, target.key_id, target.model, "ok", 200, ms))

    def _record(self, log: RouteLog, t: Target, outcome: str, status: int, t0: float | None) -> None:
        ms = (self.clock.monotonic() - t0) * 1000.0 if t0 is not None else 0.0
        rec = AttemptRecord(t.provider, t.key_id, t.model, outcome, status, ms)
        log.attempts.append(rec)
        if t0 is not None:  # a real try, not a skip: the ledger names who was tried last
            log.target = t
        if self._on_attempt:
            self._on_attempt(rec)

    def _caller_error(self, f: UpstreamFailure) -> E.TollgateError:
        meta = {"upstream_status": str(f.status)} if f.status else {}
        if f.kind == "context_length":
            return E.InvalidArgument(f.message, reason="CONTEXT_LENGTH_EXCEEDED", metadata=meta)
        if f.kind == "content_filter":
            return E.InvalidArgument(f.message, reason="CONTENT_FILTERED", metadata=meta)
        if f.status == 413:
            return E.PayloadTooLarge(f.message or "request too large for the upstream", metadata=meta)
        return E.UpstreamBadRequest(f.message or "the upstream rejected the request", metadata=meta)

    def _exhausted(self, log: RouteLog, failures: list[UpstreamFailure], deadline: float) -> E.TollgateError:
        self.stats.unroutable += 1
        if self.clock.monotonic() >= deadline - 0.001 or (failures and failures[-1].kind == "timeout" and self.clock.monotonic() >= deadline - 0.05):
            return E.DeadlineExceeded("the request's deadline passed before an upstream answered", reason="DEADLINE_EXCEEDED")
        if failures and all(f.kind == "rate_limited" for f in failures):
            waits = [f.retry_after_s for f in failures if f.retry_after_s is not None]
            wait = min(waits) if waits else 1.0
            return E.ResourceExhausted("every upstream is rate limited", reason="UPSTREAM_RATE_LIMITED", retry_after_s=wait)
        if failures and all(f.kind == "not_found" for f in failures):
            return E.NotFound(failures[-1].message or "model not found upstream", reason="MODEL_NOT_FOUND")
        if failures and all(f.kind == "auth" for f in failures):
            return E.UpstreamRejected("provider rejected the gateway's key", reason="PROVIDER_AUTH_FAILED")
        if not failures:
            waits = [self.breaker.open_until(a.key_id) for a in log.attempts if a.outcome == "breaker_open"]
            waits = [w - self.clock.monotonic() for w in waits if w]
            cool = [self.cooldowns.remaining(a.key_id) for a in log.attempts if a.outcome == "cooldown"]
            retry = min([w for w in waits + cool if w > 0] or [1.0])
            return E.Unavailable("no upstream can take the request now (all circuits open or cooling down)",
                                 reason="NO_AVAILABLE_UPSTREAM", retry_after_s=max(1.0, retry))
        last = failures[-1]
        return E.Unavailable(f"all upstreams failed; last: {last.message}", reason="UPSTREAM_UNAVAILABLE",
                             metadata={"last_failure": last.kind}, retry_after_s=1.0)
