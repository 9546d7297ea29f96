"""The `postgres_url` fixture: a fresh, uniquely named PostgreSQL schema per test.

Reads DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test) as the server and
database to use. Each test gets its own schema, selected through the URL itself
(`?options=-csearch_path=<schema>&application_name=<schema>`), so any client handed the URL
(peewee, psycopg2, psql, a spawned gateway) lands in it; a schema costs milliseconds where a
database costs a second. The schema is dropped afterwards. When the server is unreachable the
test fails under CI=true (a CI without PostgreSQL is broken) and is skipped with the reason
otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _connect(url: str) -> Any:
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=3)
    conn.autocommit = True
    return conn


def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("options", "application_name")]
    query += [("options", f"-csearch_path={schema}"), ("application_name", schema)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{parts.username}:***@{host}", parts.path, parts.query, ""))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections see only a new, empty schema (also their application_name)."""
    base = os.environ.get("DATABASE_URL") or DEFAULT_URL
    try:
        admin = _connect(base)
    except Exception as exc:  # psycopg2 missing or server unreachable
        reason = (
            f"PostgreSQL at {_redacted(base)} is unreachable ({type(exc).__name__}); "
            "start it with `bash ../shared/services/up` or set DATABASE_URL"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"tg_test_{uuid.uuid4().hex[:16]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{schema}"')
        yield _with_schema(base, schema)
    finally:
        try:
            with admin.cursor() as cur:
                # End whatever the test left connected to its schema, then drop it.
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()",
                    (schema,),
                )
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            admin.close()
