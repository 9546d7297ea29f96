"""Peewee models for the store's tables, bound through a DatabaseProxy.

The Store runs every query against its own database object (`query.execute(db)`), so the proxy
is only the models' nominal binding: two Stores (two SQLite files, or a test's two replicas)
can live in one process without re-pointing anything global. The tables themselves are
created by migrations.py, not by `create_tables`, so a model edit never silently changes a
deployed schema; tests check the two agree.
"""

from __future__ import annotations

import peewee as pw

database_proxy = pw.DatabaseProxy()


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy


class SchemaVersion(BaseModel):
    version = pw.IntegerField(primary_key=True)
    name = pw.TextField()
    applied_at = pw.DoubleField()

    class Meta:
        table_name = "schema_version"


class Tier(BaseModel):
    name = pw.TextField(primary_key=True)
    rpm = pw.BigIntegerField(default=0)
    rpd = pw.BigIntegerField(default=0)
    tpd = pw.BigIntegerField(default=0)
    tpm_month = pw.BigIntegerField(default=0)
    description = pw.TextField(default="")
    price_usd_month = pw.DoubleField(null=True)
    budget_usd_day = pw.DoubleField(null=True)
    budget_usd_month = pw.DoubleField(null=True)
    edited_at = pw.DoubleField(null=True)  # migration 6: set when an admin created/edited it at run time

    class Meta:
        table_name = "tiers"


class User(BaseModel):
    id = pw.TextField(primary_key=True)
    email = pw.TextField(unique=True)
    password_hash = pw.TextField()
    role = pw.TextField()
    tier = pw.TextField(default="")
    created_at = pw.DoubleField()
    disabled = pw.BooleanField(default=False)
    state = pw.TextField(default="active")
    budget_usd_day = pw.DoubleField(null=True)
    budget_usd_month = pw.DoubleField(null=True)
    invite_hash = pw.TextField(null=True)
    invite_expires_at = pw.DoubleField(null=True)
    deleted_at = pw.DoubleField(null=True)

    class Meta:
        table_name = "users"


class ApiKey(BaseModel):
    id = pw.TextField(primary_key=True)
    hash = pw.TextField(unique=True)
    prefix = pw.TextField()
    name = pw.TextField(default="")
    email = pw.TextField(default="")
    tier = pw.TextField(default="")
    user = pw.ForeignKeyField(
        User, null=True, column_name="user_id", on_delete="CASCADE", lazy_load=False
    )
    kind = pw.TextField()
    created_at = pw.DoubleField()
    revoked_at = pw.DoubleField(null=True)
    expires_at = pw.DoubleField(null=True)
    last_used_at = pw.DoubleField(null=True)
    rpm = pw.BigIntegerField(default=0)
    rpd = pw.BigIntegerField(default=0)
    tpd = pw.BigIntegerField(default=0)
    tpm_month = pw.BigIntegerField(default=0)
    budget_usd_day = pw.DoubleField(null=True)
    budget_usd_month = pw.DoubleField(null=True)

    class Meta:
        table_name = "api_keys"


class ProviderKey(BaseModel):
    id = pw.TextField(primary_key=True)
    user = pw.ForeignKeyField(
        User, null=True, column_name="user_id", on_delete="CASCADE", lazy_load=False
    )
    provider_kind = pw.TextField()
    name = pw.TextField(default="")
    base_url = pw.TextField(default="")
    sealed = pw.TextField()
    mask = pw.TextField()
    models = pw.TextField(default="[]")  # JSON list of model names
    default_model = pw.TextField(default="")
    priority = pw.IntegerField(default=0)
    daily_quota = pw.BigIntegerField(default=0)
    rpm = pw.BigIntegerField(default=0)
    created_at = pw.DoubleField()
    disabled = pw.BooleanField(default=False)

    class Meta:
        table_name = "provider_keys"


class Usage(BaseModel):
    # key_id and user_id are plain text, not foreign keys: the ledger must accept rows for
    # environment keys (AUTH_KEY_01) and outlive deleted users.
    request_id = pw.TextField(primary_key=True)
    key_id = pw.TextField(default="")
    user_id = pw.TextField(default="")
    surface = pw.TextField(default="")
    provider = pw.TextField(default="")
    provider_key_id = pw.TextField(default="")
    model = pw.TextField(default="")
    status = pw.TextField(default="")
    prompt_tokens = pw.BigIntegerField(default=0)
    completion_tokens = pw.BigIntegerField(default=0)
    estimated = pw.BooleanField(default=False)
    cost_usd = pw.DoubleField(default=0.0)
    latency_ms = pw.DoubleField(default=0.0)
    attempts = pw.IntegerField(default=0)
    created_at = pw.DoubleField()
    error = pw.TextField(default="")

    class Meta:
        table_name = "usage"


class Setting(BaseModel):
    key = pw.TextField(primary_key=True)
    value = pw.TextField()

    class Meta:
        table_name = "settings"


class Session(BaseModel):
    # user_id is plain text: the operator's (admin-key) sessions belong to no user row.
    id = pw.TextField(primary_key=True)
    user_id = pw.TextField()
    role = pw.TextField()
    created_at = pw.DoubleField()
    expires_at = pw.DoubleField()
    last_used_at = pw.DoubleField(null=True)
    revoked_at = pw.DoubleField(null=True)
    user_agent = pw.TextField(default="")
    ip = pw.TextField(default="")

    class Meta:
        table_name = "sessions"


class Audit(BaseModel):
    id = pw.TextField(primary_key=True)
    actor = pw.TextField()
    action = pw.TextField()
    target = pw.TextField(default="")
    ip = pw.TextField(default="")
    created_at = pw.DoubleField()
    before = pw.TextField(default="")
    after = pw.TextField(default="")

    class Meta:
        table_name = "audit"


class Alert(BaseModel):
    id = pw.TextField(primary_key=True)
    kind = pw.TextField()
    subject = pw.TextField(default="")
    message = pw.TextField(default="")
    dedupe = pw.TextField(null=True, unique=True)
    created_at = pw.DoubleField()
    delivered = pw.BooleanField(default=False)

    class Meta:
        table_name = "alerts"


ALL_MODELS: tuple[type[BaseModel], ...] = (
    SchemaVersion, Tier, User, ApiKey, ProviderKey, Usage, Setting, Session, Audit, Alert,
)
