"""open_database: URLs, SQLite pragmas, error messages without passwords; the worker thread."""

from __future__ import annotations

import asyncio
import threading

import peewee as pw
import pytest
from playhouse.pool import PooledPostgresqlDatabase

from services.clock import SystemClock
from services.store import Store, open_database, redact_url
from services.auth.key_vault import KeyVault
from tests.services.store.conftest import PEPPER


def test_default_is_sqlite_file_in_data_dir(tmp_path):
    for url in (None, "", "sqlite://", "sqlite:///"):
        db = open_database(url, str(tmp_path / "data"))
        assert isinstance(db, pw.SqliteDatabase)
        assert db.database == str(tmp_path / "data" / "tollgate.db")


def test_sqlite_url_path_is_honoured(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/other/x.db", "/nonexistent")
    assert db.database == f"{tmp_path}/other/x.db"
    assert (tmp_path / "other").is_dir()


def test_postgres_urls_parse(tmp_path):
    for scheme in ("postgresql", "postgres"):
        db = open_database(f"{scheme}://bob:p%40ss@127.0.0.1:5433/gw?sslmode=disable", str(tmp_path))
        assert isinstance(db, PooledPostgresqlDatabase)
        assert db.database == "gw"
        params = db.connect_params
        assert params["user"] == "bob" and params["password"] == "p@ss"
        assert params["host"] == "127.0.0.1" and params["port"] == 5433
        assert params["sslmode"] == "disable" and params["connect_timeout"] == 5


@pytest.mark.parametrize(
    "url, words",
    [
        ("mysql://u:hunter2secret@h/db", "not supported"),
        ("postgresql://u:hunter2secret@h:99999/db", "invalid port"),
        ("postgresql://u:hunter2secret@h:abc/db", "invalid port"),
        ("postgresql://u:hunter2secret@h:5432/", "names no database"),
        ("sqlite://u:hunter2secret@h/x.db", "takes no host"),
        ("nonsense-without-scheme", "not supported"),
    ],
)
def test_bad_urls_name_the_problem_without_the_password(tmp_path, url, words):
    with pytest.raises(ValueError) as info:
        open_database(url, str(tmp_path))
    assert words in str(info.value)
    assert "hunter2secret" not in str(info.value)


def test_redact_url():
    assert redact_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_sqlite_pragmas(tmp_path):
    store = Store(None, str(tmp_path), SystemClock())
    await store.start()
    try:
        def pragmas(db):
            return {p: db.execute_sql(f"PRAGMA {p}").fetchone()[0]
                    for p in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")}
        assert await store.run(pragmas) == {
            "journal_mode": "wal", "busy_timeout": 5000, "synchronous": 1, "foreign_keys": 1,
        }
    finally:
        await store.close()


async def test_calls_run_on_the_store_thread_not_the_loop(store):
    name = await store.run(lambda db: threading.current_thread().name)
    assert name.startswith("tollgate-store")
    assert name != threading.current_thread().name


async def test_ping_and_lifecycle(make_store):
    store = await make_store(start=False)
    assert await store.ping() is False  # not started
    with pytest.raises(RuntimeError, match="not started"):
        await store.list_tiers()
    await store.start()
    assert await store.ping() is True
    await store.close()
    await store.close()  # idempotent
    assert await store.ping() is False


async def test_unreachable_postgres_fails_start_without_leaking_password(tmp_path):
    url = "postgresql://u:hunter2secret@127.0.0.1:1/db?connect_timeout=1"
    store = Store(url, str(tmp_path), SystemClock(), retry_budget_s=0.5)
    with pytest.raises(pw.OperationalError) as info:
        await store.start()
    assert "hunter2secret" not in str(info.value)
    assert await store.ping() is False


async def test_killed_postgres_connections_are_replaced(postgres_url, tmp_path):
    import psycopg2

    from services.store import UsageRecord

    store = Store(postgres_url, str(tmp_path), SystemClock())
    await store.start()
    try:
        await asyncio.gather(*(store.list_tiers() for _ in range(8)))  # fill the pool
        admin = psycopg2.connect(postgres_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            # Only this test's connections: the fixture names them after the schema.
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = current_setting('application_name') "
                "AND pid <> pg_backend_pid()"
            )
            assert cur.fetchone()[0] >= 1
        admin.close()
        assert len(await store.list_tiers()) == 6
        await KeyVault(store, PEPPER, SystemClock()).create(name="after-kill", email="e", tier="basic")
        assert await store.insert_usage([UsageRecord(request_id="r1", created_at=1.0)]) == 1
        assert await store.ping()
    finally:
        await store.close()


async def test_lost_postgres_is_retried_briefly_for_reads_never_for_writes(tmp_path):
    from services.clock import FakeClock
    from services.store.db import PG_RECONNECT_BUDGET_S, DbWorker

    clock = FakeClock()
    db = open_database("postgresql://u@127.0.0.1:1/db?connect_timeout=1", str(tmp_path))
    worker = DbWorker(db, clock, threads=1)
    try:
        start = clock.monotonic()
        with pytest.raises(pw.OperationalError):
            await worker.read(lambda db: db.execute_sql("SELECT 1"))
        assert PG_RECONNECT_BUDGET_S <= clock.monotonic() - start < PG_RECONNECT_BUDGET_S + 1
        start = clock.monotonic()
        with pytest.raises(pw.OperationalError):
            await worker.write(lambda db: db.execute_sql("SELECT 1"))
        assert clock.monotonic() == start  # not idempotent: no retry, no waiting
    finally:
        await worker.close()


async def test_sqlite_lock_retries_stop_at_the_budget(tmp_path):
    import sqlite3

    from services.clock import FakeClock
    from services.store.db import DbWorker

    clock = FakeClock()
    db = open_database(None, str(tmp_path), busy_timeout_ms=10)
    worker = DbWorker(db, clock, threads=1, retry_budget_s=2.0)
    await worker.write(lambda db: db.execute_sql("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(tmp_path / "tollgate.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = clock.monotonic()
        with pytest.raises(pw.OperationalError, match="locked"):
            await worker.write(lambda db: db.execute_sql("INSERT INTO t VALUES (1)"))
        assert 2.0 <= clock.monotonic() - start < 3.0
        # Reads are not blocked by the held write lock (WAL).
        assert await worker.read(lambda db: db.execute_sql("SELECT COUNT(*) FROM t").fetchone()[0]) == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await worker.close()


async def test_in_memory_sqlite_works(tmp_path):
    store = Store("sqlite:///:memory:", str(tmp_path), SystemClock())
    await store.start()
    try:
        assert len(await store.list_tiers()) == 6
        vault = KeyVault(store, PEPPER, SystemClock())
        _, plaintext = await vault.create(name="n", email="e", tier="basic")
        assert await vault.find(plaintext) is not None
    finally:
        await store.close()
    assert not (tmp_path / "tollgate.db").exists()
