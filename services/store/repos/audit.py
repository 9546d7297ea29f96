"""The audit and alerts tables: who did what to whom (never a secret), and what needs attention."""

from __future__ import annotations

import peewee as pw

from services.store.models import Alert, Audit
from services.store.records import AlertRecord, AuditRecord


def insert_audit(db: pw.Database, r: AuditRecord) -> None:
    Audit.insert(id=r.id, actor=r.actor, action=r.action, target=r.target, ip=r.ip, created_at=r.created_at,
                 before=r.before, after=r.after).execute(db)


def list_audit(db: pw.Database, actor: str, action: str, since: float, until: float, limit: int,
               offset: int) -> tuple[list[AuditRecord], int]:
    q = Audit.select()
    if actor:
        q = q.where(Audit.actor == actor)
    if action:
        q = q.where(Audit.action == action)
    if since:
        q = q.where(Audit.created_at >= since)
    if until:
        q = q.where(Audit.created_at < until)
    total = q.count(db)
    rows = q.order_by(Audit.created_at.desc(), Audit.id.desc()).limit(limit).offset(offset).execute(db)
    return [AuditRecord(r.id, r.actor, r.action, r.target, r.ip, float(r.created_at), r.before, r.after)
            for r in rows], total


def insert_alert(db: pw.Database, r: AlertRecord, dedupe: str | None) -> bool:
    """False when an alert with this dedupe key exists (once per period)."""
    q = Alert.insert(id=r.id, kind=r.kind, subject=r.subject, message=r.message, dedupe=dedupe,
                     created_at=r.created_at, delivered=False).on_conflict(action="NOTHING",
                                                                        conflict_target=[Alert.dedupe])
    return int(q.as_rowcount().execute(db)) > 0


def mark_delivered(db: pw.Database, alert_id: str) -> None:
    Alert.update(delivered=True).where(Alert.id == alert_id).execute(db)


def list_alerts(db: pw.Database, limit: int, offset: int) -> tuple[list[AlertRecord], int]:
    total = Alert.select().count(db)
    rows = Alert.select().order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit).offset(offset).execute(db)
    return [AlertRecord(r.id, r.kind, r.subject, r.message, float(r.created_at), bool(r.delivered)) for r in rows], total
