"""The api_keys table: issued keys stored as peppered hashes, with prefix, owner and state."""

from __future__ import annotations

import peewee as pw

from services.store.db import write_txn
from services.store.models import ApiKey
from services.store.records import ApiKeyRecord, UnknownTier, UnknownUser
from services.store.repos import tiers, users


def to_record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id, prefix=row.prefix, name=row.name, email=row.email, tier=row.tier,
        user_id=row.user_id, kind=row.kind, created_at=float(row.created_at),
        revoked_at=row.revoked_at, expires_at=row.expires_at, last_used_at=row.last_used_at,
    )


def insert_api_key(db: pw.Database, record: ApiKeyRecord, key_hash: str) -> ApiKeyRecord:
    with write_txn(db):
        if record.tier and not tiers.tier_exists(db, record.tier):
            raise UnknownTier(f"tier {record.tier!r} does not exist", metadata={"tier": record.tier})
        if record.user_id is not None and not users.user_exists(db, record.user_id):
            raise UnknownUser("user not found", metadata={"user_id": record.user_id})
        ApiKey.insert(
            id=record.id, hash=key_hash, prefix=record.prefix, name=record.name,
            email=record.email, tier=record.tier, user=record.user_id, kind=record.kind,
            created_at=record.created_at, revoked_at=None, expires_at=record.expires_at,
            last_used_at=None,
        ).execute(db)
    return record


def find_by_hash(db: pw.Database, key_hash: str) -> tuple[ApiKeyRecord, str] | None:
    """The key with this hash and the stored hash itself (for a constant-time re-check)."""
    row = ApiKey.select().where(ApiKey.hash == key_hash).first(db)
    return (to_record(row), row.hash) if row else None


def get_api_key(db: pw.Database, key_id: str, user_id: str | None) -> ApiKeyRecord | None:
    """The key, or None when it does not exist or (with `user_id`) belongs to someone else:
    the two cases look the same so ids cannot be probed (RELIABILITY F5)."""
    query = ApiKey.select().where(ApiKey.id == key_id)
    if user_id is not None:
        query = query.where(ApiKey.user == user_id)
    row = query.first(db)
    return to_record(row) if row else None


def list_api_keys(
    db: pw.Database, user_id: str | None, kind: str | None, include_revoked: bool
) -> list[ApiKeyRecord]:
    query = ApiKey.select()
    if user_id is not None:
        query = query.where(ApiKey.user == user_id)
    if kind is not None:
        query = query.where(ApiKey.kind == kind)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_null())
    query = query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    return [to_record(r) for r in query.execute(db)]


def revoke_api_key(db: pw.Database, key_id: str, user_id: str | None, now: float) -> bool:
    """True when an active key of this owner was revoked now."""
    query = ApiKey.update(revoked_at=now).where(
        (ApiKey.id == key_id) & ApiKey.revoked_at.is_null()
    )
    if user_id is not None:
        query = query.where(ApiKey.user == user_id)
    return query.execute(db) > 0


def active_key_hashes(db: pw.Database, now: float) -> dict[str, ApiKeyRecord]:
    query = ApiKey.select().where(
        ApiKey.revoked_at.is_null() & (ApiKey.expires_at.is_null() | (ApiKey.expires_at > now))
    )
    return {row.hash: to_record(row) for row in query.execute(db)}


def touch_api_keys(db: pw.Database, ids_to_time: dict[str, float]) -> int:
    """Move last_used_at forward (never back) for many keys in one transaction."""
    changed = 0
    with write_txn(db):
        for key_id, when in sorted(ids_to_time.items()):  # fixed order: no lock-order deadlocks
            changed += ApiKey.update(last_used_at=when).where(
                (ApiKey.id == key_id)
                & (ApiKey.last_used_at.is_null() | (ApiKey.last_used_at < when))
            ).execute(db)
    return changed
