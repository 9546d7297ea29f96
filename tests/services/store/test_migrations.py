"""Migrations: idempotent, recorded in schema_version, matching the models, safe when racing."""

from __future__ import annotations

import asyncio

from services.store import migrations
from services.store.models import ALL_MODELS

TABLES = {"schema_version", "tiers", "users", "api_keys", "provider_keys", "usage", "settings", "sessions", "audit",
          "alerts"}


async def test_migrate_twice_is_a_no_op(store, clock):
    assert await store.run(migrations.schema_version) == migrations.LATEST
    for _ in range(2):
        assert await store.run(migrations.migrate, clock.now()) == migrations.LATEST
    rows = await store.run(lambda db: db.execute_sql("SELECT version FROM schema_version").fetchall())
    assert [r[0] for r in rows] == [m[0] for m in migrations.MIGRATIONS]


async def test_tables_and_indexes(store):
    assert TABLES <= set(await store.run(lambda db: db.get_tables()))

    def indexes(db):
        out = {}
        for table in ("usage", "api_keys", "users"):
            for ix in db.get_indexes(table):
                out[ix.name] = (tuple(ix.columns), ix.unique)
        return out

    found = await store.run(indexes)
    assert found["usage_created_at"] == (("created_at",), False)
    assert found["usage_key_id_created_at"] == (("key_id", "created_at"), False)
    assert found["usage_user_id_created_at"] == (("user_id", "created_at"), False)
    assert found["api_keys_hash"] == (("hash",), True)
    assert found["users_email"] == (("email",), True)


async def test_models_match_the_migrated_schema(store):
    def columns(db):
        return {m._meta.table_name: {c.name for c in db.get_columns(m._meta.table_name)}
                for m in ALL_MODELS}

    actual = await store.run(columns)
    for model in ALL_MODELS:
        expected = {f.column_name for f in model._meta.sorted_fields}
        assert actual[model._meta.table_name] == expected, model.__name__


async def test_two_replicas_starting_together_both_succeed(make_store):
    a, b = await asyncio.gather(make_store(), make_store())
    assert await a.run(migrations.schema_version) == migrations.LATEST
    assert len(await b.list_tiers()) == 6


async def test_a_new_migration_runs_once(store, clock):
    def m_extra(db):
        db.execute_sql("CREATE TABLE extra (id INTEGER PRIMARY KEY)")  # no IF NOT EXISTS

    n = migrations.LATEST + 1  # whatever the latest shipped migration is
    plan = migrations.MIGRATIONS + ((n, "extra", m_extra),)
    assert await store.run(migrations.migrate, clock.now(), plan) == n
    assert await store.run(migrations.migrate, clock.now(), plan) == n
    assert "extra" in await store.run(lambda db: db.get_tables())
