"""The sessions table: one row per sign-in, so a session token can be revoked everywhere."""

from __future__ import annotations

import peewee as pw

from services.store.models import Session
from services.store.records import SessionRecord

MAX_LISTED = 500


def to_record(row: Session) -> SessionRecord:
    return SessionRecord(
        id=row.id, user_id=row.user_id, role=row.role, created_at=float(row.created_at),
        expires_at=float(row.expires_at),
        last_used_at=float(row.last_used_at) if row.last_used_at is not None else None,
        revoked_at=float(row.revoked_at) if row.revoked_at is not None else None,
        user_agent=row.user_agent, ip=row.ip,
    )


def insert_session(db: pw.Database, rec: SessionRecord) -> SessionRecord:
    Session.insert(id=rec.id, user_id=rec.user_id, role=rec.role, created_at=rec.created_at,
                   expires_at=rec.expires_at, last_used_at=rec.last_used_at, user_agent=rec.user_agent,
                   ip=rec.ip).execute(db)
    return rec


def get_session(db: pw.Database, session_id: str) -> SessionRecord | None:
    row = Session.select().where(Session.id == session_id).first(db)
    return to_record(row) if row else None


def list_live(db: pw.Database, user_id: str, now: float) -> list[SessionRecord]:
    q = (Session.select().where((Session.user_id == user_id) & Session.revoked_at.is_null() & (Session.expires_at > now))
         .order_by(Session.created_at.desc(), Session.id).limit(MAX_LISTED))
    return [to_record(r) for r in q.execute(db)]


def count_live(db: pw.Database, user_id: str, now: float) -> int:
    return (Session.select().where((Session.user_id == user_id) & Session.revoked_at.is_null()
                                   & (Session.expires_at > now)).count(db))


def touch(db: pw.Database, session_id: str, now: float) -> int:
    return Session.update(last_used_at=now).where(Session.id == session_id).execute(db)


def revoke(db: pw.Database, session_id: str, user_id: str | None, now: float) -> bool:
    """Revoke one live session; with `user_id`, only if it is that user's."""
    cond = (Session.id == session_id) & Session.revoked_at.is_null()
    if user_id is not None:
        cond &= Session.user_id == user_id
    return Session.update(revoked_at=now).where(cond).execute(db) > 0


def revoke_all(db: pw.Database, user_id: str, now: float, except_id: str = "") -> int:
    cond = (Session.user_id == user_id) & Session.revoked_at.is_null()
    if except_id:
        cond &= Session.id != except_id
    return Session.update(revoked_at=now).where(cond).execute(db)
