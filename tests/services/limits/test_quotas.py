"""Quotas on a fake clock: the error's X-RateLimit-* metadata, and counters rebuilt from the ledger
(RELIABILITY C5) — once per period, only from requests started before the counter was lost, and
the reservation that noticed taken again against the rebuilt counter."""

from __future__ import annotations

import asyncio

import pytest

from services.core.principal import Principal
from services.clock import FakeClock
from services.config.schema import TierConfig
from services.core.errors import ResourceExhausted
from services.limits.memory import MemoryLimiter
from services.limits.quotas import Quotas

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
