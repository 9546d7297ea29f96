"""The usage table: the ledger, one row per request, inserted idempotently and summed."""

from __future__ import annotations

import logging
from dataclasses import asdict, fields, replace
from operator import attrgetter

import orjson
import peewee as pw

from services.core.errors import InvalidArgument
from services.store.db import is_sqlite, write_txn
from services.store.models import Usage
from services.store.records import UsageFilter, UsageRecord

# 500 rows x 16 columns stays under SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
_CHUNK = 500
MAX_PAGE = 10_000  # a safety bound; AIP-158 page sizes are coerced by the RPC layer


def to_record(row: Usage) -> UsageRecord:
    return UsageRecord(
        request_id=row.request_id, key_id=row.key_id, user_id=row.user_id,
        surface=row.surface, provider=row.provider, provider_key_id=row.provider_key_id,
        model=row.model, status=row.status, prompt_tokens=int(row.prompt_tokens),
        completion_tokens=int(row.completion_tokens), estimated=bool(row.estimated),
        cost_usd=float(row.cost_usd), latency_ms=float(row.latency_ms),
        attempts=int(row.attempts), created_at=float(row.created_at), error=row.error,
    )


def insert_usage(db: pw.Database, rows: list[UsageRecord]) -> int:
    """Insert rows; a request_id already present is skipped (ON CONFLICT DO NOTHING), so a
    retried or replayed write never makes a second row. Returns how many were new."""
    values = []
    for row in rows:
        if not row.request_id:
            raise InvalidArgument("usage row without request_id")
        values.append(asdict(row))
    inserted = 0
    with write_txn(db):
        for start in range(0, len(values), _CHUNK):
            query = Usage.insert_many(values[start : start + _CHUNK]).on_conflict(
                action="NOTHING", conflict_target=[Usage.request_id]
            )
            inserted += int(query.as_rowcount().execute(db))
    return inserted


def _where(query: pw.Select, f: UsageFilter) -> pw.Select:
    if f.key_id is not None:
        query = query.where(Usage.key_id == f.key_id)
    if f.user_id is not None:
        query = query.where(Usage.user_id == f.user_id)
    if f.model is not None:
        query = query.where(Usage.model == f.model)
    if f.since is not None:
        query = query.where(Usage.created_at >= f.since)
    if f.until is not None:
        query = query.where(Usage.created_at < f.until)
    if f.status is not None:
        query = query.where(Usage.status == f.status)
    return query


def list_usage(db: pw.Database, f: UsageFilter, limit: int, offset: int) -> list[UsageRecord]:
    """Newest first; request_id breaks ties so pages never overlap or skip."""
    if limit < 0 or offset < 0:
        raise InvalidArgument("limit and offset must be >= 0")
    query = _where(Usage.select(), f).order_by(Usage.created_at.desc(), Usage.request_id.desc())
    query = query.limit(min(limit, MAX_PAGE)).offset(offset)
    return [to_record(r) for r in query.execute(db)]


def count_usage(db: pw.Database, f: UsageFilter) -> int:
    return int(_where(Usage.select(), f).count(db))


def usage_totals(db: pw.Database, f: UsageFilter) -> dict[str, object]:
    sums = (
        _count(),
        pw.fn.COALESCE(pw.fn.SUM(Usage.prompt_tokens), 0),
        pw.fn.COALESCE(pw.fn.SUM(Usage.completion_tokens), 0),
        pw.fn.COALESCE(pw.fn.SUM(Usage.cost_usd), 0),
    )
    requests, prompt, completion, cost = _where(Usage.select(*sums), f).tuples().execute(db)[0]
    by_status = {
        status: int(n)
        for status, n in _where(Usage.select(Usage.status, _count()), f)
        .group_by(Usage.status).order_by(Usage.status).tuples().execute(db)
    }
    by_model: dict[str, dict[str, float | int]] = {}
    query = _where(Usage.select(Usage.model, *sums), f).group_by(Usage.model).order_by(Usage.model)
    for model, n, p, c, usd in query.tuples().execute(db):
        by_model[model] = {
            "requests": int(n), "prompt_tokens": int(p), "completion_tokens": int(c),
            "cost_usd": float(usd),
        }
    return {
        "requests": int(requests), "prompt_tokens": int(prompt),
        "completion_tokens": int(completion), "cost_usd": float(cost),
        "by_status": by_status, "by_model": by_model,
    }


