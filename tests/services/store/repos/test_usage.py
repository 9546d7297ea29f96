"""The usage ledger: idempotent inserts, newest-first pages, filters, totals; SQLite under a
held write lock loses nothing (RELIABILITY D5)."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from services.clock import SystemClock
from services.core.errors import InvalidArgument
from services.store import Store, UsageFilter, UsageRecord
from services.auth.key_vault import KeyVault
from tests.services.store.conftest import PEPPER


def _row(i: int, **kw) -> UsageRecord:
    base = dict(
        request_id=f"req-{i:04d}", key_id="ak_a" if i % 2 else "ak_b", user_id="usr_1",
        surface="openai", provider="demo", provider_key_id="pk_1", model="m1" if i % 3 else "m2",
        status="ok" if i % 5 else "upstream_error", prompt_tokens=10, completion_tokens=i,
        estimated=bool(i % 4 == 0), cost_usd=0.5, latency_ms=12.5, attempts=1,
        created_at=1000.0 + i, error="",
    )
    base.update(kw)
    return UsageRecord(**base)


async def test_insert_is_idempotent(store):
    row = _row(1)
    assert await store.insert_usage([row]) == 1
    assert await store.insert_usage([row]) == 0
    assert await store.insert_usage([row, _row(2), _row(2)]) == 1  # dup inside one batch too
    assert await store.insert_usage([]) == 0
    assert await store.count_usage(UsageFilter()) == 2
    [back] = await store.list_usage(UsageFilter(key_id="ak_a"), 10, 0)
    assert back == row


async def test_large_batch_is_chunked(store):
    rows = [_row(i) for i in range(1200)]
    assert await store.insert_usage(rows) == 1200
    assert await store.insert_usage(rows) == 0
    assert await store.count_usage(UsageFilter()) == 1200


async def test_list_newest_first_with_filters_and_offset(store):
    await store.insert_usage([_row(i) for i in range(20)])
    everything = await store.list_usage(UsageFilter(), 100, 0)
    assert [r.request_id for r in everything] == [f"req-{i:04d}" for i in reversed(range(20))]
    pages = [await store.list_usage(UsageFilter(), 7, off) for off in (0, 7, 14)]
    assert [r for page in pages for r in page] == everything
    assert await store.list_usage(UsageFilter(), 7, 20) == []

    only_a = await store.list_usage(UsageFilter(key_id="ak_a"), 100, 0)
    assert {r.key_id for r in only_a} == {"ak_a"} and len(only_a) == 10
    m2 = await store.list_usage(UsageFilter(model="m2"), 100, 0)
    assert [r.request_id for r in m2] == [f"req-{i:04d}" for i in (18, 15, 12, 9, 6, 3, 0)]
    window = UsageFilter(since=1005.0, until=1010.0)
    assert [r.created_at for r in await store.list_usage(window, 100, 0)] == [1009.0, 1008.0, 1007.0, 1006.0, 1005.0]
    assert await store.count_usage(window) == 5
    assert await store.count_usage(UsageFilter(user_id="usr_other")) == 0
    both = UsageFilter(key_id="ak_b", model="m2", since=1006.0)
    assert [r.request_id for r in await store.list_usage(both, 100, 0)] == ["req-0018", "req-0012", "req-0006"]


async def test_equal_timestamps_page_stably(store):
    await store.insert_usage([_row(i, created_at=5.0) for i in range(10)])
    seen = [r.request_id for off in range(0, 10, 3) for r in await store.list_usage(UsageFilter(), 3, off)]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 10


async def test_bad_paging_rejected(store):
    with pytest.raises(InvalidArgument):
        await store.list_usage(UsageFilter(), -1, 0)
    with pytest.raises(InvalidArgument):
        await store.insert_usage([UsageRecord(request_id="")])


async def test_totals(store):
    await store.insert_usage([_row(i) for i in range(10)])
    totals = await store.usage_totals(UsageFilter())
    assert totals["requests"] == 10
    assert totals["prompt_tokens"] == 100
    assert totals["completion_tokens"] == sum(range(10))
    assert totals["cost_usd"] == pytest.approx(5.0)
    assert totals["by_status"] == {"ok": 8, "upstream_error": 2}
    assert totals["by_model"]["m2"] == {
        "requests": 4, "prompt_tokens": 40, "completion_tokens": 0 + 3 + 6 + 9, "cost_usd": 2.0,
    }
    assert totals["by_model"]["m1"]["requests"] == 6
    empty = await store.usage_totals(UsageFilter(key_id="nobody"))
    assert empty == {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                     "by_status": {}, "by_model": {}}


async def test_tokens_used_since(store):
    await store.insert_usage([_row(i) for i in range(10)])
    # ak_a rows are the odd ones: 10 prompt + i completion each.
    assert await store.tokens_used_since("ak_a", 0) == sum(10 + i for i in (1, 3, 5, 7, 9))
    assert await store.tokens_used_since("ak_a", 1005.0) == sum(10 + i for i in (5, 7, 9))
    assert await store.tokens_used_since("nobody", 0) == 0


async def _held_lock_run(tmp_path, hold_s: float, **store_kw) -> tuple[Store, list, float]:
    store = Store(None, str(tmp_path), SystemClock(), **store_kw)
    await store.start()
    vault = KeyVault(store, PEPPER, SystemClock())
    _, plaintext = await vault.create(name="before-lock", email="e", tier="basic")
    holder = sqlite3.connect(tmp_path / "tollgate.db", isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # another process holding SQLite's write lock
    holder.execute("INSERT INTO settings (key, value) VALUES ('held', 'x')")

    async def release() -> None:
        await asyncio.sleep(hold_s)
        holder.execute("COMMIT")
        holder.close()

    async def timed_reads() -> float:
        await asyncio.sleep(0.3)  # the writes are queued and waiting on the lock by now
        t0 = time.monotonic()
        assert await vault.find(plaintext) is not None
        assert await store.ping()
        return time.monotonic() - t0

    started = time.monotonic()
    releaser = asyncio.create_task(release())
    rows = [UsageRecord(request_id=f"locked-{i}", created_at=float(i)) for i in range(200)]
    results = await asyncio.gather(
        *(store.insert_usage([r]) for r in rows),
        vault.create(name="during-lock", email="e", tier="basic"),
        timed_reads(),
        return_exceptions=True,
    )
    await releaser
    return store, results, time.monotonic() - started


@pytest.mark.timeout(60)
async def test_d5_sqlite_write_lock_held_3s_loses_nothing(tmp_path):
    store, results, elapsed = await _held_lock_run(tmp_path, 3.0)
    try:
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert sum(results[:200]) == 200
        assert await store.count_usage(UsageFilter()) == 200
        assert await store.get_setting("held") == "x"
        assert elapsed >= 2.9
        assert results[-1] < 0.5  # reads were not stuck behind the locked writes
    finally:
        await store.close()


@pytest.mark.timeout(60)
async def test_d5_lock_held_past_busy_timeout_is_retried_not_raised(tmp_path):
    # busy_timeout 100 ms < 1.5 s hold: every first attempt fails with "database is locked"
    # inside the worker; the store must retry with backoff and still land every row.
    store, results, _ = await _held_lock_run(tmp_path, 1.5, sqlite_busy_timeout_ms=100)
    try:
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert await store.count_usage(UsageFilter()) == 200
        assert len(await store.list_api_keys()) == 2
    finally:
        await store.close()


def test_sqlite_upsert_sends_a_whole_batch_in_one_statement(tmp_path):
    """One statement and one bound parameter per batch, whatever its size: sqlite3 lets go of the
    GIL around each step, and a writer thread that must win it back from a busy event loop once
    per statement fell behind the request rate (the ledger's backlog filled at c=64, issue 20).
    The upgrade rule still holds row by row inside that one statement."""
    import peewee as pw

    from services.store.models import Usage
    from services.store.repos import usage as repo

    db = pw.SqliteDatabase(str(tmp_path / "u.db"))
    with db.bind_ctx([Usage]):
        db.create_tables([Usage])
        statements: list[str] = []
        db.connection().set_trace_callback(statements.append)
        rows = [_row(i) for i in range(1, 2001)]
        assert repo.upsert_usage(db, rows) == len(rows)
        assert len([s for s in statements if s.startswith("INSERT")]) == 1
        assert Usage.select().count() == len(rows)
        placeholder = _row(9999, status="in_flight")
        assert repo.upsert_usage(db, [placeholder]) == 1
        assert repo.upsert_usage(db, [_row(9999), _row(1, completion_tokens=777)]) == 1  # upgraded; final kept
        assert Usage.get(Usage.request_id == "req-0001").completion_tokens == 1
        assert Usage.get(Usage.request_id == "req-9999").status == "ok"
    db.close()


async def test_sqlite_upsert_keeps_a_batch_with_a_nan_cost(tmp_path):
    """SQLite stores no NaN (it binds one as NULL, and NOT NULL then failed the whole batch, which
    the ledger retries forever while its backlog grows): the NaN lands as 0, every other value of
    the batch as written."""
    from services.store.repos import usage as repo

    store = Store(None, str(tmp_path), SystemClock())
    await store.start()
    try:
        rows = [_row(1, cost_usd=float("nan"), latency_ms=float("inf")), _row(2)]
        assert await store.run(lambda db: repo.upsert_usage(db, rows)) == 2
        got = {r.request_id: r for r in await store.list_usage(UsageFilter(), limit=10)}
        assert (got["req-0001"].cost_usd, got["req-0001"].latency_ms) == (0.0, 0.0)
        assert got["req-0001"].completion_tokens == 1 and got["req-0002"] == rows[1]
    finally:
        await store.close()


async def test_upsert_writes_many_rows_and_upgrades_only_in_flight_markers(store):
    """The ledger's batched write on both backends (PostgreSQL's hand-built statement, issue 20):
    every row lands, as written; a final row replaces only an `in_flight` marker; a final row is
    never overwritten."""
    from services.store.repos import usage as repo

    rows = [_row(i) for i in range(1, 300)]
    assert await store.run(lambda db: repo.upsert_usage(db, rows)) == len(rows)
    assert await store.count_usage(UsageFilter()) == len(rows)
    got = {r.request_id: r for r in await store.list_usage(UsageFilter(), limit=1000)}
    assert got["req-0004"].estimated is True and got["req-0005"].status == "upstream_error"
    assert got["req-0007"].cost_usd == 0.5 and got["req-0007"].latency_ms == 12.5

    marker = _row(9999, status="in_flight", completion_tokens=0)
    assert await store.run(lambda db: repo.upsert_usage(db, [marker])) == 1
    final = _row(9999, completion_tokens=42)
    again = _row(1, completion_tokens=777)  # req-0001 is final already
    assert await store.run(lambda db: repo.upsert_usage(db, [final, again])) == 1
    got = {r.request_id: r for r in await store.list_usage(UsageFilter(), limit=1000)}
    assert got["req-9999"].status == "ok" and got["req-9999"].completion_tokens == 42
    assert got["req-0001"].completion_tokens == 1


async def test_upsert_keeps_every_value_as_written(store, db_url):
    """The PostgreSQL batch travels as one JSON parameter (issue 20): quotes, backslashes, JSON
    look-alikes and non-ASCII text come back byte for byte, a whole-valued float in a token
    column lands as its integer (as a numeric literal did), and a batch far past the old
    statement sizes lands in one call."""
    from services.store.repos import usage as repo

    tricky = ["it's", 'say "hi"', "C:\\path\\", '{"a": [1, %s]}', "%(x)s", "naïve — 日本語 🚀", "tab\there\nnewline"]
    rows = [_row(i, error=tricky[i % len(tricky)], model=tricky[(i + 1) % len(tricky)]) for i in range(1, 1201)]
    rows.append(_row(5000, prompt_tokens=12.0, completion_tokens=7.0, attempts=2.0, estimated=1))  # type: ignore[arg-type]
    assert await store.run(lambda db: repo.upsert_usage(db, rows)) == len(rows)
    got = {r.request_id: r for r in await store.list_usage(UsageFilter(), limit=2000)}
    assert len(got) == len(rows)
    for row in rows[:-1]:
        assert got[row.request_id] == row
    odd = got["req-5000"]
    assert (odd.prompt_tokens, odd.completion_tokens, odd.attempts, odd.estimated) == (12, 7, 2, True)
    assert type(odd.prompt_tokens) is int


async def test_a_value_no_store_can_hold_does_not_hold_up_its_batch(store, caplog):
    """An integer past 64 bits or a lone surrogate in a row failed its whole batch on every retry,
    and the ledger's backlog filled behind it (then every caller gets 503): such an integer is
    written as 0, such a string with '?' for the surrogate, every other value as it was."""
    from services.store.repos import usage as repo

    rows = [_row(1, prompt_tokens=10**30), _row(2, error="cut \ud800 here", model="m\udfff"), _row(3)]
    assert await store.run(lambda db: repo.upsert_usage(db, rows)) == 3
    got = {r.request_id: r for r in await store.list_usage(UsageFilter(), limit=10)}
    assert got["req-0001"].prompt_tokens == 0 and got["req-0001"].completion_tokens == 1
    assert (got["req-0002"].error, got["req-0002"].model) == ("cut ? here", "m?")
    assert got["req-0003"] == rows[2]
    assert "written with those values replaced" in caplog.text


async def test_postgresql_upsert_keeps_a_batch_with_a_nan_cost(postgres_url, tmp_path):
    """orjson writes NaN as null; the row keeps NaN instead of failing the whole batch on NOT NULL
    (a batch that fails is retried forever and the ledger's backlog grows behind it)."""
    import math

    from services.store.repos import usage as repo

    store = Store(postgres_url, str(tmp_path), SystemClock())
    await store.start()
    try:
        rows = [_row(1, cost_usd=float("nan")), _row(2)]
        assert await store.run(lambda db: repo.upsert_usage(db, rows)) == 2
        got = {r.request_id: r for r in await store.list_usage(UsageFilter(), limit=10)}
        assert math.isnan(got["req-0001"].cost_usd) and got["req-0002"] == rows[1]
    finally:
        await store.close()
