"""The ledger writer: placeholders upgraded by final rows, dead requests `interrupted` (RELIABILITY
B7), history reads for counter rebuilds (C5), and the bounded buffer (D6), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from services.metering.ledger import Ledger, owner_tag
from services.store.records import UsageFilter, UsageRecord
from tests.services.store.conftest import clock, db_url, make_store  # noqa: F401  (fixtures)
from tests.support.postgres import postgres_url  # noqa: F401  (fixture, used by db_url)


def row(rid: str, status: str = "ok", tokens: int = 10, key: str = "ak_1", at: float = 1_000.0) -> UsageRecord:
    return UsageRecord(request_id=rid, key_id=key, status=status, prompt_tokens=tokens, completion_tokens=tokens,
                       created_at=at, surface="openai", model="m")


async def test_upsert_only_upgrades_placeholders(make_store):
    store = await make_store()
    placeholder = row("r1", "in_flight", 0)
    placeholder.error = "in_flight:abc"
    assert await store.upsert_usage([placeholder, row("r2")]) == 2
    # A final row replaces the placeholder; a second final row for r2 is a no-op (idempotent).
    assert await store.upsert_usage([row("r1", "ok", 5), row("r2", "error", 99)]) == 1
    # A late placeholder never downgrades a final row.
    assert await store.upsert_usage([placeholder]) == 0
    rows = {r.request_id: r for r in await store.list_usage(UsageFilter())}
    assert (rows["r1"].status, rows["r1"].prompt_tokens, rows["r1"].error) == ("ok", 5, "")
    assert (rows["r2"].status, rows["r2"].prompt_tokens) == ("ok", 10)
    # One statement with both the placeholder and the final row of one request: the final wins.
    assert await store.upsert_usage([row("r3", "ok", 3), row("r3", "in_flight", 0)]) == 1
    assert (await store.list_usage(UsageFilter()))[0].status == "ok"


async def test_interrupt_in_flight_marks_own_and_stale(make_store):
    store = await make_store()
    mine, other, old = row("a", "in_flight", 0, at=100.0), row("b", "in_flight", 0, at=100.0), row("c", "in_flight", 0, at=1.0)
    mine.error, other.error, old.error = "in_flight:me", "in_flight:them", "in_flight:them"
    await store.upsert_usage([mine, other, old, row("d", "ok", at=1.0)])
    assert await store.interrupt_in_flight("in_flight:me", 200.0, 50.0) == 2
    status = {r.request_id: r.status for r in await store.list_usage(UsageFilter())}
    assert status == {"a": "interrupted", "b": "in_flight", "c": "interrupted", "d": "ok"}
    # The final row of an `interrupted` request still lands (the process was only slow).
    await store.upsert_usage([row("a", "ok", 4)])
    assert {r.request_id: r.status for r in await store.list_usage(UsageFilter())}["a"] == "ok"


async def test_placeholders_are_written_only_for_long_requests_and_replaced(make_store):
    store = await make_store()
    ledger = Ledger(store.insert_usage, flush_s=3600, store=store, open_after_s=0.2)
    assert ledger.tracks_open and ledger.owner == owner_tag(str(store._data_dir))
    ledger.open(row("short", tokens=0))
    ledger.record(row("short"))  # ended before any flush: its placeholder never costs a write
    ledger.open(row("long", tokens=0))
    await ledger.flush()
    assert {r.request_id: r.status for r in await store.list_usage(UsageFilter())} == {"short": "ok"}
    await asyncio.sleep(0.25)
    await ledger.flush()
    [marker] = [r for r in await store.list_usage(UsageFilter()) if r.request_id == "long"]
    assert (marker.status, marker.error, marker.estimated) == ("in_flight", ledger.owner, True)
    # Counted as a request (it is one) while it runs, without tokens.
    assert await ledger.requests_since("ak_1", 0) == 2
    ledger.record(row("long", tokens=3))
    assert await ledger.requests_since("ak_1", 0) == 2  # the buffered final row is not counted twice
    assert await ledger.tokens_since("ak_1", 0) == 20 + 6  # store + buffer
    await ledger.flush()
    rows = {r.request_id: r for r in await store.list_usage(UsageFilter())}
    assert len(rows) == 2 and (rows["long"].status, rows["long"].prompt_tokens) == ("ok", 3)


async def test_a_restarted_ledger_marks_its_earlier_lifes_placeholders_interrupted(make_store):
    store = await make_store()
    first = Ledger(store.insert_usage, flush_s=0.01, store=store, open_after_s=0.0)
    first.now = lambda: 1_000.0
    first.open(row("dead", tokens=0, at=990.0))
    await first.flush()  # written, then the process "dies": no final row, no close()
    assert [r.status for r in await store.list_usage(UsageFilter())] == ["in_flight"]

    second = Ledger(store.insert_usage, flush_s=0.01, store=store)
    second.now = lambda: 2_000.0
    second.start()
    try:
        for _ in range(100):
            if second.interrupted:
                break
            await asyncio.sleep(0.01)
    finally:
        await second.close()
    assert second.interrupted == 1
    [r] = await store.list_usage(UsageFilter())
    assert (r.request_id, r.status) == ("dead", "interrupted")


async def test_a_ledger_without_a_store_behind_it_writes_no_placeholders():
    written: list[UsageRecord] = []

    async def insert(rows: list[UsageRecord]) -> int:
        written.extend(rows)
        return len(rows)

    ledger = Ledger(insert, open_after_s=0.0)
    ledger.open(row("a", tokens=0))
    ledger.record(row("b"))
    await ledger.flush()
    assert [r.request_id for r in written] == ["b"] and not ledger.has_history


async def test_a_flush_writes_what_was_buffered_when_it_began_not_rows_arriving_meanwhile():
    """Under steady traffic a flush used to chase the rows recorded while its write ran: a write
    per couple of requests instead of one per flush interval."""
    batches: list[list[str]] = []
    ledger: Ledger

    async def insert(rows: list[UsageRecord]) -> int:
        batches.append([r.request_id for r in rows])
        await asyncio.sleep(0)  # the write takes a while; requests keep ending meanwhile
        ledger.record(row(f"late{len(batches)}"))
        return len(rows)

    ledger = Ledger(insert, batch_size=2)
    for i in range(3):
        ledger.record(row(f"r{i}"))
    await ledger.flush()
    assert batches == [["r0", "r1"], ["r2"]]  # two writes for the three rows, then it stops
    assert ledger.pending == 2  # late1 and late2 wait for the next flush
    await ledger.flush()
    assert batches[2] == ["late1", "late2"] and ledger.pending == 1


class CountingLedger(Ledger):
    """Counts the background task's wakes (each runs the housekeeping once)."""

    wakes = 0

    async def _housekeeping(self) -> None:
        self.wakes += 1
        await super()._housekeeping()


async def _until(pred, timeout_s: float) -> None:
    end = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_idle_ledger_sleeps_and_what_comes_after_is_written_within_flush_s(make_store):
    """Issue 20 point 5: with nothing buffered or open the task does not wake every flush_s (an
    idle gateway's event loop did, twice a second); the first row or placeholder after the
    idleness puts the flush_s timer back."""
    store = await make_store()
    ledger = CountingLedger(store.insert_usage, flush_s=0.05, store=store, open_after_s=0.1)
    ledger.start()
    try:
        await asyncio.sleep(0.6)  # twelve periods
        assert ledger.wakes == 1  # the start-up recovery, then asleep until the minute's sweep
        ledger.record(row("after-idle"))
        await _until(lambda: ledger.written == 1, 0.5)
        await asyncio.sleep(0.3)
        slept = ledger.wakes
        placeholder = row("long", "in_flight", 0)
        ledger.open(placeholder)  # a long request starting after idleness: marked after open_after_s
        await _until(lambda: "long" in ledger._marked, 0.6)
        assert ledger.wakes > slept
        [back] = await store.list_usage(UsageFilter(key_id="ak_1", status="in_flight"))
        assert back.request_id == "long"
    finally:
        await ledger.close()
