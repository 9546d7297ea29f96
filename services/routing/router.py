"""The router: orders a request's candidates and tries them under one deadline.

Per try it checks the key's Retry-After cool-down, its concurrency cap, the retry budget, its
breaker and its own limits (rpm, daily quota), calls the adapter with a timeout no longer than
the time left, and decides from the UpstreamFailure what happens next (RELIABILITY A1-A8):
- caller errors (400, content policy, context length) end the request at once, no breaker;
- 429 with Retry-After ≤ retry_after_wait_max_s waits and retries the same key once,
  a longer one cools the key down and moves on;
- 401/403 from the provider disables the key for an hour and moves on (hidden from the caller);
- 5xx, connect errors, resets and protocol errors count for the breaker, get one same-route
  retry with jitter (none after a timeout), then the next candidate;
- every try after a request's first is a retry, and retries in flight stay within 20% of the
  requests in flight (floor 3), so an outage does not multiply the load (A7): N concurrent
  requests against a dead primary and fallback cost ≤ 1.2 × N + 3 calls, not N × max_attempts;
- a stream fails over only until its first content reaches the caller (A6).
Every try and skip is recorded in the RouteLog; quotas are not touched here (the pipeline
charges once per request).
"""

from __future__ import annotations

import asyncio
import random
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from services.clock import Clock
from services.config.schema import Config
from services.core import errors as E
from services.core.errors import UpstreamFailure
from services.core.scrub import Scrubber
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Target
from services.limits.base import Limiter, Rule
from services.providers.base import Call
from services.providers.transport import PROVIDER_AUTH_MESSAGE
from services.providers.upstreams import Upstreams
from services.routing.breaker import HALF_OPEN, Breaker
from services.routing.candidates import CandidateIndex
from services.routing.cooldown import Cooldowns
from services.routing.latency import LatencyTracker
from services.routing.strategies import make_strategy, canonical_name
from services.routing.strategies.base import CandidateView, Strategy
from services.routing.user_keys import UserKeys

AUTH_DISABLE_S = 3600.0
KEY_BUSY_RETRY_S = 1.0  # what a caller turned away by a per-key concurrency cap is told to wait (A8)
RETRY_BUDGET_RATIO = 0.2  # RELIABILITY defaults: retries in flight ≤ 20% of requests in flight ...
RETRY_BUDGET_MIN = 3  # ... but at least 3, so a quiet gateway still retries (Envoy's retry_budget)

# Outcomes that are skips, not tries: they cost the upstream nothing and do not count as attempts.
SKIPS = frozenset({"breaker_open", "cooldown", "key_rate_limited", "key_busy", "retry_budget", "key_unavailable"})


@dataclass(slots=True)
class AttemptRecord:
    provider: str
    key_id: str
    model: str
    outcome: str  # ok | server | timeout | connect | rate_limited | auth | protocol | cancelled | error | a SKIPS entry ...
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
        n = 0  # a loop, not sum() over a generator: read several times per request
        for a in self.attempts:
            if a.outcome not in SKIPS:
                n += 1
        return n

    def header(self) -> str:
        """`provider/key_id=outcome` per try or skip: the X-Tollgate-Route header (ids only, never keys)."""
        # A list: join() would build one from a generator first.
        return ", ".join([f"{a.provider}/{a.key_id}={a.outcome}({a.status})" if a.status
                          else f"{a.provider}/{a.key_id}={a.outcome}" for a in self.attempts])


