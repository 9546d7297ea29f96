"""RedisLimiter specifics: replicas sharing one limit, script caching, key hygiene, ownership (RELIABILITY C2)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from services.clock import FakeClock
from services.limits.base import Rule
from services.limits.periods import period_id, period_reset_at
from services.limits.redis import RedisLimiter, connect
from tests.support.redis_server import closed_port, redis_prefix, redis_url  # noqa: F401  (fixtures)


async def test_c2_two_replicas_with_their_own_clients_share_one_limit_exactly(
    redis_url: str, redis_prefix: str  # noqa: F811
) -> None:
    now = time.time()
    # Replica b's wall clock is 5 s ahead: windows run on Redis TIME, so both still agree.
    clients = [connect(redis_url), connect(redis_url)]
    a = RedisLimiter(clients[0], redis_prefix, clock=FakeClock(now))
    b = RedisLimiter(clients[1], redis_prefix, clock=FakeClock(now + 5.0))
    rules = (Rule("rpm", 100, 60.0),)
    try:
        decisions = await asyncio.gather(*(lim.hit("key1", rules) for _ in range(150) for lim in (a, b)))
        assert sum(d.allowed for d in decisions) == 100
        assert (await a.peek("key1", rules)).used == (await b.peek("key1", rules)).used == 100
        waits = [d.retry_after_s for d in decisions if not d.allowed]
        assert all(0 < w <= 60.0 for w in waits)
    finally:
        for client in clients:
            await client.aclose()


async def test_scripts_reload_themselves_after_script_flush(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    client = connect(redis_url)
    try:
        limiter = RedisLimiter(client, redis_prefix)
        rules = (Rule("rpm", 2, 60.0),)
        assert (await limiter.hit("k", rules)).allowed
        await client.script_flush()  # EVALSHA now answers NOSCRIPT: redis-py falls back to loading it
        assert (await limiter.hit("k", rules)).allowed
        assert not (await limiter.hit("k", rules)).allowed
    finally:
        await client.aclose()


async def test_keys_are_prefixed_and_expire_on_their_own(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    client = connect(redis_url)
    clock = FakeClock(time.time())
    try:
        limiter = RedisLimiter(client, redis_prefix, lease_s=30.0, clock=clock)
        await limiter.hit("k", (Rule("rpm", 5, 60.0), Rule("rpd", 5, period="day")))
        _, r = await limiter.reserve("k", (Rule("tpd", 5000, period="day"),), 100)
        assert r is not None
        keys = [k.decode() async for k in client.scan_iter(match=f"{redis_prefix}*")]
        assert len(keys) == 5  # window, two counters, the record, the lease index
        window = f"{redis_prefix}k:rpm:w"
        assert 60_000 < await client.pttl(window) <= 61_000
        counter = f"{redis_prefix}k:rpd:{period_id('day', clock.now(), 'UTC')}"
        ttl = await client.ttl(counter)
        expected = period_reset_at("day", clock.now(), "UTC") - clock.now() + 86_400
        assert expected - 5 <= ttl <= expected + 1
        record = f"{redis_prefix}rsv:{r.id}"
        assert await client.ttl(record) > 0
        assert await client.zscore(f"{redis_prefix}leases", record) is not None

        await limiter.settle(r, 80)
        assert not await client.exists(record)  # settled: nothing left to reap
        assert await client.zscore(f"{redis_prefix}leases", record) is None
    finally:
        await client.aclose()


async def test_reap_returns_what_it_gave_back(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    client = connect(redis_url)
    try:
        limiter = RedisLimiter(client, redis_prefix, lease_s=0.2)
        tpd = (Rule("tpd", 1000, period="day"),)
        for _ in range(3):
            assert (await limiter.reserve("k", tpd, 100))[1] is not None
        assert await limiter.reap() == 0
        await asyncio.sleep(0.3)
        assert await limiter.reap() == 3
        assert (await limiter.peek("k", tpd)).used == 0
    finally:
        await client.aclose()


async def test_healthy_answers_fast_either_way(redis_url: str) -> None:  # noqa: F811
    up, down = connect(redis_url), connect(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        assert await RedisLimiter(up).healthy()
        started = time.monotonic()
        assert not await RedisLimiter(down).healthy()
        assert time.monotonic() - started < 2.0
    finally:
        await up.aclose()
        await down.aclose()


async def test_close_leaves_a_handed_in_client_open_and_closes_an_owned_one(redis_url: str) -> None:  # noqa: F811
    client = aioredis.Redis.from_url(redis_url)
    try:
        await RedisLimiter(client).close()
        assert await client.ping()
    finally:
        await client.aclose()

    class SpyClient:
        closed = False

        def register_script(self, source: str) -> None:
            return None

        async def aclose(self) -> None:
            self.closed = True

    handed_in, owned = SpyClient(), SpyClient()
    await RedisLimiter(handed_in).close()  # type: ignore[arg-type]
    await RedisLimiter(owned, owns_client=True).close()  # type: ignore[arg-type]
    assert (handed_in.closed, owned.closed) == (False, True)


@pytest.mark.parametrize("decode", [False, True])
async def test_works_whatever_the_client_decodes(redis_url: str, redis_prefix: str, decode: bool) -> None:  # noqa: F811
    client = aioredis.Redis.from_url(redis_url, decode_responses=decode)
    try:
        limiter = RedisLimiter(client, redis_prefix)
        d, r = await limiter.reserve("k", (Rule("tpm", 10, 60.0),), 7)
        assert d.allowed and r is not None
        await limiter.settle(r, 3)
        assert (await limiter.peek("k", (Rule("tpm", 10, 60.0),))).used == 3
    finally:
        await client.aclose()


async def test_a_burst_meeting_noscript_loads_each_script_once_over_the_lane(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    """64 callers that all get NOSCRIPT on a flushed (or fresh) Redis share one SCRIPT LOAD, sent on
    the lane: no pool connection each, and every decision still counts exactly once."""
    client = connect(redis_url)
    try:
        limiter = RedisLimiter(client, redis_prefix)
        rules = (Rule("rpm", 50, 60.0),)
        assert (await limiter.hit("k", rules)).allowed  # the lane is connected
        await client.script_flush()
        idle = len(client.connection_pool._available_connections)  # the one script_flush used

        async def script_calls() -> int:
            stats = await client.info("commandstats")  # Redis 7 counts subcommands apart
            return int(stats.get("cmdstat_script|load", stats.get("cmdstat_script", {})).get("calls", 0))

        before = await script_calls()
        decisions = await asyncio.gather(*(limiter.hit("k", rules) for _ in range(64)))
        assert sum(d.allowed for d in decisions) == 49  # 50, one taken before the flush
        assert await script_calls() - before == 1  # one SCRIPT LOAD for the 64
        pool = client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) == idle
        await limiter.close()
    finally:
        await client.aclose()
