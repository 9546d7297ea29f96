"""Numbered schema migrations, run at start-up; `schema_version` records which have run.

Each migration is a function of the database, applied once in its own transaction (DDL is
transactional on both SQLite and PostgreSQL). Replicas starting together are serialized (a
PostgreSQL advisory lock; SQLite's write lock), and the DDL itself says IF NOT EXISTS, so
running the runner twice, or concurrently, is harmless. Migrations are frozen once shipped:
a schema change is a new numbered function, never an edit of an old one.
"""

from __future__ import annotations

from collections.abc import Callable

import peewee as pw

from services.store.db import write_txn, xact_lock

_MIGRATION_LOCK = 0x746F6C6C_6D696772  # "tollmigr": one advisory-lock key for the runner

# One DDL text serves both dialects: SQLite maps BIGINT/DOUBLE PRECISION/BOOLEAN to its
# INTEGER/REAL/NUMERIC affinities, and TRUE/FALSE literals exist since SQLite 3.23.
_M001 = (
    """CREATE TABLE IF NOT EXISTS tiers (
        name TEXT NOT NULL PRIMARY KEY,
        rpm BIGINT NOT NULL DEFAULT 0,
        rpd BIGINT NOT NULL DEFAULT 0,
        tpd BIGINT NOT NULL DEFAULT 0,
        tpm_month BIGINT NOT NULL DEFAULT 0,
        description TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS users (
        id TEXT NOT NULL PRIMARY KEY,
        email TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        tier TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users (email)",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT NOT NULL PRIMARY KEY,
        hash TEXT NOT NULL,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        email TEXT NOT NULL DEFAULT '',
        tier TEXT NOT NULL DEFAULT '',
        user_id TEXT NULL REFERENCES users (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION NULL,
        expires_at DOUBLE PRECISION NULL,
        last_used_at DOUBLE PRECISION NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS api_keys_hash ON api_keys (hash)",
    "CREATE INDEX IF NOT EXISTS api_keys_user_id ON api_keys (user_id)",
    """CREATE TABLE IF NOT EXISTS provider_keys (
        id TEXT NOT NULL PRIMARY KEY,
        user_id TEXT NULL REFERENCES users (id) ON DELETE CASCADE,
        provider_kind TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        base_url TEXT NOT NULL DEFAULT '',
        sealed TEXT NOT NULL,
        mask TEXT NOT NULL,
        models TEXT NOT NULL DEFAULT '[]',
        default_model TEXT NOT NULL DEFAULT '',
        priority INTEGER NOT NULL DEFAULT 0,
        daily_quota BIGINT NOT NULL DEFAULT 0,
        rpm BIGINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE)""",
    "CREATE INDEX IF NOT EXISTS provider_keys_user_id ON provider_keys (user_id)",
    """CREATE TABLE IF NOT EXISTS usage (
        request_id TEXT NOT NULL PRIMARY KEY,
        key_id TEXT NOT NULL DEFAULT '',
        user_id TEXT NOT NULL DEFAULT '',
        surface TEXT NOT NULL DEFAULT '',
        provider TEXT NOT NULL DEFAULT '',
        provider_key_id TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT '',
        prompt_tokens BIGINT NOT NULL DEFAULT 0,
        completion_tokens BIGINT NOT NULL DEFAULT 0,
        estimated BOOLEAN NOT NULL DEFAULT FALSE,
        cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        latency_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        error TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS usage_created_at ON usage (created_at)",
    "CREATE INDEX IF NOT EXISTS usage_key_id_created_at ON usage (key_id, created_at)",
    "CREATE INDEX IF NOT EXISTS usage_user_id_created_at ON usage (user_id, created_at)",
    """CREATE TABLE IF NOT EXISTS settings (
        key TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL)""",
)


def m001_initial(db: pw.Database) -> None:
    """Every table and index of the first release."""
    for statement in _M001:
        db.execute_sql(statement)


# Issue 16 (accounts): sessions that can be revoked, user state and budgets, invites, plan prices
# and budgets, per-token limits and budgets, the audit log and the alerts list.
_M003 = (
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT NOT NULL PRIMARY KEY,
        user_id TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION NULL,
        revoked_at DOUBLE PRECISION NULL,
        user_agent TEXT NOT NULL DEFAULT '',
        ip TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id)",
    "ALTER TABLE users ADD COLUMN state TEXT NOT NULL DEFAULT 'active'",
    "ALTER TABLE users ADD COLUMN budget_usd_day DOUBLE PRECISION NULL",
    "ALTER TABLE users ADD COLUMN budget_usd_month DOUBLE PRECISION NULL",
    "ALTER TABLE users ADD COLUMN invite_hash TEXT NULL",
    "ALTER TABLE users ADD COLUMN invite_expires_at DOUBLE PRECISION NULL",
    "ALTER TABLE users ADD COLUMN deleted_at DOUBLE PRECISION NULL",
    "ALTER TABLE tiers ADD COLUMN price_usd_month DOUBLE PRECISION NULL",
    "ALTER TABLE tiers ADD COLUMN budget_usd_day DOUBLE PRECISION NULL",
    "ALTER TABLE tiers ADD COLUMN budget_usd_month DOUBLE PRECISION NULL",
    "ALTER TABLE api_keys ADD COLUMN rpm BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE api_keys ADD COLUMN rpd BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE api_keys ADD COLUMN tpd BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE api_keys ADD COLUMN tpm_month BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE api_keys ADD COLUMN budget_usd_day DOUBLE PRECISION NULL",
    "ALTER TABLE api_keys ADD COLUMN budget_usd_month DOUBLE PRECISION NULL",
    """CREATE TABLE IF NOT EXISTS audit (
        id TEXT NOT NULL PRIMARY KEY,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        ip TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        before TEXT NOT NULL DEFAULT '',
        after TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS audit_created_at ON audit (created_at)",
    """CREATE TABLE IF NOT EXISTS alerts (
        id TEXT NOT NULL PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT '',
        dedupe TEXT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        delivered BOOLEAN NOT NULL DEFAULT FALSE)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_dedupe ON alerts (dedupe)",
    "CREATE INDEX IF NOT EXISTS alerts_created_at ON alerts (created_at)",
)


