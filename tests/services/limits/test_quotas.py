"""Quotas on a fake clock: the error's X-RateLimit-* metadata, and counters rebuilt from the ledger
(RELIABILITY C5) — once per period, only from requests started before the counter was lost, and
the reservation that noticed taken again against the rebuilt counter."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.accounts.budgets import Budgets
from services.core.principal import Principal
from services.catalog.pricing import Catalog
from services.clock import FakeClock
from services.config.schema import TierConfig
from services.core.errors import ResourceExhausted
from services.limits.degraded import FailoverLimiter
from services.limits.memory import MemoryLimiter
from services.limits.quotas import Quotas
from services.limits.redis import RedisLimiter, connect
from tests.support.redis_server import redis_prefix, redis_url  # noqa: F401  (fixtures)

TIER = TierConfig("t", rpd=100, tpd=1_000)
P = Principal("ak_1", "api_key", "t")


class History:
    """A ledger stand-in: rows as (started_at, tokens)."""

    def __init__(self, rows: list[tuple[float, int]]) -> None:
        self.rows = rows
        self.calls: list[tuple[str, float | None]] = []

    async def tokens_since(self, key_id: str, since: float, until: float | None = None, by_user: bool = False) -> int:
        self.calls.append(("tokens", until))
        return sum(t for at, t in self.rows if at >= since and (until is None or at < until))

    async def requests_since(self, key_id: str, since: float, until: float | None = None, by_user: bool = False) -> int:
        self.calls.append(("requests", until))
        return sum(1 for at, _ in self.rows if at >= since and (until is None or at < until))


def quotas(clock: FakeClock, history: History | None) -> Quotas:
    q = Quotas(MemoryLimiter(clock), {"t": TIER}, "UTC")
    if history is not None:
        q.use_history(history, clock.now)
    return q


async def used(q: Quotas) -> tuple[int, int]:
    tokens = await q.limiter.peek(P.subject, q.token_rules("t"))
    requests = await q.limiter.peek(P.subject, q.request_rules("t"))
    return tokens.used, requests.used


async def test_a_lost_counter_is_rebuilt_once_from_earlier_requests():
    clock = FakeClock()
    now = clock.now()
    history = History([(now - 60, 300), (now - 30, 200), (now + 5, 999)])  # the last one started after us
    q = quotas(clock, history)
    adm = await q.admit(P, 100, started_at=now)
    assert q.rebuilds == 2
    assert await used(q) == (300 + 200 + 100, 2 + 1)  # ledger + our hold; ledger requests + ours
    assert history.calls == [("tokens", now), ("requests", now)]
    await q.finish(adm, 40)
    # A second admission on the (now non-empty) counter does not look at the ledger again.
    await q.admit(P, 100, started_at=clock.now())
    assert q.rebuilds == 2 and len(history.calls) == 2
    assert (await used(q))[0] == 500 + 40 + 100


async def test_the_noticing_reservation_is_refused_if_the_rebuilt_counter_has_no_room():
    clock = FakeClock()
    q = quotas(clock, History([(clock.now() - 10, 950)]))
    with pytest.raises(ResourceExhausted) as exc:
        await q.admit(P, 100, started_at=clock.now())
    assert exc.value.metadata["rule"] == "tpd"
    assert exc.value.metadata["ratelimit_used"] == "950" and exc.value.metadata["ratelimit_limit"] == "1000"
    assert (await used(q))[0] == 950  # its hold given back


async def test_concurrent_admissions_wait_for_the_rebuild():
    clock = FakeClock()
    q = quotas(clock, History([(clock.now() - 10, 700)]))
    results = await asyncio.gather(*(q.admit(P, 100, started_at=clock.now()) for _ in range(6)), return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    assert len(admitted) == 3  # 700 + 3 × 100 = 1000: no overshoot
    assert all(isinstance(r, ResourceExhausted) for r in results if isinstance(r, BaseException))
    assert (await used(q))[0] == 1_000


async def test_without_history_counters_start_from_zero():
    clock = FakeClock()
    q = quotas(clock, None)
    await q.admit(P, 100)
    assert q.rebuilds == 0 and await used(q) == (100, 1)


# -- issue 20: a $ budget held in the quota's one limiter call ---------------------------------


class CallCountingRedisLimiter(RedisLimiter):
    """Counts the limiter calls made before the answer (each one Redis round trip)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.calls: list[str] = []

    async def admit_with_budget(self, *a, **kw):
        self.calls.append("admit_with_budget")
        return await super().admit_with_budget(*a, **kw)

    async def admit(self, *a, **kw):
        self.calls.append("admit")
        return await super().admit(*a, **kw)

    async def reserve(self, *a, **kw):
        self.calls.append("reserve")
        return await super().reserve(*a, **kw)

    async def hit(self, *a, **kw):
        self.calls.append("hit")
        return await super().hit(*a, **kw)


