"""The tiers table: plans and their limits, with the defaults from seeds 000 and 003."""

from __future__ import annotations

import peewee as pw

from services.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.store.models import ApiKey, Tier, User
from services.store.records import STATE_DELETED, TierRecord

_LIMIT_FIELDS = ("rpm", "rpd", "tpd", "tpm_month")


def default_tiers() -> list[TierRecord]:
    """The plans every fresh store starts with; 0 means unlimited."""
    return [
        TierRecord("basic", rpm=60, rpd=1_000, tpd=100_000,
                   description="60 requests/min, 1,000 requests/day, 100,000 tokens/day"),
        TierRecord("pro", rpm=300, rpd=10_000, tpd=1_000_000,
                   description="300 requests/min, 10,000 requests/day, 1,000,000 tokens/day"),
        TierRecord("enterprise", rpm=1_000, rpd=100_000, tpd=10_000_000,
                   description="1,000 requests/min, 100,000 requests/day, 10,000,000 tokens/day"),
        TierRecord("explorer", rpm=20, tpm_month=100_000,
                   description="Free: 20 requests/min, 100K tokens/month"),
        TierRecord("startup", rpm=60, tpm_month=1_000_000,
                   description="60 requests/min, 1M tokens/month"),
        TierRecord("growth", rpm=200, tpm_month=10_000_000,
                   description="200 requests/min, 10M tokens/month"),
    ]


def to_record(row: Tier) -> TierRecord:
    return TierRecord(
        name=row.name, rpm=int(row.rpm), rpd=int(row.rpd), tpd=int(row.tpd),
        tpm_month=int(row.tpm_month), description=row.description,
        price_usd_month=None if row.price_usd_month is None else float(row.price_usd_month),
        budget_usd_day=float(row.budget_usd_day or 0.0), budget_usd_month=float(row.budget_usd_month or 0.0),
        edited_at=row.edited_at,
    )


def list_edited_tiers(db: pw.Database) -> list[TierRecord]:
    """The plans an admin created or edited at run time (they win over the config's)."""
    q = Tier.select().where(Tier.edited_at.is_null(False)).order_by(Tier.name)
    return [to_record(r) for r in q.execute(db)]


def seed_config_tier(db: pw.Database, tier: TierRecord) -> None:
    """A config-declared plan: inserted, or refreshed from the config unless an admin edited it."""
    validate(tier)
    values = _values(tier)
    update = {getattr(Tier, k): v for k, v in values.items() if k != "name"}
    Tier.insert(**values).on_conflict(conflict_target=[Tier.name], update=update,
                                      where=Tier.edited_at.is_null()).execute(db)


def create_tier(db: pw.Database, tier: TierRecord) -> TierRecord:
    validate(tier)
    # A row the defaults seeded that the config does not declare (never edited) is not a plan in
    # force: creating that name takes the row over. The caller refuses names already in force.
    values = _values(tier)
    update = {getattr(Tier, k): v for k, v in values.items() if k != "name"}
    update[Tier.edited_at] = tier.edited_at
    n = Tier.insert(**values, edited_at=tier.edited_at).on_conflict(
        conflict_target=[Tier.name], update=update, where=Tier.edited_at.is_null()).as_rowcount().execute(db)
    if not n:
        raise AlreadyExists(f"plan {tier.name!r} already exists", reason="PLAN_EXISTS")
    return tier


def update_tier(db: pw.Database, tier: TierRecord) -> TierRecord:
    validate(tier)
    values = {k: v for k, v in _values(tier).items() if k != "name"}
    n = Tier.update(**values, edited_at=tier.edited_at).where(Tier.name == tier.name).execute(db)
    if not n:
        # A config plan the defaults did not seed into this store yet: store it now.
        Tier.insert(**_values(tier), edited_at=tier.edited_at).execute(db)
    return tier


def plan_users(db: pw.Database, name: str) -> int:
    """Users (not deleted) and live admin-issued keys on a plan."""
    users = User.select().where((User.tier == name) & (User.state != STATE_DELETED)).count(db)
    keys = ApiKey.select().where((ApiKey.tier == name) & ApiKey.user.is_null() & ApiKey.revoked_at.is_null()).count(db)
    return int(users) + int(keys)


def delete_tier(db: pw.Database, name: str) -> None:
    with db.atomic():
        if not Tier.select().where(Tier.name == name).exists(db):
            raise NotFound(f"plan {name!r} not found", reason="PLAN_NOT_FOUND")
        n = plan_users(db, name)
        if n:
            raise FailedPrecondition(f"plan {name!r} is in use by {n} user(s) or key(s); move them first",
                                     reason="PLAN_IN_USE")
        Tier.delete().where(Tier.name == name).execute(db)


def list_tiers(db: pw.Database) -> list[TierRecord]:
    return [to_record(r) for r in Tier.select().order_by(Tier.name).execute(db)]


def get_tier(db: pw.Database, name: str) -> TierRecord | None:
    row = Tier.select().where(Tier.name == name).first(db)
    return to_record(row) if row else None


def tier_exists(db: pw.Database, name: str) -> bool:
    return Tier.select().where(Tier.name == name).exists(db)


def upsert_tier(db: pw.Database, tier: TierRecord) -> TierRecord:
    validate(tier)
    values = _values(tier)
    update = {getattr(Tier, k): v for k, v in values.items() if k != "name"}
    Tier.insert(**values).on_conflict(conflict_target=[Tier.name], update=update).execute(db)
    return tier


def seed_default_tiers(db: pw.Database) -> int:
    """Insert the default tiers that are missing; an operator's edits are kept. Returns how
    many were inserted."""
    rows = [_values(t) for t in default_tiers()]
    query = Tier.insert_many(rows).on_conflict(action="NOTHING", conflict_target=[Tier.name])
    return int(query.as_rowcount().execute(db))


def validate(tier: TierRecord) -> None:
    if not tier.name or len(tier.name) > 64 or tier.name.strip() != tier.name:
        raise InvalidArgument("tier name must be 1-64 characters without surrounding spaces")
    for name in _LIMIT_FIELDS:
        value = getattr(tier, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"tier {name} must be a whole number >= 0 (0 = unlimited)")


def _values(tier: TierRecord) -> dict[str, object]:
    return {
        "name": tier.name, "rpm": tier.rpm, "rpd": tier.rpd, "tpd": tier.tpd,
        "tpm_month": tier.tpm_month, "description": tier.description,
        "price_usd_month": tier.price_usd_month, "budget_usd_day": tier.budget_usd_day,
        "budget_usd_month": tier.budget_usd_month,
    }
