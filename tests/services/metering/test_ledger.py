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
