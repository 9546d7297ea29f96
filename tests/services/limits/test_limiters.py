"""The Limiter contract on both backends: memory on a fake clock, Redis for real (RELIABILITY C1, C3).

Redis windows and leases run on Redis's clock, so its runs use short windows and leases and
really wait; calendar periods follow the injected (fake) clock on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.clock import FakeClock
from services.limits.base import Limiter, Rule
from services.limits.memory import MemoryLimiter
from services.limits.periods import period_reset_at
from services.limits.redis import RedisLimiter, connect
from tests.support.redis_server import delete_prefix, new_prefix, redis_url_or_skip


@dataclass
class Backend:
    name: str
    limiter: Limiter
    clock: FakeClock
    window_s: float  # the sliding window the tests use: a minute on the fake clock, short on Redis
    lease_s: float

    async def elapse(self, seconds: float) -> None:
        """Let time pass: the fake clock always (calendar periods), real time too on Redis."""
        self.clock.advance(seconds)
        if self.name == "redis":
            await asyncio.sleep(seconds)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    clock = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp())
    if request.param == "memory":
        yield Backend("memory", MemoryLimiter(clock, lease_s=120.0), clock, 60.0, 120.0)
        return
    url, prefix = redis_url_or_skip(), new_prefix()
    client = connect(url)
    # Long enough that 200 concurrent calls on a busy CI host finish inside one window / lease.
    limiter = RedisLimiter(client, prefix, lease_s=2.0, clock=clock)
    try:
        yield Backend("redis", limiter, clock, 3.0, 2.0)
    finally:
        await limiter.close()
        await client.aclose()
        await delete_prefix(url, prefix)


def at_local(clock: FakeClock, tz: str, *fields: int) -> float:
    """Move the fake clock to a local wall time in `tz`; returns that epoch."""
    target = datetime(*fields, tzinfo=ZoneInfo(tz)).timestamp()  # type: ignore[misc]
    clock.advance(target - clock.now())
    return target


async def used(limiter: Limiter, subject: str, rule: Rule) -> int:
    return (await limiter.peek(subject, (rule,))).used


# -- request windows ---------------------------------------------------------------------------


async def test_c1_200_at_once_admit_exactly_the_limit_then_the_next_window_admits_again(backend: Backend) -> None:
    rules = (Rule("rpm", 60, backend.window_s),)
    first = await asyncio.gather(*(backend.limiter.hit("k1", rules) for _ in range(200)))
    assert sum(d.allowed for d in first) == 60
    refused = [d for d in first if not d.allowed]
    assert all(d.rule == "rpm" and d.limit == 60 and d.remaining == 0 and d.used == 60 for d in refused)
    assert all(0 < d.retry_after_s <= backend.window_s for d in refused)

    await backend.elapse(backend.window_s + 0.1)
    second = await asyncio.gather(*(backend.limiter.hit("k1", rules) for _ in range(200)))
    assert sum(d.allowed for d in second) == 60


async def test_admitted_hits_report_used_and_remaining_like_the_headers(backend: Backend) -> None:
    rules = (Rule("rpm", 5, backend.window_s),)
    for n in range(1, 6):
        d = await backend.limiter.hit("k1", rules)
        assert (d.allowed, d.rule, d.limit, d.used, d.remaining, d.retry_after_s) == (True, "rpm", 5, n, 5 - n, 0.0)
        assert backend.clock.now() < d.reset_at <= backend.clock.now() + backend.window_s + 0.01
    refused = await backend.limiter.hit("k1", rules)
    assert not refused.allowed and refused.remaining == 0
    assert refused.reset_at == pytest.approx(backend.clock.now() + refused.retry_after_s, abs=0.01)


async def test_subjects_do_not_share_a_window(backend: Backend) -> None:
    rules = (Rule("rpm", 2, backend.window_s),)
    for subject in ("a", "b"):
        assert [(await backend.limiter.hit(subject, rules)).allowed for _ in range(3)] == [True, True, False]


async def test_peek_counts_nothing(backend: Backend) -> None:
    rules = (Rule("rpm", 2, backend.window_s), Rule("rpd", 10, period="day"))
    for _ in range(5):
        d = await backend.limiter.peek("k1", rules)
        assert d.allowed and d.used == 0 and d.remaining == 2
    await backend.limiter.hit("k1", rules)
    await backend.limiter.hit("k1", rules)
    d = await backend.limiter.peek("k1", rules)
    assert (d.allowed, d.rule, d.used, d.remaining) == (False, "rpm", 2, 0)
    assert await used(backend.limiter, "k1", rules[1]) == 2


async def test_unlimited_rules_never_refuse_and_keep_no_count(backend: Backend) -> None:
    unlimited = (Rule("rpm", 0, backend.window_s), Rule("rpd", -1, period="day"))
    assert all([(await backend.limiter.hit("k1", unlimited)).allowed for _ in range(100)])
    d = await backend.limiter.peek("k1", unlimited)
    assert (d.allowed, d.limit, d.rule) == (True, 0, "")
    mixed = (*unlimited, Rule("rpd2", 3, period="day"))
    assert [(await backend.limiter.hit("k1", mixed)).allowed for _ in range(4)] == [True, True, True, False]


# -- all or nothing ----------------------------------------------------------------------------


async def test_a_refusing_day_rule_counts_nothing_in_the_window(backend: Backend) -> None:
    rpm, rpd = Rule("rpm", 5, backend.window_s), Rule("rpd", 3, period="day")
    decisions = [await backend.limiter.hit("k1", (rpm, rpd)) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert decisions[-1].rule == "rpd" and decisions[-1].retry_after_s > backend.window_s
    assert await used(backend.limiter, "k1", rpm) == 3


async def test_a_refusing_window_counts_nothing_for_the_day(backend: Backend) -> None:
    rpm, rpd = Rule("rpm", 2, backend.window_s), Rule("rpd", 10, period="day")
    assert [(await backend.limiter.hit("k1", (rpd, rpm))).allowed for _ in range(4)] == [True, True, False, False]
    assert await used(backend.limiter, "k1", rpd) == 2


async def test_allowed_reports_the_tightest_rule_refused_the_one_that_frees_last(backend: Backend) -> None:
    rpm, rpd = Rule("rpm", 10, backend.window_s), Rule("rpd", 4, period="day")
    d = await backend.limiter.hit("k1", (rpm, rpd))
    assert (d.rule, d.remaining) == ("rpd", 3)
    rpm2 = Rule("rpm", 1, backend.window_s)
    d = await backend.limiter.hit("k2", (rpm2, rpd))
    assert d.allowed and d.rule == "rpm"
    for _ in range(3):
        await backend.limiter.hit("k2", (rpd,))
    d = await backend.limiter.hit("k2", (rpm2, rpd))  # both refuse: the day is the longer wait
    assert not d.allowed and d.rule == "rpd"


# -- calendar periods --------------------------------------------------------------------------


async def test_daily_limit_resets_at_local_midnight_in_its_zone(backend: Backend) -> None:
    tz = "Asia/Kolkata"  # UTC+05:30: local midnight is 18:30 UTC
    rpd = (Rule("rpd", 3, period="day", tz=tz),)
    at_local(backend.clock, tz, 2026, 11, 23, 23, 59, 30)
    midnight = datetime(2026, 11, 24, tzinfo=ZoneInfo(tz)).timestamp()
    assert [(await backend.limiter.hit("k1", rpd)).allowed for _ in range(3)] == [True] * 3
    refused = await backend.limiter.hit("k1", rpd)
    assert not refused.allowed
    assert refused.reset_at == midnight
    assert refused.retry_after_s == pytest.approx(30.0)

    backend.clock.advance(29.0)  # 23:59:59: still the same day
    assert not (await backend.limiter.hit("k1", rpd)).allowed
    backend.clock.advance(1.0)  # 00:00:00 local
    d = await backend.limiter.hit("k1", rpd)
    assert d.allowed and d.used == 1
    assert d.reset_at == datetime(2026, 11, 25, tzinfo=ZoneInfo(tz)).timestamp()


async def test_monthly_limit_resets_on_the_first_local_day(backend: Backend) -> None:
    tz = "America/New_York"
    rule = (Rule("rpmonth", 2, period="month", tz=tz),)
    at_local(backend.clock, tz, 2026, 12, 31, 23, 0)
    assert [(await backend.limiter.hit("k1", rule)).allowed for _ in range(3)] == [True, True, False]
    refused = await backend.limiter.hit("k1", rule)
    assert refused.reset_at == datetime(2027, 1, 1, tzinfo=ZoneInfo(tz)).timestamp()
    assert refused.retry_after_s == pytest.approx(3600.0)
    backend.clock.advance(3600.0)
    assert (await backend.limiter.hit("k1", rule)).allowed


# -- reservations (token budgets) --------------------------------------------------------------

TPD = Rule("tpd", 10_000, period="day", tz="Europe/Berlin")


async def test_c3_50_concurrent_reserves_of_1000_in_10000_exactly_10_pass(backend: Backend) -> None:
    results = await asyncio.gather(*(backend.limiter.reserve("u1", (TPD,), 1000) for _ in range(50)))
    held = [r for d, r in results if r is not None]
    assert len(held) == 10
    refused = [d for d, r in results if r is None]
    assert len(refused) == 40
    midnight = period_reset_at("day", backend.clock.now(), "Europe/Berlin")
    assert all(d.rule == "tpd" and d.remaining == 0 and d.reset_at == midnight for d in refused)
    assert all(d.retry_after_s == pytest.approx(midnight - backend.clock.now()) for d in refused)
    assert await used(backend.limiter, "u1", TPD) == 10_000


async def test_settle_lower_refunds_the_difference_release_refunds_all_and_each_counts_once(
    backend: Backend,
) -> None:
    limiter = backend.limiter
    held = [r for _, r in [await limiter.reserve("u1", (TPD,), 1000) for _ in range(3)]]
    assert all(r is not None for r in held)
    a, b, c = held  # type: ignore[misc]
    assert await used(limiter, "u1", TPD) == 3000

    await limiter.settle(a, 600)
    assert a.settled and await used(limiter, "u1", TPD) == 2600
    await limiter.settle(a, 600)  # second settle: no-op
    await limiter.release(a)  # release after settle: no-op
    assert await used(limiter, "u1", TPD) == 2600

    await limiter.release(b)
    await limiter.release(b)
    await limiter.settle(b, 900)  # settle after release: no-op
    assert await used(limiter, "u1", TPD) == 1600

    await limiter.settle(c, 1700)  # above the estimate: charged in full
    await limiter.settle(c, 5000)
    assert await used(limiter, "u1", TPD) == 2300


async def test_a_copy_of_a_settled_reservation_settles_nothing(backend: Backend) -> None:
    _, r = await backend.limiter.reserve("u1", (TPD,), 1000)
    assert r is not None
    copy = type(r)(r.subject, r.rules, r.amount, r.period_ids, id=r.id)
    await backend.limiter.settle(r, 100)
    await backend.limiter.settle(copy, 400)  # e.g. a retried finaliser: the id makes it once
    assert await used(backend.limiter, "u1", TPD) == 100


async def test_settle_never_goes_negative_and_refusal_holds_nothing(backend: Backend) -> None:
    _, r = await backend.limiter.reserve("u1", (TPD,), 500)
    assert r is not None
    await backend.limiter.settle(r, -50)
    assert await used(backend.limiter, "u1", TPD) == 0
    d, none = await backend.limiter.reserve("u1", (TPD,), 10_001)
    assert none is None and not d.allowed
    assert await used(backend.limiter, "u1", TPD) == 0


async def test_reserve_is_all_or_nothing_across_rules(backend: Backend) -> None:
    small = Rule("tpd_key", 1500, period="day")
    _, r = await backend.limiter.reserve("u1", (TPD, small), 1000)
    assert r is not None and r.period_ids == ("2026-11-23", "2026-11-23")
    d, none = await backend.limiter.reserve("u1", (TPD, small), 1000)
    assert none is None and d.rule == "tpd_key"
    assert await used(backend.limiter, "u1", TPD) == 1000


async def test_lease_expiry_gives_an_abandoned_hold_back_and_a_late_settle_charges_once(backend: Backend) -> None:
    rule = (Rule("tpd", 1000, period="day"),)
    _, abandoned = await backend.limiter.reserve("u1", rule, 1000)
    assert abandoned is not None
    assert (await backend.limiter.reserve("u1", rule, 1))[1] is None

    await backend.elapse(backend.lease_s + 0.2)  # RELIABILITY B7: the owner died; the lease ends
    d, r = await backend.limiter.reserve("u1", rule, 300)
    assert d.allowed and r is not None
    assert await used(backend.limiter, "u1", rule[0]) == 300

    await backend.limiter.settle(abandoned, 200)  # it did run after all: its usage counts, once
    await backend.limiter.settle(abandoned, 200)
    assert await used(backend.limiter, "u1", rule[0]) == 500


async def test_token_windows_hold_estimates_and_settle_in_place(backend: Backend) -> None:
    tpm = (Rule("tpm", 5000, backend.window_s),)
    d, first = await backend.limiter.reserve("u1", tpm, 3000)
    assert d.allowed and first is not None and d.used == 3000
    d, none = await backend.limiter.reserve("u1", tpm, 3000)
    assert none is None and 0 < d.retry_after_s <= backend.window_s
    await backend.limiter.settle(first, 1000)
    d, second = await backend.limiter.reserve("u1", tpm, 3000)
    assert d.allowed and second is not None and d.used == 4000
    await backend.limiter.release(second)
    assert await used(backend.limiter, "u1", tpm[0]) == 1000
    await backend.elapse(backend.window_s + 0.1)
    assert await used(backend.limiter, "u1", tpm[0]) == 0


async def test_reserving_with_no_limit_always_passes(backend: Backend) -> None:
    d, r = await backend.limiter.reserve("u1", (Rule("tpd", 0, period="day"),), 10**9)
    assert d.allowed and r is not None
    await backend.limiter.settle(r, 10**9)
    assert r.settled


async def test_healthy(backend: Backend) -> None:
    assert await backend.limiter.healthy()


async def test_admit_with_budget_is_hit_then_reserve_then_the_budgets_reserve_in_one_call(backend: Backend) -> None:
    """Issue 20: a caller's $ budget is held in the same call as the request's quota, with the
    outcomes of three calls: a budget is held only once the request and token rules admitted."""
    rpm = (Rule("rpm", 3, backend.window_s),)
    tpd = (Rule("tpd", 1000, period="day"),)
    usd = (Rule("usd.plan.day", 500, period="day"),)
    lim = backend.limiter

    d, td, tr, bd, br = await lim.admit_with_budget("ak:k", rpm, tpd, 400, "$ak:k", usd, 300)  # type: ignore[attr-defined]
    assert d.allowed and d.used == 1 and td.allowed and td.used == 400 and tr is not None
    assert bd.allowed and bd.used == 300 and bd.rule == "usd.plan.day" and br is not None and br.subject == "$ak:k"
    assert br.id != tr.id and br.period_ids == ("2026-11-23",)

    # The budget has 200 left: refused, while the request and its tokens were counted (seed 000).
    d, td, tr2, bd, none = await lim.admit_with_budget("ak:k", rpm, tpd, 400, "$ak:k", usd, 300)  # type: ignore[attr-defined]
    assert d.allowed and d.used == 2 and tr2 is not None and none is None
    assert not bd.allowed and bd.used == 300 and bd.retry_after_s > 0
    await lim.release(tr2)

    # The token rules refuse: the budget is not reached, nothing held there.
    d, td, none, bd, bnone = await lim.admit_with_budget("ak:k", rpm, tpd, 700, "$ak:k", usd, 100)  # type: ignore[attr-defined]
    assert d.allowed and not td.allowed and none is None and bd is None and bnone is None
    assert await used(lim, "$ak:k", usd[0]) == 300

    # The request rules refuse: nothing else is asked.
    assert (await lim.admit_with_budget("ak:k", rpm, tpd, 1, "$ak:k", usd, 1))[0].allowed is False  # type: ignore[attr-defined]
    assert await used(lim, "$ak:k", usd[0]) == 300 and await used(lim, "ak:k", tpd[0]) == 400

    # Settled like any reservation: the hold becomes the real cost, once.
    await lim.settle(br, 120)
    await lim.settle(br, 120)
    assert await used(lim, "$ak:k", usd[0]) == 120


async def test_admit_with_budget_without_token_rules_or_with_unlimited_ones(backend: Backend) -> None:
    usd = (Rule("usd.plan.month", 1000, period="month"),)
    lim = backend.limiter
    d, td, tr, bd, br = await lim.admit_with_budget("ak:k", (), (), 50, "$ak:k", usd, 600)  # type: ignore[attr-defined]
    assert d is None and td is None and tr is None and bd.allowed and br is not None
    d, td, tr, bd, br2 = await lim.admit_with_budget(  # type: ignore[attr-defined]
        "ak:k", (Rule("rpm", 0),), (Rule("tpd", 0, period="day"),), 50, "$ak:k", usd, 600)
    assert d.allowed and td.allowed and tr is not None  # unlimited: nothing refuses
    assert not bd.allowed and br2 is None and bd.used == 600
    await lim.release(br)
    assert await used(lim, "$ak:k", usd[0]) == 0
