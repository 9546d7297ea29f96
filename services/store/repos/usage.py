"""The usage table: the ledger, one row per request, inserted idempotently and summed."""

from __future__ import annotations

from dataclasses import asdict

import peewee as pw

from services.core.errors import InvalidArgument
from services.store.db import write_txn
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
