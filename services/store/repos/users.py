"""The users table: sign-up (the first user becomes admin), login lookups, listing."""

from __future__ import annotations

import peewee as pw

from services.store.db import write_txn, xact_lock
from services.store.models import User
from services.store.records import (
    ROLE_ADMIN,
    ROLE_USER,
    STATE_ACTIVE,
    STATE_DELETED,
    EmailTaken,
    LastAdmin,
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


# --- issue 16: the admin's view and changes --------------------------------------------------

def list_users_page(db: pw.Database, query: str, plan: str, role: str, state: str, limit: int,
                    offset: int) -> tuple[list[UserRecord], int]:
    """Users matching the filters (email contains `query`; `state` "" = all but deleted), by
    creation, and how many match."""
    q = User.select()
    if query:
        q = q.where(User.email.contains(query.lower()))
    if plan:
        q = q.where(User.tier == plan)
    if role:
        q = q.where(User.role == role)
    q = q.where(User.state == state) if state else q.where(User.state != STATE_DELETED)
    total = q.count(db)
    rows = q.order_by(User.created_at, User.id).limit(limit).offset(offset).execute(db)
    return [to_record(r) for r in rows], total


def insert_user(db: pw.Database, user_id: str, email: str, password_hash: str, tier: str, role: str, now: float,
                invite_hash: str | None, invite_expires_at: float | None) -> UserRecord:
    """An admin-created user (registration state does not matter)."""
    with write_txn(db):
        if User.select().where(User.email == email).exists(db):
            raise EmailTaken("a user with this email already exists")
        if not tiers.tier_exists(db, tier):
            raise UnknownTier(f"tier {tier!r} does not exist", metadata={"tier": tier})
        User.insert(id=user_id, email=email, password_hash=password_hash, role=role, tier=tier, created_at=now,
                    disabled=False, state=STATE_ACTIVE, invite_hash=invite_hash,
                    invite_expires_at=invite_expires_at).execute(db)
    row = User.select().where(User.id == user_id).first(db)
    return to_record(row)


def update_user(db: pw.Database, user_id: str, changes: dict[str, object]) -> tuple[UserRecord, UserRecord] | None:
    """Apply `changes` (tier, role, state, budgets) atomically; (before, after), or None when there is
    no such user (deleted users included). Taking the last active admin's role or state away raises
    LastAdmin, checked under the registration lock so two demotions cannot both pass."""
    with write_txn(db):
        xact_lock(db, _REGISTRATION_LOCK)
        row = User.select().where((User.id == user_id) & (User.state != STATE_DELETED)).first(db)
        if row is None:
            return None
        before = to_record(row)
        if "tier" in changes and not tiers.tier_exists(db, str(changes["tier"])):
            raise UnknownTier(f"plan {changes['tier']!r} does not exist", metadata={"plan": str(changes["tier"])})
        loses_admin = before.role == ROLE_ADMIN and before.state == STATE_ACTIVE and (
            changes.get("role", ROLE_ADMIN) != ROLE_ADMIN or changes.get("state", STATE_ACTIVE) != STATE_ACTIVE)
        if loses_admin and _active_admins(db) <= 1:
            raise LastAdmin("this is the last active admin: make another admin first")
        values = dict(changes)
        if "state" in values:
            values["disabled"] = values["state"] != STATE_ACTIVE
        if "state" in values and values["state"] == STATE_DELETED:
            values["invite_hash"] = None
        User.update(**values).where(User.id == user_id).execute(db)
        after = to_record(User.select().where(User.id == user_id).first(db))
    return before, after


def _active_admins(db: pw.Database) -> int:
    return User.select().where((User.role == ROLE_ADMIN) & (User.state == STATE_ACTIVE)).count(db)


def find_invite(db: pw.Database, invite_hash: str) -> tuple[UserRecord, float | None] | None:
    row = User.select().where((User.invite_hash == invite_hash) & (User.state != STATE_DELETED)).first(db)
    return (to_record(row), row.invite_expires_at) if row else None


def accept_invite(db: pw.Database, user_id: str, invite_hash: str, password_hash: str) -> bool:
    """Set the password and spend the invite, once: a second use of the same token changes nothing."""
    return User.update(password_hash=password_hash, invite_hash=None, invite_expires_at=None).where(
        (User.id == user_id) & (User.invite_hash == invite_hash)).execute(db) > 0