def m003_accounts(db: pw.Database) -> None:
    """Issue 16: revocable sessions, user state/budgets/invites, plan prices, token limits, audit, alerts."""
    for statement in _M003:
        db.execute_sql(statement)


_M004 = (
    # Issue 18: Responses API responses kept per caller for previous_response_id and GET/DELETE.
    """CREATE TABLE IF NOT EXISTS stored_responses (
        id TEXT NOT NULL PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        native BOOLEAN NOT NULL DEFAULT FALSE,
        response TEXT NOT NULL,
        items TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS stored_responses_owner_created ON stored_responses (owner, created_at)",
    "CREATE INDEX IF NOT EXISTS stored_responses_expires_at ON stored_responses (expires_at)",
)


def m004_stored_responses(db: pw.Database) -> None:
    """The stored_responses table (Responses API, issue 18)."""
    for statement in _M004:
        db.execute_sql(statement)


# Issue 19 (seed 000's /api/models/load): models loaded at run time, routable on every replica.
# `provider` names the configured provider that serves it (an Ollama), or is '' when the row
# carries its own OpenAI-compatible base URL and key (sealed, the row id as AAD, like provider_keys).
_M005 = (
    """CREATE TABLE IF NOT EXISTS loaded_models (
        id TEXT NOT NULL PRIMARY KEY,
        name TEXT NOT NULL,
        format TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        provider TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL,
        base_url TEXT NOT NULL DEFAULT '',
        upstream_model TEXT NOT NULL,
        sealed TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        context_length BIGINT NOT NULL DEFAULT 0,
        created_by TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS loaded_models_name ON loaded_models (name)",
)


def m005_loaded_models(db: pw.Database) -> None:
    """Issue 19: models loaded through ModelService.LoadModel."""
    for statement in _M005:
        db.execute_sql(statement)


def m006_plan_edits(db: pw.Database) -> None:
    """Issue 16 point 4 / issue 17: plans created or edited at run time are marked, so the config's
    [[tiers]] no longer overwrite them at start-up (the stored edit wins from then on)."""
    db.execute_sql("ALTER TABLE tiers ADD COLUMN edited_at DOUBLE PRECISION NULL")


# Issue 20 point 5: what every replica polls (plans, model aliases in settings, shared provider
# keys, loaded models) bumps one counter, from triggers, whoever writes (any replica, any version of
# the code, a hand-made edit): a replica reads one small row a second and re-reads the rest only
# when it moved. The ledger's writes (usage) touch none of these tables.
WATCHED_TABLES = ("tiers", "settings", "provider_keys", "loaded_models")


def m007_change_counter(db: pw.Database) -> None:
    """Issue 20 point 5: `store_changes.n` counts writes to WATCHED_TABLES."""
    db.execute_sql("CREATE TABLE IF NOT EXISTS store_changes (id INTEGER NOT NULL PRIMARY KEY, n BIGINT NOT NULL)")
    db.execute_sql("INSERT INTO store_changes (id, n) SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM store_changes)")
    if isinstance(db, pw.SqliteDatabase):
        for table in WATCHED_TABLES:
            for event in ("INSERT", "UPDATE", "DELETE"):
                db.execute_sql(
                    f"CREATE TRIGGER IF NOT EXISTS store_changes_{table}_{event.lower()} AFTER {event} ON {table} "
                    "BEGIN UPDATE store_changes SET n = n + 1 WHERE id = 1; END")
        return
    db.execute_sql(
        "CREATE OR REPLACE FUNCTION tollgate_store_changed() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN UPDATE store_changes SET n = n + 1 WHERE id = 1; RETURN NULL; END $$")
    for table in WATCHED_TABLES:  # once per statement (a batch is one change), TRUNCATE included
        db.execute_sql(f"DROP TRIGGER IF EXISTS store_changes_{table} ON {table}")
        db.execute_sql(f"CREATE TRIGGER store_changes_{table} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE PROCEDURE tollgate_store_changed()")


Migration = tuple[int, str, Callable[[pw.Database], None]]

MIGRATIONS: tuple[Migration, ...] = (
    (1, "initial", m001_initial),
    (3, "accounts", m003_accounts),
    (4, "stored_responses", m004_stored_responses),
    (5, "loaded_models", m005_loaded_models),
    (6, "plan_edits", m006_plan_edits),
    (7, "change_counter", m007_change_counter),
)

LATEST = MIGRATIONS[-1][0]


def schema_version(db: pw.Database) -> int:
    """The highest applied migration, 0 on an empty database."""
    if "schema_version" not in db.get_tables():
        return 0
    row = db.execute_sql("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: pw.Database, now: float, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply every migration newer than the recorded version; returns the version reached."""
    _ensure_version_table(db)
    for number, name, fn in migrations:
        with write_txn(db):
            xact_lock(db, _MIGRATION_LOCK)
            # Re-read under the lock: another replica may have applied it meanwhile.
            if _applied(db, number):
                continue
            fn(db)
            db.execute_sql(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)"
                % ((db.param,) * 3),
                (number, name, now),
            )
    return schema_version(db)


def _ensure_version_table(db: pw.Database) -> None:
    with write_txn(db):
        xact_lock(db, _MIGRATION_LOCK)
        db.execute_sql(
            """CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER NOT NULL PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at DOUBLE PRECISION NOT NULL)"""
        )


def _applied(db: pw.Database, number: int) -> bool:
    cursor = db.execute_sql(
        "SELECT 1 FROM schema_version WHERE version = %s" % db.param, (number,)
    )
    return cursor.fetchone() is not None