def tokens_used_since(db: pw.Database, key_id: str, since: float) -> int:
    """Prompt + completion tokens a key spent since `since` (rebuilds limiter counters, C5)."""
    total = pw.fn.COALESCE(pw.fn.SUM(Usage.prompt_tokens + Usage.completion_tokens), 0)
    query = Usage.select(total).where((Usage.key_id == key_id) & (Usage.created_at >= since))
    return int(query.scalar(db) or 0)


def _count() -> pw.Function:
    return pw.fn.COUNT(pw.SQL("*"))


# RELIABILITY B7: the write-ahead marker of a request in flight, and what a dead one becomes.
IN_FLIGHT = "in_flight"
INTERRUPTED = "interrupted"
_UPGRADABLE = (IN_FLIGHT, INTERRUPTED)


def upsert_usage(db: pw.Database, rows: list[UsageRecord]) -> int:
    """Insert rows; an existing row is replaced only when it is an `in_flight` marker (or a
    marker already swept to `interrupted`) and the new row is a final one. Every other
    conflict is a no-op, as in insert_usage: a final row is never overwritten, so replays stay
    idempotent. Returns rows inserted or upgraded."""
    latest: dict[str, UsageRecord] = {}
    for row in rows:
        if not row.request_id:
            raise InvalidArgument("usage row without request_id")
        seen = latest.get(row.request_id)
        if seen is None or seen.status == IN_FLIGHT or row.status != IN_FLIGHT:
            latest[row.request_id] = row  # one row per id per statement (PostgreSQL requires it)
    return _direct_upsert(db, list(latest.values()))


_COLUMNS = tuple(f.name for f in fields(UsageRecord))
_values = attrgetter(*_COLUMNS)  # a row's values as a tuple, in column order, in C
_UPSERT_TAIL = (
    ' ON CONFLICT ("request_id") DO UPDATE SET {sets} WHERE "usage"."status" IN (?, ?) AND excluded."status" != ?'
).format(sets=", ".join(f'"{c}" = excluded."{c}"' for c in _COLUMNS if c != "request_id"))
# SQLite gets the whole batch as one JSON text too, unpacked by json_each in one statement: the
# writer thread gives up the GIL for one step per batch, and binds one parameter instead of 16 a
# row. Binding rows as parameters cost a step per statement, and after each step the thread waited
# up to a switch interval to win the GIL back from a busy event loop: at ~4,400 chat requests/s
# (c=64) the backlog stood at 2,000-5,000 rows and one run filled it (10,000: 503
# LEDGER_BACKLOG for 2.4 s, bench/README.md). SQLite has no NaN: a NaN (written by orjson as
# null) lands as 0 rather than failing the batch on NOT NULL and holding up every row behind it.
# `WHERE true`: SQLite's parser needs it between INSERT ... SELECT and ON CONFLICT.
_FLOATS = {"cost_usd", "latency_ms", "created_at"}
_SQLITE_UPSERT = 'INSERT INTO "usage" ({cols}) SELECT {picks} FROM json_each(?) WHERE true'.format(
    cols=", ".join(f'"{c}"' for c in _COLUMNS),
    picks=", ".join(f"COALESCE(json_extract(value, '$[{i}]'), 0.0)" if c in _FLOATS else f"json_extract(value, '$[{i}]')"
                    for i, c in enumerate(_COLUMNS)),
) + _UPSERT_TAIL
# PostgreSQL gets the whole batch as one JSON parameter, unpacked by the server: psycopg2 quotes
# every parameter in C but holding the GIL, ~17 a row, and the ledger thread took ~4.5 % of the
# production shape's GIL time doing it (issue 20); orjson writes the dataclasses in ~1 µs a row.
# Integer columns arrive as numeric and are cast (12.0 rounds into bigint, as a numeric literal
# in VALUES did); orjson writes NaN and ±inf as null, which a double column keeps as NaN rather
# than failing the whole batch on NOT NULL.
_PG_TYPES = {"prompt_tokens": "numeric", "completion_tokens": "numeric", "attempts": "numeric",
             "estimated": "boolean", "cost_usd": "float8", "latency_ms": "float8", "created_at": "float8"}