@dataclass(slots=True)
class RouterStats:
    requests: int = 0
    failovers: int = 0
    unroutable: int = 0
    per_key_requests: dict[str, int] = field(default_factory=dict)
    per_key_failures: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Tries:
    """One request's walk through its candidates, shared by _calls() and the code making the calls."""

    failures: list[UpstreamFailure] = field(default_factory=list)  # failed tries, and skips that explain a refusal
    probe: bool = False  # the current try holds its key's half-open probe: it must be reported or released
    retrying: bool = False  # the retry budget counts this request until it ends (A7)


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
        user_keys: UserKeys | None = None,
        scrubber: Scrubber | None = None,
    ) -> None:
        self.cfg = cfg
        # Issue 15 point 3: upstream text enters here (each failure's message); secrets leave it.
        self.scrubber = scrubber if scrubber is not None else Scrubber()
        self.user_keys = user_keys  # issue 7: users' own provider keys, tried before the gateway's
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
        # RELIABILITY A8: at most this many tries in flight per provider key (absent or 0 = no cap).
        # Read from ProviderConfig.max_in_flight where the schema has it; settable at run time.
        self.key_caps: dict[str, int] = {}
        for p in cfg.providers:
            cap = int(getattr(p, "max_in_flight", 0) or 0)
            for k in p.keys:
                self._secrets[k.id] = k.secret
                if cap > 0:
                    self.key_caps[k.id] = cap
                rules = []
                if p.rpm:
                    rules.append(Rule("key_rpm", p.rpm, window_s=p.rate_window_s))
                if p.daily_quota:
                    rules.append(Rule("key_daily", p.daily_quota, period="day", tz=cfg.quota_timezone))
                if rules:
                    self._key_rules[k.id] = tuple(rules)
        self._on_attempt = on_attempt
        self.same_route_retries = 1  # per route, then the next candidate (RELIABILITY defaults)
        self.retry_jitter_s = (0.1, 1.0)
        self.retry_budget_ratio = RETRY_BUDGET_RATIO
        self.retry_budget_min = RETRY_BUDGET_MIN
        self._requests_in_flight = 0
        self._retries_in_flight = 0  # requests in flight that have retried (the retry budget's count)
        self._in_flight: dict[str, int] = {}  # per key: routes in use, for key_caps; 0s are dropped
        self._cooldown_kind: dict[str, str] = {}  # per key: what its last cool-down was for (auth | rate_limited)

    def secret(self, key_id: str) -> str:
        """A configured key's secret (never logged, never put in an error); "" for a keyless provider."""
        return self._secrets.get(key_id, "")

    def key_rules(self, key_id: str) -> tuple[Rule, ...]:
        return self._key_rules.get(key_id, ())

    def strategy(self, name: str) -> Strategy:
        name = canonical_name(name) if name else self.default_strategy
        s = self._strategies.get(name)
        if s is None:
            s = self._strategies[name] = make_strategy(name)
        return s

    def plan(self, model: str, provider_hint: str, strategy_name: str,
             own: list[CandidateView] = ()) -> tuple[str, list[CandidateView]]:
        """`own`: the caller's own provider keys (UserKeys), placed before the gateway's (seed 001)."""
        try:
            strategy = self.strategy(strategy_name)
        except ValueError as e:
            raise E.InvalidArgument(str(e), reason="UNKNOWN_STRATEGY", metadata={"strategy": strategy_name}) from None
        try:
            views = self.index.resolve(model, provider_hint)
        except (E.NotFound, E.InvalidArgument):
            if not own:
                raise
            views = []  # a model (or provider) only the user's own keys serve
        if strategy.name in ("least-latency", "balanced"):
            for v in (*own, *views):
                v.latency_ewma_ms = self.latency.get(v.target.key_id)
        ordered = strategy.order(views, self.rng) if len(views) > 1 else views
        if own:
            ordered = (strategy.order(list(own), self.rng) if len(own) > 1 else list(own)) + ordered
        return strategy.name, ordered

    async def _own(self, user_id: str, model: str, provider_hint: str) -> list[CandidateView]:
        """The caller's own candidates; only ever that user's keys (RELIABILITY F5)."""
        if self.user_keys is None or not user_id:
            return []
        views = await self.user_keys.candidates(user_id, model)
        hint = "" if provider_hint in ("", "auto") else provider_hint
        return [v for v in views if not hint or hint in (v.target.kind, v.target.provider)]

    @property
    def in_flight(self) -> tuple[int, int]:
        """(requests, retries) in flight now: what the retry budget looks at."""
        return self._requests_in_flight, self._retries_in_flight

    # ------------------------------------------------------------------ unary

    async def chat(self, req: ChatRequest, deadline: float, log: RouteLog, user_id: str = "") -> ChatResult:
        # `attempt` hands _run the adapter's own coroutine to await: no coroutine of ours in between.
        def attempt(call: Call) -> Awaitable[ChatResult]:
            return self.upstreams.adapter(call.target.kind).chat(req, call)

        return await self._run(req.model, req.route.provider, req.route.strategy, deadline, log, attempt, user_id)

    async def embed(self, req: EmbedRequest, deadline: float, log: RouteLog, user_id: str = "") -> EmbedResult:
        def attempt(call: Call) -> Awaitable[EmbedResult]:
            return self.upstreams.adapter(call.target.kind).embed(req, call)

        return await self._run(req.model, req.route.provider, req.route.strategy, deadline, log, attempt, user_id)

    async def _run(self, model, provider_hint, strategy_name, deadline, log, attempt, user_id=""):
        self.stats.requests += 1
        # The caller's own keys: looked up (a coroutine, a cache) only for a caller who can have some.
        own = await self._own(user_id, model, provider_hint) if user_id and self.user_keys is not None else ()
        log.strategy, ordered = self.plan(model, provider_hint, strategy_name, own)
        tr = _Tries()
        self._requests_in_flight += 1
        calls = self._calls(ordered, deadline, log, tr)
        try:
            async for call in calls:
                t0 = self.clock.monotonic()
                try:
                    result = await attempt(call)
                except UpstreamFailure as f:
                    if self._failed(call, f, t0, log, tr):
                        continue
                    raise self._caller_error(f) from None
                except BaseException as e:
                    self._abandoned(call, e, t0, log, tr)
                    raise
                self._succeeded(call.target, t0, log, tr)
                return result
            raise self._exhausted(log, tr.failures, deadline)
        finally:
            try:
                await calls.aclose()  # what aclosing() does, without its context manager per request
            finally:
                self._end(tr)

    # ------------------------------------------------------------------ streams

    async def stream(self, req: ChatRequest, deadline: float, log: RouteLog,
                     user_id: str = "") -> AsyncIterator[list[Chunk]]:
        """Yields batches; fails over until the first batch with content is handed out."""
        self.stats.requests += 1
        # The caller's own keys: looked up (a coroutine, a cache) only for a caller who can have some.
        own = await self._own(user_id, req.model, req.route.provider) if user_id and self.user_keys is not None else ()
        log.strategy, ordered = self.plan(req.model, req.route.provider, req.route.strategy, own)
        tr = _Tries()
        self._requests_in_flight += 1
        try:
            async with aclosing(self._calls(ordered, deadline, log, tr, stream=True)) as calls:
                async for call in calls:
                    t0 = self.clock.monotonic()
                    agen = self.upstreams.adapter(call.target.kind).stream_chat(req, call)
                    try:
                        try:
                            held = await self._first_content(agen, call)
                        except UpstreamFailure as f:
                            if self._failed(call, f, t0, log, tr):
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
                            f.message = self.scrubber.scrub(f.message)
                            self.record(log, call.target, f.kind, f.status, t0)
                            self._verdict(tr, call.target.key_id, f)
                            if f.kind == "timeout" and self.clock.monotonic() >= deadline - 0.05:
                                # The caller's own deadline ended it: a 504, metered deadline_exceeded (B3).
                                raise E.DeadlineExceeded("the request's deadline passed mid-stream",
                                                         reason="DEADLINE_EXCEEDED") from None
                            raise E.Unavailable(f"upstream stream broke: {f.message}", reason="UPSTREAM_STREAM_BROKEN",
                                                metadata={"provider": call.target.provider}) from None
                        self._succeeded(call.target, t0, log, tr, observe=False)
                        return
                    except E.TollgateError:
                        raise  # already recorded, with its verdict on the key
                    except BaseException as e:
                        # Cancelled, the consumer stopped reading (GeneratorExit: client gone), or a bug.
                        self._abandoned(call, e, t0, log, tr)
                        raise
                    finally:
                        await agen.aclose()
            raise self._exhausted(log, tr.failures, deadline)
        finally:
            self._end(tr)

    async def _first_content(self, agen: AsyncIterator[list[Chunk]], call: Call) -> list[Chunk]:
        """Reads until the first batch with content; role-only batches are held back meanwhile,
        because until content arrives a failover is still silent (A6).

        The first-token timeout covers the wait for response headers too: the adapter's own
        per-read limit starts only once headers are in, so a silent upstream would otherwise
        hold the stream until the request's deadline (A5). Nothing is yielded to our consumer
        inside the timeout, so cancelling this task on expiry only interrupts the upstream read.
        """
        held: list[Chunk] = []
        try:
            async with asyncio.timeout(call.first_token_timeout_s or None):
                async for batch in agen:
                    held.extend(batch)
                    if any(c.text or c.tool_calls or c.finish_reason or c.reasoning for c in batch):
                        return held
        except TimeoutError:
            raise UpstreamFailure("timeout", 0, "upstream sent no first token in time") from None
        if not held:
            raise UpstreamFailure("protocol", 200, "upstream stream ended before any content")
        return held

    # ------------------------------------------------------------------ shared

    async def _calls(self, ordered: list[CandidateView], deadline: float, log: RouteLog, tr: _Tries,
                     stream: bool = False) -> AsyncIterator[Call]:
        """Yields one Call per try: skips keys that are cooling down, at their cap, open or over
        their limits; retries a route once when the failure allows it; stops at max_attempts,
        the deadline or an empty retry budget. The caller reports each try's outcome through
        _failed() / _succeeded() / _abandoned() before asking for the next one."""
        for view in ordered:
            t = view.target
            key = t.key_id
            if log.tries >= self.cfg.max_attempts or self.clock.monotonic() >= deadline:
                return
            if not self._available(t, log, tr):
                continue
            # The gateway's own keys are in memory: no coroutine for them.
            secret = self._secrets.get(key, "") if not t.owner else await self._secret(t)
            if secret is None:
                self.record(log, t, "key_unavailable", 0, None)
                continue
            # Any try after the request's first is a retry, failover included (Envoy counts both).
            if log.tries and not self._take_retry(tr, same_route=False):
                self.record(log, t, "retry_budget", 0, None)
                return
            if not self._claim(t, log, tr) or (self._limited(t) and not await self._within_key_limits(t, log, tr)):
                continue
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            try:
                route_tries = 0
                while True:
                    left = deadline - self.clock.monotonic()
                    if left <= 0.0:
                        self._release_probe(tr, key)
                        return
                    n_fail = len(tr.failures)
                    yield self._call(t, secret, left, stream)
                    if len(tr.failures) == n_fail:
                        return  # the try succeeded or ended the request
                    f = tr.failures[-1]
                    if log.tries >= self.cfg.max_attempts:
                        return
                    pause = self._same_route_pause(key, f, route_tries, deadline)
                    if pause is not None and not self._take_retry(tr, same_route=True):
                        pause = None  # the budget has room for a failover at most (A7)
                    if pause is None:
                        self.cool_down(key, f)
                        self.stats.failovers += 1
                        break
                    await self.clock.sleep(pause)
                    route_tries += 1
                    # Other requests may have opened this key meanwhile: a retry asks the
                    # breaker again, so an open key gets no more traffic (A1, A7).
                    if not self._claim(t, log, tr) or (self._limited(t) and not await self._within_key_limits(t, log, tr)):
                        break
            finally:
                n = self._in_flight[key] - 1
                if n:
                    self._in_flight[key] = n
                else:
                    del self._in_flight[key]

    def _available(self, t: Target, log: RouteLog, tr: _Tries) -> bool:
        """The checks that claim nothing: a Retry-After or auth cool-down, the per-key cap."""
        key = t.key_id
        left = self.cooldowns.remaining(key)
        if left > 0.0:
            self.record(log, t, "cooldown", 0, None)
            # The skip explains the answer if nothing else is left: 502 for a disabled key (A4),
            # 429 with the time left for a rate-limited one (A3).
            if self._cooldown_kind.get(key) == "auth":
                tr.failures.append(UpstreamFailure("auth", 401, PROVIDER_AUTH_MESSAGE))
            else:
                tr.failures.append(UpstreamFailure("rate_limited", 429, "provider key is cooling down after a 429", left))
            return False
        cap = self.key_caps.get(key, 0)
        if cap and self._in_flight.get(key, 0) >= cap:
            # RELIABILITY A8: our own 429, not the key's fault: the breaker is not told.
            self.record(log, t, "key_busy", 0, None)
            tr.failures.append(UpstreamFailure("rate_limited", 429, "provider key is at its concurrency cap", KEY_BUSY_RETRY_S))
            return False
        return True

    def _claim(self, t: Target, log: RouteLog, tr: _Tries) -> bool:
        """Asks the breaker; in half-open, a True hands this request the one probe (A1)."""
        key = t.key_id
        half_open = self.breaker.state(key) == HALF_OPEN
        if not self.breaker.allow(key):
            self.record(log, t, "breaker_open", 0, None)
            return False
        tr.probe = half_open
        return True

    def _limited(self, t: Target) -> bool:
        """Whether the key may have limits of its own; most have none, and then no coroutine is made."""
        return t.key_id in self._key_rules or (bool(t.owner) and self.user_keys is not None)

    async def _within_key_limits(self, t: Target, log: RouteLog, tr: _Tries) -> bool:
        """The key's own rpm and daily quota (C6), counted once per upstream call."""
        rules = self._key_rules.get(t.key_id)
        if not rules and t.owner and self.user_keys is not None:
            rules = self.user_keys.rules(t.key_id)
        if not rules:
            return True
        try:
            d = await self.limiter.hit("pk:" + t.key_id, rules)
        except BaseException:
            self._release_probe(tr, t.key_id)  # a limiter that fails (closed mode) must not strand the probe
            raise
        if d.allowed:
            return True
        self._release_probe(tr, t.key_id)
        self.record(log, t, "key_rate_limited", 0, None)
        tr.failures.append(UpstreamFailure("rate_limited", 429, "provider key over its own limit", d.retry_after_s))
        return False

    async def _secret(self, t: Target) -> str | None:
        """The key to send: config keys from memory, a user's own key through UserKeys, opened
        only for its owner. None (skip the key, say nothing why) when it is gone or unreadable."""
        if not t.owner:
            return self._secrets.get(t.key_id, "")
        if self.user_keys is None:
            return None
        try:
            return await self.user_keys.secret(t.key_id, owner=t.owner)
        except E.TollgateError:  # deleted meanwhile (NotFound) or unreadable (SealError)
            return None

    def _call(self, t: Target, secret: str, left: float, stream: bool) -> Call:
        # A user's key goes out only through the SSRF-guarded connector (RELIABILITY F8).
        session = self.upstreams.session(t.base_url, guarded=bool(t.owner))
        if stream:
            # The stream may run until the deadline; its first token must come within the per-try
            # (or first-token) timeout, and silence between reads is bounded by idle_timeout_s.
            return Call(t, secret, session, left,
                        first_token_timeout_s=min(t.timeout_s, self.cfg.first_token_timeout_s or t.timeout_s, left),
                        idle_timeout_s=self.cfg.idle_timeout_s or t.timeout_s)
        return Call(t, secret, session, min(t.timeout_s, left))

    def _same_route_pause(self, key: str, f: UpstreamFailure, route_tries: int, deadline: float) -> float | None:
        """How long to wait before trying the same key again, or None to move on."""
        now = self.clock.monotonic()
        if f.kind == "rate_limited":
            # RELIABILITY A3: a short Retry-After is waited out once; a long one or none moves on.
            ra = f.retry_after_s
            if ra is not None and route_tries == 0 and ra <= self.cfg.retry_after_wait_max_s and now + ra < deadline:
                return ra
            return None
        # One same-route retry (per route), on a closed key, never after a timeout: the key
        # already had its full try.
        if f.kind in ("server", "connect", "protocol") and route_tries < self.same_route_retries \
                and self.breaker.state(key) == "closed":
            pause = self.rng.uniform(*self.retry_jitter_s)
            if now + pause < deadline:
                return pause
        return None

    def cool_down(self, key: str, f: UpstreamFailure) -> None:
        """Benches a key after a 429 (for its Retry-After) or a refused key (an hour); other failures do not."""
        if f.kind == "rate_limited":
            self.cooldowns.set(key, f.retry_after_s if f.retry_after_s is not None else 1.0)
            self._cooldown_kind[key] = "rate_limited"
        elif f.kind == "auth":
            # RELIABILITY A4: the provider refused our key; bench it instead of hammering it.
            self.cooldowns.set(key, AUTH_DISABLE_S)
            self._cooldown_kind[key] = "auth"

    def _take_retry(self, tr: _Tries, same_route: bool) -> bool:
        """RELIABILITY A7: retries in flight ≤ 20% of requests in flight, floor 3 (Envoy's
        retry_budget: budget_percent, min_retry_concurrency), counted per request: a request
        counts once, from its first retry until it ends.

        Counting only each retry's own upstream call would let every wave of failover (the next
        candidate, then the next) reuse the slots the previous wave freed. Within the 20% share
        any retry goes; the floor (what keeps a quiet gateway failing over) buys only a move to
        another candidate, never a second call to the key that just failed. In an outage the
        share's wave is 0.2 × N and the floor's tail a few calls per dead candidate past the
        second (measured through the bridge, N = 100: 120 calls with 2 dead candidates, 124 with 3,
        127 with 4).
        """
        others = self._retries_in_flight - tr.retrying
        if others >= self.retry_budget_ratio * self._requests_in_flight and (same_route or others >= self.retry_budget_min):
            return False
        if not tr.retrying:
            tr.retrying = True
            self._retries_in_flight += 1
        return True

    def _end(self, tr: _Tries) -> None:
        self._requests_in_flight -= 1
        if tr.retrying:
            self._retries_in_flight -= 1
            tr.retrying = False

    def _verdict(self, tr: _Tries, key: str, f: UpstreamFailure) -> None:
        """Tells the breaker about a failed try: a count (A1), or just the probe back (429, 4xx)."""
        if f.counts_for_breaker:
            self.breaker.record_failure(key)
        elif tr.probe:
            self.breaker.release_probe(key)
        tr.probe = False

    def _release_probe(self, tr: _Tries, key: str) -> None:
        if tr.probe:
            self.breaker.release_probe(key)
            tr.probe = False

    def _failed(self, call: Call, f: UpstreamFailure, t0: float, log: RouteLog, tr: _Tries) -> bool:
        """Records a failed try; True when the router may go on (retry or next candidate)."""
        key = call.target.key_id
        f.message = self.scrubber.scrub(f.message)
        self.record(log, call.target, f.kind, f.status, t0)
        self.stats.per_key_failures[key] = self.stats.per_key_failures.get(key, 0) + 1
        self._verdict(tr, key, f)
        if f.retryable or f.kind == "not_found":
            tr.failures.append(f)
            return True
        return False

    def _abandoned(self, call: Call, e: BaseException, t0: float, log: RouteLog, tr: _Tries) -> None:
        """A try that ended with no verdict on the key (caller cancelled, client gone, a bug of ours)."""
        outcome = "cancelled" if isinstance(e, (asyncio.CancelledError, GeneratorExit)) else "error"
        self.record(log, call.target, outcome, 0, t0)
        self._release_probe(tr, call.target.key_id)

    def _succeeded(self, target: Target, t0: float, log: RouteLog, tr: _Tries, observe: bool = True) -> None:
        self.breaker.record_success(target.key_id)
        tr.probe = False
        ms = (self.clock.monotonic() - t0) * 1000.0
        if observe:
            self.latency.observe(target.key_id, ms)
        log.target = target
        self.stats.per_key_requests[target.key_id] = self.stats.per_key_requests.get(target.key_id, 0) + 1
        rec = AttemptRecord(target.provider, target.key_id, target.model, "ok", 200, ms)
        log.attempts.append(rec)
        if self._on_attempt:
            self._on_attempt(rec)

    def record(self, log: RouteLog, t: Target, outcome: str, status: int, t0: float | None) -> None:
        """One try (t0 set) or skip in the route log, and in the metrics."""
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
        now = self.clock.monotonic()
        if now >= deadline - 0.001 or (failures and failures[-1].kind == "timeout" and now >= deadline - 0.05):
            return E.DeadlineExceeded("the request's deadline passed before an upstream answered", reason="DEADLINE_EXCEEDED")
        if failures and all(f.kind == "timeout" for f in failures):
            # RELIABILITY A5: silence everywhere is a gateway timeout (504), not an outage (503).
            return E.DeadlineExceeded("no upstream answered within its timeout", reason="UPSTREAM_TIMEOUT")
        if failures and all(f.kind == "rate_limited" for f in failures):
            # RELIABILITY A3: every candidate said 429: so do we, with the soonest time one frees up.
            waits = [f.retry_after_s for f in failures if f.retry_after_s is not None]
            wait = min(waits) if waits else 1.0
            return E.ResourceExhausted("every upstream is rate limited", reason="UPSTREAM_RATE_LIMITED", retry_after_s=wait)
        if failures and all(f.kind == "not_found" for f in failures):
            return E.NotFound(failures[-1].message or "model not found upstream", reason="MODEL_NOT_FOUND")
        if failures and all(f.kind == "auth" for f in failures):
            return E.UpstreamRejected(PROVIDER_AUTH_MESSAGE, reason="PROVIDER_AUTH_FAILED")
        if not failures:
            # RELIABILITY A7: every circuit open: no upstream call, and an honest Retry-After.
            waits = [self.breaker.open_until(a.key_id) for a in log.attempts if a.outcome == "breaker_open"]
            waits = [w - now for w in waits if w]
            retry = min([w for w in waits if w > 0] or [1.0])
            return E.Unavailable("no upstream can take the request now (all circuits open)",
                                 reason="NO_AVAILABLE_UPSTREAM", retry_after_s=max(1.0, retry))
        last = failures[-1]
        # An upstream that answered garbage is a bad gateway (502), one that did not answer is unavailable (503).
        reason = "UPSTREAM_PROTOCOL_ERROR" if last.kind == "protocol" else "UPSTREAM_UNAVAILABLE"
        return E.Unavailable(f"all upstreams failed; last: {last.message}", reason=reason,
                             metadata={"last_failure": last.kind}, retry_after_s=1.0)
