"""FailoverLimiter and make_limiter: Redis down, paused and back, in both modes (RELIABILITY C4)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import grpc
import pytest

from services.clock import FakeClock
from services.core.errors import Unavailable
from services.limits import make_limiter
from services.limits.base import Rule
from services.limits.degraded import FailoverLimiter
from services.limits.memory import MemoryLimiter
from services.limits.redis import RedisLimiter, connect
from tests.support.redis_server import TcpProxy, closed_port, redis_prefix, redis_url  # noqa: F401  (fixtures)

RPM = (Rule("rpm", 3, 60.0),)
TPD = (Rule("tpd", 1000, period="day"),)


class CountingRedisLimiter(RedisLimiter):
    """Counts health probes, to check they come at most once per probe interval."""

    probes = 0

    async def healthy(self) -> bool:
        self.probes += 1
        return await super().healthy()


def failover(url: str, mode: str, clock: FakeClock, prefix: str = "tg:") -> tuple[FailoverLimiter, list[bool]]:
    flips: list[bool] = []
    primary = CountingRedisLimiter(connect(url), prefix, clock=clock, owns_client=True)
    return FailoverLimiter(primary, MemoryLimiter(clock), mode, flips.append, clock=clock), flips


@pytest.fixture
def dead_redis() -> str:
    return f"redis://127.0.0.1:{closed_port()}/0"


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:  # noqa: F811
    """Redis behind a proxy the test can cut or pause, leaving the shared server alone."""
    proxy = TcpProxy(urlsplit(redis_url).port or 6379)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_open_mode_keeps_serving_with_local_limits_when_redis_is_unreachable(dead_redis: str) -> None:
    clock = FakeClock()
    limiter, flips = failover(dead_redis, "open", clock)
    try:
        decisions = [await limiter.hit("k", RPM) for _ in range(5)]
        assert [d.allowed for d in decisions] == [True, True, True, False, False]  # limits still hold
        assert limiter.backend_up is False and flips == [False]
        assert await limiter.healthy()  # degraded, still ready (200 "limiter: degraded")

        d, r = await limiter.reserve("u", TPD, 400)
        assert d.allowed and r is not None
        await limiter.settle(r, 100)
        assert (await limiter.peek("u", TPD)).used == 100
        snap = await limiter.snapshot()
        assert (snap["backend_up"], snap["mode"], snap["local"]["reservations"]) == (False, "open", 0)
    finally:
        await limiter.close()


async def test_closed_mode_answers_unavailable_with_retry_after_never_a_429(dead_redis: str) -> None:
    clock = FakeClock()
    limiter, flips = failover(dead_redis, "closed", clock)
    try:
        for call in (lambda: limiter.hit("k", RPM), lambda: limiter.peek("k", RPM), lambda: limiter.reserve("u", TPD, 1)):
            with pytest.raises(Unavailable) as caught:
                await call()
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
            assert caught.value.retry_after_s and caught.value.retry_after_s > 0
        assert flips == [False]
        assert not await limiter.healthy()  # ready 503
    finally:
        await limiter.close()


async def test_probes_at_most_once_a_second_while_down(dead_redis: str) -> None:
    clock = FakeClock()
    limiter, _ = failover(dead_redis, "open", clock)
    primary = limiter._primary  # type: ignore[attr-defined]
    try:
        for _ in range(20):
            await limiter.hit("k", RPM)
        assert primary.probes == 0
        clock.advance(1.0)
        for _ in range(20):
            await limiter.hit("k", RPM)
        assert primary.probes == 1
    finally:
        await limiter.close()


async def test_settle_and_release_never_raise_even_closed(proxy: TcpProxy, redis_prefix: str) -> None:  # noqa: F811
    clock = FakeClock(time.time())
    limiter, _ = failover(proxy.url, "closed", clock, redis_prefix)
    try:
        _, a = await limiter.reserve("u", TPD, 100)
        _, b = await limiter.reserve("u", TPD, 100)
        assert a is not None and b is not None
        await proxy.stop()
        await limiter.settle(a, 50)  # the answer is already out: left to the lease, logged
        await limiter.release(b)
        assert not limiter.backend_up
    finally:
        await limiter.close()


async def test_switches_to_local_when_cut_and_back_to_shared_as_soon_as_redis_answers(
    proxy: TcpProxy, redis_prefix: str  # noqa: F811
) -> None:
    clock = FakeClock(time.time())
    limiter, flips = failover(proxy.url, "open", clock, redis_prefix)
    rules = (Rule("rpm", 10, 60.0),)
    try:
        assert (await limiter.hit("k", rules)).used == 1  # shared
        await proxy.stop()
        assert (await limiter.hit("k", rules)).used == 1  # local: a fresh per-gateway count
        assert (await limiter.hit("k", rules)).used == 2
        assert flips == [False]

        await proxy.start()
        assert (await limiter.hit("k", rules)).used == 3  # still local: the next probe is 1 s away
        clock.advance(1.0)
        assert (await limiter.hit("k", rules)).used == 2  # probe answered: shared again at once
        assert flips == [False, True] and limiter.backend_up
    finally:
        await limiter.close()


async def test_a_paused_redis_costs_one_timeout_then_local(proxy: TcpProxy, redis_prefix: str) -> None:  # noqa: F811
    clock = FakeClock(time.time())
    limiter, flips = failover(proxy.url, "open", clock, redis_prefix)
    try:
        assert (await limiter.hit("k", RPM)).allowed
        proxy.paused = True
        started = time.monotonic()
        d = await limiter.hit("k", RPM)
        assert d.allowed and time.monotonic() - started < 1.5  # bounded by the 0.25 s timeout (+ a busy host)
        assert flips == [False]
        started = time.monotonic()
        await limiter.hit("k", RPM)
        assert time.monotonic() - started < 0.2  # down: no more waiting on Redis
        proxy.paused = False
        clock.advance(1.0)
        await limiter.hit("k", RPM)
        assert flips == [False, True]
    finally:
        await limiter.close()


async def test_a_stalled_event_loop_does_not_make_a_live_redis_look_down(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    """A cold burst on a loaded host: the loop is busy (here, 10 blocks of 0.1 s) while the first
    call is in flight, so four times timeout_s passes before its reply can be read. The backend
    said nothing wrong: the call must wait, not fail open (a CI run did once)."""
    clock = FakeClock(time.time())
    limiter, flips = failover(redis_url, "open", clock, redis_prefix)

    async def stall() -> None:
        for _ in range(10):
            time.sleep(0.1)  # blocking on purpose: the loop can't read any reply meanwhile
            await asyncio.sleep(0)

    try:
        started = time.monotonic()
        staller = asyncio.ensure_future(stall())
        d = await limiter.hit("k", RPM)
        await staller
        assert time.monotonic() - started >= 1.0  # the call did outlast the 0.25 s timeout
        assert d.allowed and d.used == 1  # counted by Redis
        assert flips == [] and limiter.backend_up
        assert (await limiter.hit("k", RPM)).used == 2  # and Redis still decides
    finally:
        await limiter.close()


async def test_a_reservation_settles_where_it_was_made(proxy: TcpProxy, redis_prefix: str) -> None:  # noqa: F811
    clock = FakeClock(time.time())
    limiter, _ = failover(proxy.url, "open", clock, redis_prefix)
    try:
        await proxy.stop()
        _, local = await limiter.reserve("u", TPD, 300)  # made while down: in memory
        await proxy.start()
        clock.advance(1.0)
        _, shared = await limiter.reserve("u", TPD, 200)  # made after recovery: in Redis
        assert local is not None and shared is not None and limiter.backend_up
        await limiter.settle(local, 100)
        await limiter.settle(shared, 150)
        assert (await limiter.peek("u", TPD)).used == 150  # Redis saw only its own
        assert (await limiter._local.peek("u", TPD)).used == 100  # type: ignore[attr-defined]
    finally:
        await limiter.close()


async def test_healthy_notices_a_dead_redis_before_any_request_does(dead_redis: str) -> None:
    for mode, ready in (("open", True), ("closed", False)):
        limiter, flips = failover(dead_redis, mode, FakeClock())
        try:
            assert limiter.backend_up  # nothing has tried Redis yet
            assert await limiter.healthy() is ready
            assert not limiter.backend_up and flips == [False]
        finally:
            await limiter.close()


async def test_make_limiter_picks_the_backend(dead_redis: str) -> None:
    clock = FakeClock()
    assert isinstance(make_limiter(None, clock), MemoryLimiter)
    assert isinstance(make_limiter("", clock), MemoryLimiter)
    limiter = make_limiter(dead_redis, clock, "closed")
    try:
        assert isinstance(limiter, FailoverLimiter) and limiter.mode == "closed"
        with pytest.raises(Unavailable):
            await limiter.hit("k", RPM)
    finally:
        await limiter.close()
    with pytest.raises(ValueError):
        make_limiter(None, clock, "sideways")


async def test_make_limiter_shares_limits_through_redis(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    clock = FakeClock(time.time())
    a = make_limiter(redis_url, clock, prefix=redis_prefix)
    b = make_limiter(redis_url, clock, prefix=redis_prefix)
    try:
        assert [(await lim.hit("k", RPM)).allowed for lim in (a, b, a, b)] == [True, True, True, False]
    finally:
        await a.close()
        await b.close()


async def test_a_stalled_event_loop_is_not_a_dead_redis(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    """The loop blocked past the timeout while Redis's reply waited in the socket: the timer fires
    first, yet Redis answered; failing open here would let requests past the shared limit."""
    limiter, flips = failover(redis_url, "open", FakeClock(time.time()), redis_prefix)
    try:
        assert (await limiter.hit("k", RPM)).allowed  # connected
        call = asyncio.ensure_future(limiter.hit("k", RPM))
        asyncio.get_running_loop().call_soon(time.sleep, 0.4)  # right after the command is sent
        d = await call
        assert d.allowed and d.used == 2  # counted by Redis, not by the local fallback
        assert flips == [] and limiter.backend_up
    finally:
        await limiter.close()


async def test_a_burst_that_outlasts_the_timeout_keeps_the_shared_limit(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    """RELIABILITY C1 under load: 300 checks at once on a busy loop take longer than the 0.25 s
    timeout to be answered, but Redis answers throughout: no fallback, exactly the limit admitted."""
    limiter, flips = failover(redis_url, "open", FakeClock(time.time()), redis_prefix)
    rules = (Rule("rpm", 60, 60.0),)
    try:
        await limiter.peek("burst", rules)  # connected
        loop = asyncio.get_running_loop()
        for i in range(30):  # a CPU-bound host: the loop stalls 20 ms every few ms while the burst runs
            loop.call_later(i * 0.025, time.sleep, 0.02)
        decisions = await asyncio.gather(*(limiter.hit("burst", rules) for _ in range(300)))
        assert sum(d.allowed for d in decisions) == 60
        assert flips == [] and limiter.backend_up
    finally:
        await limiter.close()


async def test_connections_cut_while_nobody_looked_fail_over_to_fresh_ones_not_to_local(
    proxy: TcpProxy, redis_prefix: str  # noqa: F811
) -> None:
    """Issue 15 point 1: every pooled connection breaks (a Redis restart between two bursts); the
    next burst takes a fresh connection for each broken one and stays on the shared limit."""
    clock = FakeClock()
    limiter, flips = failover(proxy.url, "open", clock, redis_prefix)
    rules = (Rule("rpm", 30, 60.0),)
    try:
        first = await asyncio.gather(*(limiter.hit("k", rules) for _ in range(20)))  # opens many connections
        assert all(d.allowed for d in first)
        await proxy.stop()
        await proxy.start()  # the same port, every old connection closed under the pool's feet
        second = await asyncio.gather(*(limiter.hit("k", rules) for _ in range(20)))
        assert [d.allowed for d in second].count(True) == 10  # 30 shared, not a fresh local 30
        assert limiter.backend_up and flips == []
    finally:
        await limiter.close()


async def test_a_settle_on_a_connection_cut_while_nobody_looked_still_lands_in_redis(
    proxy: TcpProxy, redis_prefix: str  # noqa: F811
) -> None:
    """The same for settle (it runs at most once, by its record): no fall back, no lost usage."""
    clock = FakeClock()
    limiter, flips = failover(proxy.url, "open", clock, redis_prefix)
    try:
        held = await asyncio.gather(*(limiter.reserve("u", TPD, 100) for _ in range(8)))
        assert all(d.allowed and r is not None for d, r in held)
        await proxy.stop()
        await proxy.start()
        for _, r in held:
            await limiter.settle(r, 10)
        assert (await limiter.peek("u", TPD)).used == 80
        assert limiter.backend_up and flips == []
    finally:
        await limiter.close()
