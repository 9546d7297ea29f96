"""The api_keys table: issued keys stored as peppered hashes, with prefix, owner and state."""

from __future__ import annotations

import peewee as pw

from services.store.db import write_txn
from services.store.models import ApiKey, User
from services.store.records import ApiKeyRecord, UnknownTier, UnknownUser
from services.store.repos import tiers, users


def to_record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id, prefix=row.prefix, name=row.name, email=row.email, tier=row.tier,
        user_id=row.user_id, kind=row.kind, created_at=float(row.created_at),
        revoked_at=row.revoked_at, expires_at=row.expires_at, last_used_at=row.last_used_at,
        rpm=int(row.rpm or 0), rpd=int(row.rpd or 0), tpd=int(row.tpd or 0), tpm_month=int(row.tpm_month or 0),
        budget_usd_day=row.budget_usd_day, budget_usd_month=row.budget_usd_month,
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
            last_used_at=None, rpm=record.rpm, rpd=record.rpd, tpd=record.tpd, tpm_month=record.tpm_month,
            budget_usd_day=record.budget_usd_day, budget_usd_month=record.budget_usd_month,
        ).execute(db)
    return record


def find_by_hash(db: pw.Database, key_hash: str) -> tuple[ApiKeyRecord, str] | None:
    """The key with this hash and the stored hash itself (for a constant-time re-check)."""
    row = ApiKey.select().where(ApiKey.hash == key_hash).first(db)
    if row is None:
        return None
    rec = to_record(row)
    if rec.user_id:
        # Issue 16: one plan per user and the user's state, read with the key (once a second per
        # key, through the authenticator's cache): a plan change or a suspension reaches it there.
        owner = User.select(User.tier, User.state, User.budget_usd_day, User.budget_usd_month).where(
            User.id == rec.user_id).first(db)
        if owner is not None:
            rec.tier = owner.tier or rec.tier
            rec.owner_state = owner.state or "active"
            rec.owner_budgets = (owner.budget_usd_day or 0.0, owner.budget_usd_month or 0.0)
    return rec, row.hash


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


def revoke_user_keys(db: pw.Database, user_id: str, now: float) -> int:
    """Revoke every active key of a user (deletion)."""
    return ApiKey.update(revoked_at=now).where((ApiKey.user == user_id) & ApiKey.revoked_at.is_null()).execute(db)


def count_active(db: pw.Database, user_id: str, now: float) -> int:
    return ApiKey.select().where((ApiKey.user == user_id) & ApiKey.revoked_at.is_null()
                                 & (ApiKey.expires_at.is_null() | (ApiKey.expires_at > now))).count(db)


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
