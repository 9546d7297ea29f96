"""The provider_keys table: upstream keys, sealed, owned by one user or shared (user NULL)."""

from __future__ import annotations

import json

import peewee as pw

from services.store.db import write_txn
from services.store.models import ProviderKey
from services.store.records import ProviderKeyRecord, UnknownUser
from services.store.repos import users


def to_record(row: ProviderKey) -> ProviderKeyRecord:
    return ProviderKeyRecord(
        id=row.id, user_id=row.user_id, provider_kind=row.provider_kind, name=row.name,
        base_url=row.base_url, mask=row.mask, models=list(json.loads(row.models or "[]")),
        default_model=row.default_model, priority=int(row.priority),
        daily_quota=int(row.daily_quota), rpm=int(row.rpm), created_at=float(row.created_at),
        disabled=bool(row.disabled),
    )


def _owned_by(user_id: str | None) -> pw.Expression:
    # None selects the gateway's shared keys only, never "everyone's": a caller that forgets
    # to pass its user id sees no other user's keys.
    return ProviderKey.user.is_null() if user_id is None else (ProviderKey.user == user_id)


def insert_provider_key(db: pw.Database, record: ProviderKeyRecord, sealed: str) -> ProviderKeyRecord:
    with write_txn(db):
        if record.user_id is not None and not users.user_exists(db, record.user_id):
            raise UnknownUser("user not found", metadata={"user_id": record.user_id})
        ProviderKey.insert(
            id=record.id, user=record.user_id, provider_kind=record.provider_kind,
            name=record.name, base_url=record.base_url, sealed=sealed, mask=record.mask,
            models=json.dumps(list(record.models)), default_model=record.default_model,
            priority=record.priority, daily_quota=record.daily_quota, rpm=record.rpm,
            created_at=record.created_at, disabled=record.disabled,
        ).execute(db)
    return record


def _ordered(query: pw.ModelSelect) -> pw.ModelSelect:
    return query.order_by(ProviderKey.priority, ProviderKey.created_at, ProviderKey.id)


def list_provider_keys(db: pw.Database, user_id: str | None) -> list[ProviderKeyRecord]:
    query = _ordered(ProviderKey.select().where(_owned_by(user_id)))
    return [to_record(r) for r in query.execute(db)]


def list_all_provider_keys(db: pw.Database) -> list[ProviderKeyRecord]:
    return [to_record(r) for r in _ordered(ProviderKey.select()).execute(db)]


def get_provider_key(db: pw.Database, key_id: str, user_id: str | None) -> ProviderKeyRecord | None:
    row = ProviderKey.select().where((ProviderKey.id == key_id) & _owned_by(user_id)).first(db)
    return to_record(row) if row else None


def delete_provider_key(db: pw.Database, key_id: str, user_id: str | None) -> bool:
    query = ProviderKey.delete().where((ProviderKey.id == key_id) & _owned_by(user_id))
    return query.execute(db) > 0


def set_disabled(db: pw.Database, key_id: str, disabled: bool) -> bool:
    query = ProviderKey.update(disabled=disabled).where(ProviderKey.id == key_id)
    return query.execute(db) > 0


def get_sealed(db: pw.Database, key_id: str) -> str | None:
    row = ProviderKey.select(ProviderKey.sealed).where(ProviderKey.id == key_id).first(db)
    return row.sealed if row else None


def all_sealed(db: pw.Database) -> list[tuple[str, str]]:
    """(id, sealed) for every row: start-up checks each is readable with today's keys (F2)."""
    query = ProviderKey.select(ProviderKey.id, ProviderKey.sealed).order_by(ProviderKey.id)
    return [(r.id, r.sealed) for r in query.execute(db)]