_PG_CASTS = {"prompt_tokens": "t.prompt_tokens::bigint", "completion_tokens": "t.completion_tokens::bigint",
             "attempts": "t.attempts::integer", "cost_usd": "COALESCE(t.cost_usd, 'NaN')",
             "latency_ms": "COALESCE(t.latency_ms, 'NaN')", "created_at": "COALESCE(t.created_at, 'NaN')"}
_PG_UPSERT = (
    'INSERT INTO "usage" ({cols}) SELECT {picks} FROM json_to_recordset(%s::json) AS t({defs})'
    + _UPSERT_TAIL.replace("?", "%s")
).format(
    cols=", ".join(f'"{c}"' for c in _COLUMNS),
    picks=", ".join(_PG_CASTS.get(c, f"t.{c}") for c in _COLUMNS),
    defs=", ".join(f"{c} {_PG_TYPES.get(c, 'text')}" for c in _COLUMNS),
)
_TAIL = (*_UPGRADABLE, IN_FLIGHT)
_INT64 = 2**63 - 1
log = logging.getLogger("tollgate.store")


def _direct_upsert(db: pw.Database, rows: list[UsageRecord]) -> int:
    written = 0
    with write_txn(db):
        # The driver's errors as peewee's: DbWorker retries "database is locked" and reconnects.
        with pw.__exception_wrapper__:
            cursor = db.cursor()
            if rows:
                sqlite = is_sqlite(db)
                cursor.execute(_SQLITE_UPSERT if sqlite else _PG_UPSERT, (_batch_json(rows, sqlite), *_TAIL))
                written = cursor.rowcount
    return written


def _batch_json(rows: list[UsageRecord], sqlite: bool) -> str:
    """The batch as the one JSON parameter: rows of values for SQLite, objects for PostgreSQL.
    A value no JSON (or store) can hold, an integer past 64 bits or a string with a lone
    surrogate, would fail this batch on every retry while the ledger's backlog filled behind it
    (then every caller gets 503): such an integer is written as 0, such a string with '?' for the surrogate."""
    try:
        return orjson.dumps([_values(r) for r in rows] if sqlite else rows).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        rows = [_writable(r) for r in rows]
        log.warning("usage rows with values no store can hold were written with those values replaced")
        return orjson.dumps([_values(r) for r in rows] if sqlite else rows).decode()


def _writable(row: UsageRecord) -> UsageRecord:
    changes: dict[str, object] = {}
    for name in _COLUMNS:
        v = getattr(row, name)
        if type(v) is int and not -_INT64 <= v <= _INT64:
            changes[name] = 0
        elif type(v) is str:
            try:
                v.encode()
            except UnicodeEncodeError:
                changes[name] = v.encode("utf-8", "replace").decode()
    return replace(row, **changes) if changes else row


def interrupt_in_flight(db: pw.Database, owner: str, started_at: float, stale_before: float) -> int:
    """Marks dead requests' markers `interrupted`: those `owner` (a restarted gateway's earlier
    life) left before `started_at`, and anyone's older than `stale_before` (no request lives
    that long). Returns how many."""
    mine = (Usage.error == owner) & (Usage.created_at < started_at)
    query = Usage.update(status=INTERRUPTED, error="interrupted: the gateway stopped before the request finished").where(
        (Usage.status == IN_FLIGHT) & (mine | (Usage.created_at < stale_before))
    )
    with write_txn(db):
        return int(query.execute(db))


def usage_by_day(db: pw.Database, f: UsageFilter) -> list[tuple[int, int, int, int, float]]:
    """(UTC day number since the epoch, requests, prompt, completion, cost) per day, oldest first."""
    if is_sqlite(db):
        day = pw.fn.CAST(pw.SQL("created_at / 86400 AS INTEGER"))
    else:
        day = pw.fn.FLOOR(Usage.created_at / 86400)
    sums = (_count(), pw.fn.COALESCE(pw.fn.SUM(Usage.prompt_tokens), 0),
            pw.fn.COALESCE(pw.fn.SUM(Usage.completion_tokens), 0), pw.fn.COALESCE(pw.fn.SUM(Usage.cost_usd), 0))
    query = _where(Usage.select(day.alias("day"), *sums), f).group_by(pw.SQL("1")).order_by(pw.SQL("1"))
    return [(int(d), int(n), int(p), int(c), float(usd)) for d, n, p, c, usd in query.tuples().execute(db)]
