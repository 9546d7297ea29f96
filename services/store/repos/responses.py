"""Stored Responses API responses (previous_response_id, GET/DELETE /v1/responses/{id}), per caller.

A row is the response object plus the conversation that led to it (input items, flattened), so
the next turn on any replica needs one read. Every query names the owner: another caller's id
is simply not found. Rows expire (`expires_at`) and each owner keeps at most `max_per_owner`;
both are enforced on insert, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import peewee as pw

from services.store.db import write_txn


@dataclass(slots=True)
class StoredResponse:
    id: str
    owner: str
    created_at: float
    expires_at: float
    native: bool  # produced by OpenAI itself (its own id, kept upstream too)
    response: str  # the response object as JSON
    items: str  # the conversation's input items as a JSON array; "" when over the size bound


def insert_response(db: pw.Database, row: StoredResponse, now: float, max_per_owner: int) -> None:
    p = db.param
    with write_txn(db):
        db.execute_sql(f"DELETE FROM stored_responses WHERE expires_at <= {p}", (now,))
        db.execute_sql(
            f"INSERT INTO stored_responses (id, owner, created_at, expires_at, native, response, items) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
            (row.id, row.owner, row.created_at, row.expires_at, row.native, row.response, row.items))
        # Bounded per caller: past the limit, the oldest go (one indexed range delete).
        cutoff = db.execute_sql(
            f"SELECT created_at FROM stored_responses WHERE owner = {p} ORDER BY created_at DESC, id DESC "
            f"LIMIT 1 OFFSET {p}", (row.owner, max_per_owner)).fetchone()
        if cutoff is not None:
            db.execute_sql(f"DELETE FROM stored_responses WHERE owner = {p} AND created_at <= {p} AND id <> {p}",
                           (row.owner, cutoff[0], row.id))


def get_response(db: pw.Database, rid: str, owner: str, now: float) -> StoredResponse | None:
    p = db.param
    r = db.execute_sql(
        f"SELECT id, owner, created_at, expires_at, native, response, items FROM stored_responses "
        f"WHERE id = {p} AND owner = {p} AND expires_at > {p}", (rid, owner, now)).fetchone()
    if r is None:
        return None
    return StoredResponse(r[0], r[1], float(r[2]), float(r[3]), bool(r[4]), r[5], r[6])


def delete_response(db: pw.Database, rid: str, owner: str) -> bool:
    p = db.param
    cur = db.execute_sql(f"DELETE FROM stored_responses WHERE id = {p} AND owner = {p}", (rid, owner))
    return cur.rowcount > 0
