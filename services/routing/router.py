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
charges once per request). The key checks and verdicts are key_gate.py's, the budget
retry_budget.py's, the final error verdicts.py's: this module holds the walk.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from services.clock import Clock
from services.config.schema import Config
from services.core import errors as E
from services.core import spans
from services.core.errors import UpstreamFailure
from services.core.scrub import Scrubber
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Target
from services.limits.base import Limiter, Rule
from services.providers.base import Call
from services.providers.upstreams import Upstreams
from services.routing.breaker import Breaker
from services.routing.candidates import CandidateIndex
from services.routing.cooldown import Cooldowns
from services.routing.key_gate import KeyGate
from services.routing.latency import LatencyTracker
from services.routing.retry_budget import RetryBudget
from services.routing.route_log import AttemptRecord, RouteLog, Tries
from services.routing.strategies import make_strategy, canonical_name
from services.routing.strategies.base import CandidateView, Strategy
from services.routing.user_keys import SHARED, UserKeys
from services.routing.verdicts import caller_error, exhausted


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
        user_keys: UserKeys | None = None,
        scrubber: Scrubber | None = None,
        gate: KeyGate | None = None,
        loaded: Any = None,
        tracing: Any = None,
    ) -> None:
        """`gate`: the key gate the pass-through and loaded models share (App builds it first);
        `loaded`: services/loading/registry.LoadedModels (issue 19), routed by name first."""
        self.cfg = cfg
        # Issue 15 point 3: upstream text enters here (each failure's message); secrets leave it.
        self.scrubber = scrubber if scrubber is not None else Scrubber()
        self.user_keys = user_keys  # issue 7: users' own provider keys, tried before the gateway's
        # Issue 16: whether an admin has added gateway-wide keys at run time (set by App from the
        # store, kept fresh by UserService): only then does every request look them up.
        self.shared_keys = False
        self.loaded = loaded
        self.index = index
        self.upstreams = upstreams
        self.limiter = limiter
        self.clock = clock
        self.rng = rng
        self.gate = gate if gate is not None else KeyGate(cfg, limiter, clock, user_keys)
        self.budget = RetryBudget()
        self.latency = LatencyTracker()
        self.stats = RouterStats()
        self._strategies: dict[str, Strategy] = {}
        self.default_strategy = canonical_name(cfg.strategy)
        self._on_attempt = on_attempt
        self.same_route_retries = 1  # per route, then the next candidate (RELIABILITY defaults)
        self.retry_jitter_s = (0.1, 1.0)
        self.tracing: Any = tracing  # tollgate.tracing.Tracing when traces are on: attempt spans; None: none

    # The gate's and the budget's state, as operators and tests read and set it.
    @property
    def breaker(self) -> Breaker:
        return self.gate.breaker

    @property
    def cooldowns(self) -> Cooldowns:
        return self.gate.cooldowns

    @property
    def key_caps(self) -> dict[str, int]:
        return self.gate.caps

    @property
    def _in_flight(self) -> dict[str, int]:
        return self.gate.in_flight

    @property
    def retry_budget_ratio(self) -> float:
        return self.budget.ratio

    @retry_budget_ratio.setter
    def retry_budget_ratio(self, value: float) -> None:
        self.budget.ratio = value

    @property
    def retry_budget_min(self) -> int:
        return self.budget.min

    @retry_budget_min.setter
    def retry_budget_min(self, value: int) -> None:
        self.budget.min = value

    def secret(self, key_id: str) -> str:
        """A configured key's secret (never logged, never put in an error); "" for a keyless provider."""
        return self.gate.secret(key_id)

    def set_secret(self, key_id: str, secret: str | None) -> None:
        """A key that appears at run time (a loaded model's, issue 19); None forgets it."""
        self.gate.set_secret(key_id, secret)

    def key_rules(self, key_id: str) -> tuple[Rule, ...]:
        return self.gate.key_rules(key_id)

    def strategy(self, name: str) -> Strategy:
        name = canonical_name(name) if name else self.default_strategy
        s = self._strategies.get(name)
        if s is None:
            s = self._strategies[name] = make_strategy(name)
            if hasattr(s, "latency"):
                s.latency = self.latency.get  # balanced reads the two keys it draws, not every candidate
            if hasattr(s, "tracker"):
                s.tracker = self.latency  # least-latency keeps its lists sorted from the tracker's changes
        return s

    def plan(self, model: str, provider_hint: str, strategy_name: str,
             own: list[CandidateView] = ()) -> tuple[str, list[CandidateView]]:
        """`own`: the caller's own provider keys (UserKeys), placed before the gateway's (seed 001)."""
        try:
            # The default strategy (nearly every request names none) without strategy()'s call.
            strategy = (None if strategy_name else self._strategies.get(self.default_strategy)) \
                or self.strategy(strategy_name)
        except ValueError as e:
            raise E.InvalidArgument(str(e), reason="UNKNOWN_STRATEGY", metadata={"strategy": strategy_name}) from None
        loaded = self.loaded.views(model, provider_hint) if self.loaded is not None and model else None
        try:
            # A loaded model's name routes to it first: a wildcard provider would take any name.
            views = loaded if loaded else self.index.resolve(model, provider_hint)
        except (E.NotFound, E.InvalidArgument):
            if not own:
                raise
            views = []  # a model (or provider) only the user's own keys serve
        ordered = strategy.order(views, self.rng) if len(views) > 1 else views
        if own:
            ordered = (strategy.order(list(own), self.rng) if len(own) > 1 else list(own)) + ordered
        return strategy.name, ordered

    async def _own(self, user_id: str, model: str, provider_hint: str) -> list[CandidateView]:
        """The caller's own candidates, then the admin's run-time gateway keys (issue 16); only ever
        that user's keys and the shared ones (RELIABILITY F5)."""
        if self.user_keys is None:
            return []
        views = await self.user_keys.candidates(user_id, model) if user_id else []
        if self.shared_keys:
            views += await self.user_keys.candidates(SHARED, model)
        hint = "" if provider_hint in ("", "auto") else provider_hint
        return [v for v in views if not hint or hint in (v.target.kind, v.target.provider)]

    @property
    def in_flight(self) -> tuple[int, int]:
        """(requests, retries) in flight now: what the retry budget looks at."""
        return self.budget.requests, self.budget.retries

    # ------------------------------------------------------------------ unary

    # chat() and embed() hand back _run's coroutine for the caller to await (no coroutine of their
    # own per request); `attempt` hands _run the adapter's own coroutine, no coroutine in between.
    def chat(self, req: ChatRequest, deadline: float, log: RouteLog, user_id: str = "") -> Awaitable[ChatResult]:
        # attempt=None: _run calls the adapter's chat(req, call) itself (no closure per request).
        return self._run(req.model, req.route.provider, req.route.strategy, deadline, log, None, user_id, req)

    def embed(self, req: EmbedRequest, deadline: float, log: RouteLog, user_id: str = "") -> Awaitable[EmbedResult]:
        def attempt(call: Call) -> Awaitable[EmbedResult]:
            return self.upstreams.adapter(call.target.kind).embed(req, call)

        return self._run(req.model, req.route.provider, req.route.strategy, deadline, log, attempt, user_id)

    async def _run(self, model, provider_hint, strategy_name, deadline, log, attempt, user_id="", req=None):
        """`attempt(call)`: one try's awaitable; None: the adapter's chat(req, call)."""
        self.stats.requests += 1
        # The caller's own keys: looked up (a coroutine, a cache) only for a caller who can have some.
        own = await self._own(user_id, model, provider_hint) if (user_id or self.shared_keys) and self.user_keys is not None else ()
        try:
            log.strategy, ordered = self.plan(model, provider_hint, strategy_name, own)
        except (E.NotFound, E.FailedPrecondition):
            if self.loaded is None or not await self.loaded.on_miss(model):
                raise
            log.strategy, ordered = self.plan(model, provider_hint, strategy_name, own)  # loaded elsewhere just now
        tr = Tries()
        self.budget.begin()
        calls = None
        try:
            # The first try without the walk's async generator (its creation and aclose() cost
            # more than the checks): the same checks, in the same order, as _calls() makes. A
            # skip, a failure that may go on, or anything unusual hands over to _calls(), which
            # picks the walk up where this left it.
            gate = self.gate
            view = ordered[0] if ordered else None
            t = view.target if view is not None else None
            if t is None or t.owner or log.attempts:
                # None, a user's key (a coroutine for its secret), or not the request's first try.
                calls = self._calls(ordered, deadline, log, tr)
            elif self.cfg.max_attempts <= 0 or self.clock.monotonic() >= deadline:
                raise self._exhausted(log, tr, deadline)
            else:
                key = t.key_id
                secret = gate.secret(key)
                skip = gate.unavailable(t, tr) or (
                    gate.closed(t, tr) or (gate.limited(t) and await gate.over_limits(t, tr)))
                if skip:
                    self.record(log, t, skip, 0, None)
                    calls = self._calls(ordered, deadline, log, tr, start=1)
                else:
                    gate.hold(key)
                    try:
                        left = deadline - self.clock.monotonic()
                        if left <= 0.0:
                            gate.release_probe(tr, key)
                            raise self._exhausted(log, tr, deadline)
                        call = self._call(t, secret, left, False, log)
                        t0 = self.clock.monotonic()
                        try:
                            result = await (self.upstreams.adapter(t.kind).chat(req, call) if attempt is None
                                            else attempt(call))
                        except UpstreamFailure as f:
                            if not self._failed(call, f, t0, log, tr):
                                raise caller_error(f) from None
                            calls = self._calls(ordered, deadline, log, tr, first=secret)  # it lets go of the key
                        except BaseException as e:
                            self._abandoned(call, e, t0, log, tr)
                            raise
                        else:
                            self._succeeded(t, t0, log, tr)
                            return result
                    finally:
                        if calls is None:
                            gate.let_go(key)
            async for call in calls:
                t0 = self.clock.monotonic()
                try:
                    result = await (self.upstreams.adapter(call.target.kind).chat(req, call) if attempt is None
                                    else attempt(call))
                except UpstreamFailure as f:
                    if self._failed(call, f, t0, log, tr):
                        continue
                    raise caller_error(f) from None
                except BaseException as e:
                    self._abandoned(call, e, t0, log, tr)
                    raise
                self._succeeded(call.target, t0, log, tr)
                return result
            raise self._exhausted(log, tr, deadline)
        finally:
            try:
                if calls is not None:
                    await calls.aclose()  # what aclosing() does, without its context manager per request
            finally:
                self.budget.end(tr)

    # ------------------------------------------------------------------ streams

    async def stream(self, req: ChatRequest, deadline: float, log: RouteLog,
                     user_id: str = "") -> AsyncIterator[list[Chunk]]:
        """Yields batches; fails over until the first batch with content is handed out."""
        self.stats.requests += 1
        # The caller's own keys: looked up (a coroutine, a cache) only for a caller who can have some.
        own = await self._own(user_id, req.model, req.route.provider) if (user_id or self.shared_keys) and self.user_keys is not None else ()
        try:
            log.strategy, ordered = self.plan(req.model, req.route.provider, req.route.strategy, own)
        except (E.NotFound, E.FailedPrecondition):
            if self.loaded is None or not await self.loaded.on_miss(req.model):
                raise
            log.strategy, ordered = self.plan(req.model, req.route.provider, req.route.strategy, own)
        tr = Tries()
        self.budget.begin()
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
                            raise caller_error(f) from None
                        log.target = call.target
                        self.latency.observe(call.target.key_id, (self.clock.monotonic() - t0) * 1000.0)
                        yield held
                        del held  # not kept for the rest of the stream (memory per open stream)
                        try:
                            async for batch in agen:
                                yield batch
                        except UpstreamFailure as f:
                            # RELIABILITY A6: after the first token there is no failover, only an in-band error.
                            f.message = self.scrubber.scrub(f.message)
                            self.record(log, call.target, f.kind, f.status, t0)
                            self.gate.verdict(tr, call.target.key_id, f)
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
            raise self._exhausted(log, tr, deadline)
        finally:
            self.budget.end(tr)

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

    async def _calls(self, ordered: list[CandidateView], deadline: float, log: RouteLog, tr: Tries,
                     stream: bool = False, start: int = 0, first: str | None = None) -> AsyncIterator[Call]:
        """Yields one Call per try: skips keys the gate turns away (cooling down, at their cap, open
        or over their limits); retries a route once when the failure allows it; stops at
        max_attempts, the deadline or an empty retry budget. The caller reports each try's outcome
        through _failed() / _succeeded() / _abandoned() before asking for the next one.

        Where _run()'s first try left the walk: `start` 1, the first candidate was skipped;
        `first`, its secret: the first candidate was tried (its key held) and failed."""
        gate, budget = self.gate, self.budget
        resume = first is not None
        for view in (ordered[start:] if start else ordered):
            t = view.target
            key = t.key_id
            if resume:
                secret = first  # _run() made this key's first try (the key held) and it failed
            else:
                if (log.tries if log.attempts else 0) >= self.cfg.max_attempts or self.clock.monotonic() >= deadline:
                    return
                skip = gate.unavailable(t, tr)
                if skip:
                    self.record(log, t, skip, 0, None)
                    continue
                # The gateway's own keys are in memory: no coroutine for them.
                secret = gate.secret(key) if not t.owner else await gate.owned_secret(t)
                if secret is None:
                    self.record(log, t, "key_unavailable", 0, None)
                    continue
                # Any try after the request's first is a retry, failover included (Envoy counts both).
                if log.attempts and log.tries and not budget.take(tr, same_route=False):
                    self.record(log, t, "retry_budget", 0, None)
                    return
                # Limits are asked (a coroutine) only of a key that has some.
                skip = gate.closed(t, tr) or (gate.limited(t) and await gate.over_limits(t, tr))
                if skip:
                    self.record(log, t, skip, 0, None)
                    continue
                gate.hold(key)
            try:
                route_tries = 0
                while True:
                    if resume:
                        resume = False  # that try's failure is the last in `tr`: decide as after a yield
                    else:
                        left = deadline - self.clock.monotonic()
                        if left <= 0.0:
                            gate.release_probe(tr, key)
                            return
                        n_fail = len(tr.failures)
                        yield self._call(t, secret, left, stream, log)
                        if len(tr.failures) == n_fail:
                            return  # the try succeeded or ended the request
                    f = tr.failures[-1]
                    if log.tries >= self.cfg.max_attempts:
                        return
                    pause = self._same_route_pause(key, f, route_tries, deadline)
                    if pause is not None and not budget.take(tr, same_route=True):
                        pause = None  # the budget has room for a failover at most (A7)
                    if pause is None:
                        gate.cool_down(key, f)
                        self.stats.failovers += 1
                        break
                    await self.clock.sleep(pause)
                    route_tries += 1
                    # Other requests may have opened this key meanwhile: a retry asks the
                    # breaker again, so an open key gets no more traffic (A1, A7).
                    skip = gate.closed(t, tr) or (gate.limited(t) and await gate.over_limits(t, tr))
                    if skip:
                        self.record(log, t, skip, 0, None)
                        break
            finally:
                gate.let_go(key)

    def _call(self, t: Target, secret: str, left: float, stream: bool, log: RouteLog | None = None) -> Call:
        # A user's key goes out only through the SSRF-guarded connector (RELIABILITY F8).
        session = self.upstreams.session(t.base_url, guarded=(bool(t.owner) and t.owner != SHARED) or t.guarded)
        if self.tracing is not None and log is not None:
            spans.start_attempt(self.tracing, t, log, stream)  # ended by record() / _succeeded()
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
        self.gate.cool_down(key, f)

    # ------------------------------------------------------------------ a try's outcome

    def _failed(self, call: Call, f: UpstreamFailure, t0: float, log: RouteLog, tr: Tries) -> bool:
        """Records a failed try; True when the router may go on (retry or next candidate)."""
        key = call.target.key_id
        f.message = self.scrubber.scrub(f.message)
        self.record(log, call.target, f.kind, f.status, t0)
        self.stats.per_key_failures[key] = self.stats.per_key_failures.get(key, 0) + 1
        self.gate.verdict(tr, key, f)
        if f.retryable or f.kind == "not_found":
            tr.failures.append(f)
            return True
        return False

    def _abandoned(self, call: Call, e: BaseException, t0: float, log: RouteLog, tr: Tries) -> None:
        """A try that ended with no verdict on the key (caller cancelled, client gone, a bug of ours)."""
        outcome = "cancelled" if isinstance(e, (asyncio.CancelledError, GeneratorExit)) else "error"
        self.record(log, call.target, outcome, 0, t0)
        self.gate.release_probe(tr, call.target.key_id)

    def _succeeded(self, target: Target, t0: float, log: RouteLog, tr: Tries, observe: bool = True) -> None:
        self.gate.succeeded(tr, target.key_id)
        ms = (self.clock.monotonic() - t0) * 1000.0
        if observe:
            self.latency.observe(target.key_id, ms)
        log.target = target
        self.stats.per_key_requests[target.key_id] = self.stats.per_key_requests.get(target.key_id, 0) + 1
        rec = AttemptRecord(target.provider, target.key_id, target.model, "ok", 200, ms)
        log.attempts.append(rec)
        if self._on_attempt:
            self._on_attempt(rec)
        if self.tracing is not None:
            spans.end_attempt(self.tracing, target, "ok", 200, t0, self.clock.monotonic())

    def record(self, log: RouteLog, t: Target, outcome: str, status: int, t0: float | None) -> None:
        """One try (t0 set) or skip in the route log, and in the metrics."""
        ms = (self.clock.monotonic() - t0) * 1000.0 if t0 is not None else 0.0
        rec = AttemptRecord(t.provider, t.key_id, t.model, outcome, status, ms)
        log.attempts.append(rec)
        if t0 is not None:  # a real try, not a skip: the ledger names who was tried last
            log.target = t
        if self._on_attempt:
            self._on_attempt(rec)
        if self.tracing is not None:
            spans.end_attempt(self.tracing, t, outcome, status, t0, self.clock.monotonic())

    def _exhausted(self, log: RouteLog, tr: Tries, deadline: float) -> E.TollgateError:
        self.stats.unroutable += 1
        return exhausted(log, tr.failures, deadline, self.clock.monotonic(), self.breaker)
