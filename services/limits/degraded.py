"""FailoverLimiter: Redis first; when it fails, per-gateway limits (mode "open") or 503 (mode "closed").

RELIABILITY C4. Every primary call is bounded by `timeout_s` (longer only while Redis is answering
other calls: a busy host, not a dead Redis), so a paused Redis costs a request at most that much
once; after a failure the limiter is "down" and requests go straight to the fallback, while at most
one probe per `probe_every_s` asks the primary whether it is back; the first answer switches back
at once. The probe runs on a fresh connection: the pool's connections from before the outage are
dropped first, or each would fail once under the next burst and send the gateway back to local
limits (issue 15 point 1: a 60/min key let 100 of 100 through after Redis came back). For the
same reason a connection error (not a timeout) while up is not taken as the backend failing
until the call failed again on a fresh connection: the idle connections are dropped and the call
is tried once more. A hit or reservation whose reply was lost may so count twice; that errs
towards refusing, where falling back would admit every gateway's local allowance.

- "open" (C4 "local", envoyproxy/ratelimit's default): decisions come from the in-process
  MemoryLimiter, so each gateway still enforces every limit on its own and keeps serving.
- "closed": hit/peek/reserve raise core.errors.Unavailable with retry_after_s, so callers answer
  503 + Retry-After, never 429 or 500.

settle/release never raise in either mode: they run in a request's `finally`, after the answer.
A reservation goes back to the backend that made it; if that is Redis and Redis is down, its
lease gives the hold back (RELIABILITY B7), and the actual usage is logged rather than lost silently.

`backend_up` feeds the `tollgate_limiter_backend_up` gauge and /health/ready ("limiter: degraded");
`on_state_change(up)` is called on every flip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, TimeoutError as RedisTimeoutError

from services.clock import Clock, SystemClock
from services.core.errors import Unavailable
from services.limits.base import Decision, Reservation, Rule
from services.limits.memory import MemoryLimiter
from services.limits.redis import Admitted, RedisLimiter

MODES = ("open", "closed")
T = TypeVar("T")

log = logging.getLogger(__name__)

# What "the backend failed" looks like: Redis errors (refused, reset, too busy, read-only replica),
# socket errors, and our own timeout. Anything else is a bug and propagates.
BACKEND_ERRORS = (RedisError, OSError, TimeoutError)
# Errors of a connection that broke (perhaps long before this call: a restarted Redis), worth one
# more try on a fresh connection before the backend counts as down. Never a timeout: a paused
# Redis must still cost a request one timeout_s, not two.
STALE_ERRORS = (RedisConnectionError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
# How many times timeout_s a call may wait while the backend keeps answering others (_bounded).
SLOW_FACTOR = 40
# How many looks of the event loop the first timeout_s is split into (_bounded).
SLICES = 5


class FailoverLimiter:
    """A Limiter over a RedisLimiter with a MemoryLimiter behind it (see the module docstring)."""

    def __init__(
        self,
        primary: RedisLimiter,
        local: MemoryLimiter,
        mode: str = "open",
        on_state_change: Callable[[bool], None] | None = None,
        *,
        clock: Clock | None = None,
        timeout_s: float = 0.25,
        probe_every_s: float = 1.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"limiter fail mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self._primary = primary
        self._local = local
        self._on_state_change = on_state_change
        self._clock = clock or SystemClock()
        self._timeout_s = timeout_s
        self._probe_every_s = probe_every_s
        self._up = True
        self._last_probe = float("-inf")
        self._answered_at = float("-inf")  # when the backend last answered a call (see _bounded)
        self._step = timeout_s / SLICES
        self._watched: set[_Watch] = set()  # primary calls in flight (_bounded, _tick)
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def max_inflight(self) -> int:
        return self._primary.max_inflight

    @property
    def backend_up(self) -> bool:
        """Whether decisions come from the shared backend (the tollgate_limiter_backend_up gauge)."""
        return self._up

    # -- the Limiter protocol -------------------------------------------------------------------

    async def hit(self, subject: str, rules: tuple[Rule, ...]) -> Decision:
        return await self._run(lambda: self._primary.hit(subject, rules), lambda: self._local.hit(subject, rules))

    async def peek(self, subject: str, rules: tuple[Rule, ...]) -> Decision:
        return await self._run(lambda: self._primary.peek(subject, rules), lambda: self._local.peek(subject, rules))

    async def reserve(self, subject: str, rules: tuple[Rule, ...], amount: int) -> tuple[Decision, Reservation | None]:
        return await self._run(
            lambda: self._primary.reserve(subject, rules, amount),
            lambda: self._local.reserve(subject, rules, amount),
        )

    async def admit(self, subject: str, rules: tuple[Rule, ...], token_rules: tuple[Rule, ...],
                    amount: int) -> tuple[Decision | None, Decision | None, Reservation | None]:
        """hit() then reserve() in one backend call (RedisLimiter.admit: one round trip)."""
        return await self._run(
            lambda: self._primary.admit(subject, rules, token_rules, amount),
            lambda: self._local.admit(subject, rules, token_rules, amount),
        )

    async def admit_with_budget(self, subject: str, rules: tuple[Rule, ...], token_rules: tuple[Rule, ...], amount: int,
                                bsubject: str, brules: tuple[Rule, ...], bamount: int) -> Admitted:
        """admit() and a $ budget's reservation in one backend call (RedisLimiter.admit_with_budget)."""
        return await self._run(
            lambda: self._primary.admit_with_budget(subject, rules, token_rules, amount, bsubject, brules, bamount),
            lambda: self._local.admit_with_budget(subject, rules, token_rules, amount, bsubject, brules, bamount),
        )

    async def settle(self, reservation: Reservation, actual: int) -> None:
        if self._local.owns(reservation):
            await self._local.settle(reservation, actual)
            return
        await self._finish(lambda: self._primary.settle(reservation, actual), reservation, actual)

    async def release(self, reservation: Reservation) -> None:
        if self._local.owns(reservation):
            await self._local.release(reservation)
            return
        await self._finish(lambda: self._primary.release(reservation), reservation, 0)

    async def healthy(self) -> bool:
        """Whether this limiter can decide requests now: always in "open" (degraded still serves),
        only with the backend up in "closed". It also refreshes `backend_up` (a bounded PING while
        up, the rate-limited probe while down), so a readiness check that calls it first reports
        a dead Redis even when no request has noticed yet."""
        if self._up:
            if not await self._primary.healthy():
                self._set_up(False, TimeoutError("health check"))
        else:
            await self._maybe_recover()
        return self._up or self.mode == "open"

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        await self._primary.close()
        await self._local.close()

    # -- extras ---------------------------------------------------------------------------------

    async def reap(self) -> int:
        """Reclaims abandoned reservations on both backends; a down Redis is skipped, not raised."""
        n = await self._local.reap()
        if self._up:
            try:
                n += await asyncio.wait_for(self._primary.reap(), self._timeout_s * 4)
            except BACKEND_ERRORS:
                pass
        return n

    async def snapshot(self) -> dict[str, Any]:
        """The backend's state and the local fallback's counts (what it would enforce if Redis went)."""
        local = await self._local.snapshot()
        return {"backend": "redis", "backend_up": self._up, "mode": self.mode, "local": local}

    # -- internals ------------------------------------------------------------------------------

    async def _bounded(self, call: Awaitable[T]) -> T:
        """`call` within `timeout_s` of silence, unless the backend is busy rather than gone.

        The first `timeout_s` is waited out in SLICES slices, and a slice counts as silence only
        if the event loop woke for it on time: one that ends over half a slice late means the loop
        itself was stalled (a burst of requests on a loaded host), and a reply may be sitting unread
        in the socket. A CI run that counted wall time failed a cold 200-request burst open on a
        live Redis. Past that, a backend that answered another call within the last `timeout_s` is
        alive (the wait is the pool's), and the call keeps its place; either way the wait ends at
        SLOW_FACTOR x timeout_s. Cancelling a live call would fail open and let the burst past the
        shared limit (a C1 run under CI load once admitted 77 of 60).

        The call runs in the caller's own task: no task and no asyncio.wait per call (issue 20:
        they cost more than the rest of the limiter's Python). One timer per limiter, ticking every
        slice while any call is in flight, does the watching (_tick); a call it gives up on is
        cancelled like asyncio.timeout does it, and the cancellation becomes TimeoutError here.
        """
        loop = self._loop = asyncio.get_running_loop()  # real time: an injected test clock may stand still
        task = asyncio.current_task()
        assert task is not None
        w = _Watch(task, loop.time(), task.cancelling())
        self._watched.add(w)
        if self._ticker is None:
            self._tick_due = w.started + self._step
            self._ticker = loop.call_at(self._tick_due, self._tick)
        try:
            result = await call  # a backend error is raised here
        except asyncio.CancelledError:
            if w.expired and task.uncancel() <= w.cancelling:
                raise TimeoutError from None  # our cancellation, nobody else's: the backend was silent
            raise
        finally:
            self._watched.discard(w)
        self._answered_at = loop.time()
        return result

    def _tick(self) -> None:
        """Every slice while calls are in flight: counts the slice as silence for each call if the
        loop woke on time, and gives up (cancels) the calls that were silent long enough."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        on_time = now - self._tick_due <= self._step / 2
        self._ticker = None
        if not self._watched:
            return
        timeout_s, step = self._timeout_s, self._step
        busy = now - self._answered_at < timeout_s  # the backend answered others lately: a wait, not a death
        for w in self._watched:
            if w.expired:
                continue
            if now - w.started >= timeout_s * SLOW_FACTOR:
                w.expire()
            elif w.silent < SLICES:
                # A slice counts only once the call has waited a whole one (not the tick it started in).
                if on_time and self._tick_due - w.started >= step:
                    w.silent += 1
                    if w.silent >= SLICES and not busy:
                        w.expire()
            elif not busy:
                w.expire()
        self._tick_due = now + step
        self._ticker = loop.call_at(self._tick_due, self._tick)

    async def _run(self, primary: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        if self._up or await self._maybe_recover():
            try:
                return await self._on_primary(primary)
            except BACKEND_ERRORS as exc:
                self._set_up(False, exc)
        if self.mode == "open":
            return await local()
        # RELIABILITY C4 "closed": a 503 with Retry-After, not a 429 (not the caller's fault) or 500.
        raise Unavailable(
            "rate limiter backend unavailable",
            reason="LIMITER_UNAVAILABLE",
            metadata={"backend": "redis"},
            retry_after_s=self._probe_every_s,
        )

    async def _finish(self, call: Callable[[], Awaitable[None]], reservation: Reservation, actual: int) -> None:
        if not self._up and not await self._maybe_recover():
            log.warning("limiter backend down: reservation %s (%d tokens) left to its lease", reservation.id, actual)
            return
        try:
            await self._on_primary(call)  # a settle runs at most once (its record), so a retry is safe
        except BACKEND_ERRORS as exc:
            self._set_up(False, exc)
            log.warning("limiter backend failed: reservation %s (%d tokens) left to its lease", reservation.id, actual)

    async def _on_primary(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call` on the backend, bounded; a connection error (maybe a socket from before a restart)
        gets one more try on a fresh connection, with the pool's idle ones dropped first."""
        try:
            return await self._bounded(call())
        except BACKEND_ERRORS as exc:
            if not (self._up and _stale(exc)):
                raise
        await self._primary.drop_connections(in_use=False)
        return await self._bounded(call())

    async def _maybe_recover(self) -> bool:
        now = self._clock.monotonic()
        if now - self._last_probe < self._probe_every_s:
            return False
        self._last_probe = now  # before the await: concurrent callers don't probe too
        try:
            # Nothing uses the primary while it is down, so every connection is from before the
            # outage: drop them all, and the probe (then each call) starts on a fresh one.
            await asyncio.wait_for(self._primary.drop_connections(in_use=True), self._timeout_s)
            ok = await asyncio.wait_for(self._primary.healthy(), self._timeout_s)
        except BACKEND_ERRORS:
            ok = False
        if ok:
            self._set_up(True)
        return ok

    def _set_up(self, up: bool, exc: BaseException | None = None) -> None:
        if up == self._up:
            return
        self._up = up
        if up:
            log.info("limiter backend is back: shared limits again")
        else:
            self._last_probe = self._clock.monotonic()
            log.warning("limiter backend down (%s): mode %s", type(exc).__name__ if exc else "?", self.mode)
        if self._on_state_change is not None:
            try:
                self._on_state_change(up)
            except Exception:  # a metrics hook must not break limiting
                log.exception("limiter on_state_change hook failed")


class _Watch:
    """One primary call in flight, as _tick sees it."""

    __slots__ = ("task", "started", "cancelling", "silent", "expired")

    def __init__(self, task: asyncio.Task, started: float, cancelling: int) -> None:
        self.task = task
        self.started = started
        self.cancelling = cancelling  # the task's pending cancellations before this call (asyncio.timeout's rule)
        self.silent = 0  # slices waited out on time with no answer
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


def _stale(exc: BaseException) -> bool:
    return isinstance(exc, STALE_ERRORS) and not isinstance(exc, (TimeoutError, RedisTimeoutError))