def budgeted(limiter, tpd: int = 1_000_000) -> tuple[Quotas, Budgets]:
    tier = TierConfig("t", rpm=10, tpd=tpd, budget_usd_day=0.01)  # 10,000 micro-dollars
    return Quotas(limiter, {"t": tier}, "UTC"), Budgets(limiter, Catalog.builtin(), {"t": tier})


async def admit_budgeted(q: Quotas, b: Budgets, max_output: int):
    plan = b.plan(P, b.lines(P), "gpt-4o-mini", 10, max_output)
    adm = await q.admit(P, 10 + max_output, None, plan)
    adm.budget, _ = await b.complete(P, plan, adm.budget_held)
    return adm


async def test_a_budget_is_held_in_the_same_redis_call_as_the_quota(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    clock = FakeClock(time.time())
    primary = CallCountingRedisLimiter(connect(redis_url), redis_prefix, clock=clock, owns_client=True)
    limiter = FailoverLimiter(primary, MemoryLimiter(clock), clock=clock)
    q, b = budgeted(limiter)
    try:
        adm = await admit_budgeted(q, b, 100)
        assert primary.calls == ["admit_with_budget"]  # one round trip before the answer
        assert adm.reservation is not None and adm.budget is not None and adm.budget.subject == "$ak:ak_1"
        held = (await limiter.peek("$ak:ak_1", tuple(line.rule for line in b.lines(P)))).used
        assert held == b.estimate_micros("gpt-4o-mini", 10, 100)
        # Over the budget: refused with BUDGET_EXCEEDED, and the request still counted (seed 000).
        with pytest.raises(ResourceExhausted) as exc:
            await admit_budgeted(q, b, 100_000)
        assert exc.value.reason == "BUDGET_EXCEEDED" and primary.calls == ["admit_with_budget"] * 2
        assert (await limiter.peek(P.subject, q.request_rules("t"))).used == 2
        await asyncio.gather(q.finish(adm, 50), b.finish(adm.budget, 0.0002))
        assert (await limiter.peek("$ak:ak_1", tuple(line.rule for line in b.lines(P)))).used == 200
    finally:
        await limiter.close()


async def test_a_budget_held_in_the_fused_call_goes_back_when_the_rebuilt_counter_refuses():
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    q, b = budgeted(limiter, tpd=1_000)
    q.use_history(History([(clock.now() - 10, 950)]), clock.now)  # C5: the token counter was lost
    with pytest.raises(ResourceExhausted) as exc:
        await admit_budgeted(q, b, 90)
    assert exc.value.metadata["rule"] == "tpd"
    assert (await limiter.peek("$ak:ak_1", tuple(line.rule for line in b.lines(P)))).used == 0  # no budget left held


# -- issue 20: admissions over the lane are not queued behind a pool-sized gate ------------------


class InflightCountingRedisLimiter(RedisLimiter):
    """The most admissions in flight at Redis at once."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.now = self.most = 0

    async def admit_with_budget(self, *a, **kw):
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await super().admit_with_budget(*a, **kw)
        finally:
            self.now -= 1


async def test_a_burst_of_admissions_goes_to_redis_at_once_over_the_lane(redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    # 32 at a time (the redis-py pool's gate) queued new streams for up to 850 ms behind each
    # other's round trips when 1,000 were open (bench/README.md, issue 20).
    clock = FakeClock(time.time())
    primary = InflightCountingRedisLimiter(connect(redis_url), redis_prefix, clock=clock, owns_client=True)
    limiter = FailoverLimiter(primary, MemoryLimiter(clock), clock=clock)
    q = Quotas(limiter, {"t": TierConfig("t", rpm=1_000, tpd=1_000_000)}, "UTC")
    try:
        assert limiter.max_inflight == primary.max_inflight == 1024
        adms = await asyncio.gather(*(q.admit(P, 10) for _ in range(300)))
        assert primary.most == 300
        assert (await limiter.peek(P.subject, q.request_rules("t"))).used == 300  # every one counted once
        await asyncio.gather(*(q.finish(a, 5) for a in adms))
        assert (await limiter.peek(P.subject, q.token_rules("t"))).used == 1_500
    finally:
        await limiter.close()


async def test_without_a_lane_the_gate_stays_at_the_pools_half() -> None:
    import redis.asyncio as aioredis

    clock = FakeClock(time.time())
    limiter = RedisLimiter(aioredis.Redis(unix_socket_path="/nonexistent.sock"), "tg:", clock=clock, owns_client=True)
    try:
        assert limiter.max_inflight == 32  # redis-py's pool of 64 connections does every call
    finally:
        await limiter.close()
