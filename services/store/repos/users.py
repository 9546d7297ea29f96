"""The users table: sign-up (the first user becomes admin), login lookups, listing."""

from __future__ import annotations

import peewee as pw

from services.store.db import write_txn, xact_lock
from services.store.models import User
from services.store.records import (
    ROLE_ADMIN,
    ROLE_USER,
    STATE_ACTIVE,
    EmailTaken,
    RegistrationClosed,
    UnknownTier,
    UserRecord,
)
from services.store.repos import settings, tiers

_REGISTRATION_LOCK = 0x746F6C6C_72656731  # "tollreg1": serializes sign-ups across replicas


def normalize_email(email: str) -> str:
    return email.strip().lower()


def to_record(row: User) -> UserRecord:
    state = row.state or STATE_ACTIVE
    return UserRecord(
        id=row.id, email=row.email, role=row.role, tier=row.tier,
        created_at=float(row.created_at), disabled=bool(row.disabled) or state != STATE_ACTIVE, state=state,
        budget_usd_day=row.budget_usd_day, budget_usd_month=row.budget_usd_month,
        invited=row.invite_hash is not None,
    )


def create_user(
    db: pw.Database, user_id: str, email: str, password_hash: str, tier: str, now: float
) -> UserRecord:
    """Insert a user; the first one is admin and closes registration, atomically (F6)."""
    with write_txn(db):
        # Under one lock (BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL) "is this
        # the first user?" and "close registration" cannot interleave with another sign-up.
        xact_lock(db, _REGISTRATION_LOCK)
        first = not User.select().exists(db)
        if not first and not settings.registration_open(db):
            raise RegistrationClosed("registration is closed")
        if User.select().where(User.email == email).exists(db):
            raise EmailTaken("a user with this email already exists")
        if tier and not tiers.tier_exists(db, tier):
            raise UnknownTier(f"tier {tier!r} does not exist", metadata={"tier": tier})
        role = ROLE_ADMIN if first else ROLE_USER
        User.insert(
            id=user_id, email=email, password_hash=password_hash, role=role, tier=tier,
            created_at=now, disabled=False,
        ).execute(db)
        if first:
            settings.set_registration_open(db, False)
    return UserRecord(id=user_id, email=email, role=role, tier=tier, created_at=now)


def registration_allowed(db: pw.Database) -> bool:
    """Whether a sign-up would be accepted now (the first one always is)."""
    return not User.select().exists(db) or settings.registration_open(db)


def find_login(db: pw.Database, email: str) -> tuple[UserRecord, str] | None:
    """The user with this email and their password hash (which never leaves the store's
    callers in auth), or None."""
    row = User.select().where(User.email == email).first(db)
    return (to_record(row), row.password_hash) if row else None


def set_password_hash(db: pw.Database, user_id: str, password_hash: str) -> None:
    User.update(password_hash=password_hash).where(User.id == user_id).execute(db)


def find_password_hash(db: pw.Database, user_id: str) -> str | None:
    row = User.select(User.password_hash).where(User.id == user_id).first(db)
    return row.password_hash if row else None


def get_user(db: pw.Database, user_id: str) -> UserRecord | None:
    row = User.select().where(User.id == user_id).first(db)
    return to_record(row) if row else None


def user_exists(db: pw.Database, user_id: str) -> bool:
    return User.select().where(User.id == user_id).exists(db)


def list_users(db: pw.Database) -> list[UserRecord]:
    query = User.select().order_by(User.created_at, User.id)
    return [to_record(r) for r in query.execute(db)]
