"""The `postgres_url` fixture: a fresh, uniquely named PostgreSQL database per test.

Reads DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test) as the server to use.
When the server is unreachable the test fails under CI=true (a CI without PostgreSQL is a
broken CI) and is skipped with the reason otherwise. The database is dropped afterwards, with
FORCE, so a test that leaked a connection cannot break the next one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _admin_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=3)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    return conn


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{parts.username}:***@{host}", parts.path, parts.query, ""))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    base = os.environ.get("DATABASE_URL") or DEFAULT_URL
    try:
        admin = _admin_connect(base)
    except Exception as exc:  # psycopg2 missing or server unreachable
        reason = (
            f"PostgreSQL at {_redacted(base)} is unreachable ({type(exc).__name__}); "
            "start it with `bash ../shared/services/up` or set DATABASE_URL"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"tg_test_{uuid.uuid4().hex[:16]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(base, name)
    finally:
        try:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()
