"""Opening the database (a SQLite WAL file or PostgreSQL) and the worker threads that use it.

peewee is synchronous, so every call runs on a `DbWorker` thread, never on the event loop:
for SQLite one writer thread (no lock fights between our own connections) plus one reader
thread, for PostgreSQL a small pool of threads on pooled thread-local connections.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import peewee as pw
from playhouse import db_url
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase

from services.clock import Clock

T = TypeVar("T")

SQLITE_FILE = "tollgate.db"
DEFAULT_BUSY_TIMEOUT_MS = 5000
DEFAULT_PG_POOL_SIZE = 4
DEFAULT_RETRY_BUDGET_S = 30.0
PG_RECONNECT_BUDGET_S = 5.0
_PG_SCHEMES = ("postgresql", "postgres")
_URL_HELP = "use postgresql://user@host:5432/dbname or sqlite:///path/to/file.db"
# SQLite result codes (low byte): SQLITE_BUSY, SQLITE_LOCKED.
_SQLITE_BUSY_CODES = (5, 6)
# PostgreSQL SQLSTATEs after which the whole transaction was rolled back: safe to run again.
_PG_RETRY_STATES = ("40001", "40P01")


def open_database(
    url: str | None,
    data_dir: str,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    pool_size: int = DEFAULT_PG_POOL_SIZE,
) -> pw.Database:
    """A peewee database for `url`; nothing connects until first use.

    None, "" or `sqlite://` → `{data_dir}/tollgate.db`; `sqlite:///rel.db` / `sqlite:////abs.db`
    → that file; `postgresql://` / `postgres://` → a pooled PostgresqlDatabase. A bad URL
    raises ValueError naming the problem; the password is never part of the message.
    """
    if not url:
        return _sqlite(os.path.join(data_dir, SQLITE_FILE), busy_timeout_ms)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"database URL {redact_url(url)} is malformed ({_URL_HELP})") from None
    try:
        parts.port  # noqa: B018 - urlsplit checks the port lazily; make it fail here
    except ValueError:
        raise ValueError(
            f"database URL {redact_url(url)} has an invalid port (a number 1-65535)"
        ) from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc:
            raise ValueError(
                f"database URL {redact_url(url)}: a sqlite URL takes no host "
                "(sqlite:///relative.db or sqlite:////absolute/path.db)"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return _sqlite(path or os.path.join(data_dir, SQLITE_FILE), busy_timeout_ms)
    if scheme in _PG_SCHEMES:
        return _postgres(url, pool_size)
    raise ValueError(f"database URL scheme {scheme or '(none)'!r} is not supported; {_URL_HELP}")


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
        netloc = f"{parts.username or ''}:***@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        # Unparseable: keep the scheme only, the rest may hold anything.
        return url.split(":", 1)[0] + "://…"


def is_sqlite(db: pw.Database) -> bool:
    return isinstance(db, pw.SqliteDatabase)


def write_txn(db: pw.Database) -> AbstractContextManager[Any]:
    """A write transaction; on SQLite `BEGIN IMMEDIATE`, taking the write lock up front so a
    read-then-write never fails half-way on a lock upgrade."""
    return db.atomic("IMMEDIATE") if is_sqlite(db) else db.atomic()


def xact_lock(db: pw.Database, key: int) -> None:
    """Serialize a critical section across connections and replicas (PostgreSQL advisory lock,
    released at commit). On SQLite `write_txn` already holds the only write lock."""
    if not is_sqlite(db):
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))


def _sqlite(path: str, busy_timeout_ms: int) -> pw.SqliteDatabase:
    if path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return pw.SqliteDatabase(
        path,
        timeout=busy_timeout_ms / 1000,
        pragmas={
            "journal_mode": "wal",  # readers never wait for the writer
            "busy_timeout": busy_timeout_ms,  # a held lock is waited for, not an error
            "synchronous": "normal",  # durable at checkpoints; WAL keeps it consistent
            "foreign_keys": 1,
        },
    )


def _postgres(url: str, pool_size: int) -> PooledPostgresqlDatabase:
    try:
        params = db_url.parse(url, unquote_password=True, unquote_user=True)
    except ValueError:
        raise ValueError(f"database URL {redact_url(url)} is malformed ({_URL_HELP})") from None
    name = params.pop("database", "")
    if not name:
        raise ValueError(f"database URL {redact_url(url)} names no database ({_URL_HELP})")
    options: dict[str, Any] = {
        "max_connections": pool_size,
        "stale_timeout": 300,  # recycle connections a server or proxy may have dropped
        "timeout": 30,  # wait this long for a free pooled connection
        "connect_timeout": 5,  # an unreachable server fails fast (readiness probes)
    }
    options.update(params)  # the URL's query string wins (sslmode=require, ...)
    return PooledPostgresqlDatabase(name, **options)


class DbWorker:
    """Runs blocking database calls on dedicated threads and retries what is safe to retry.

    SQLite: every write runs on ONE writer thread (our own connections never fight over the
    write lock); reads run on a second thread with its own connection, which WAL lets proceed
    while the writer waits on a lock held elsewhere, so key lookups and readiness checks do not
    queue behind a stuck ledger write. PostgreSQL: one pool of `threads` threads, each call on a
    pooled connection (peewee pings idle ones on checkout, so a killed connection is replaced).

    SQLite "database is locked" (another process holds the write lock past busy_timeout) is
    retried with backoff rather than raised (RELIABILITY D5): a busy statement changed nothing.
    On PostgreSQL, deadlocks and serialization failures are retried (the transaction was rolled
    back); dropped connections only for calls marked idempotent.
    """

    def __init__(
        self,
        db: pw.Database,
        clock: Clock,
        *,
        threads: int,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
    ) -> None:
        self.db = db
        self._clock = clock
        self._budget = retry_budget_s
        self._pooled = isinstance(db, PooledDatabase)
        sqlite = is_sqlite(db)
        self._writer = ThreadPoolExecutor(
            max_workers=1 if sqlite else threads, thread_name_prefix="tollgate-store"
        )
        # An in-memory SQLite database exists once per connection: it must keep just one.
        separate_reader = sqlite and db.database != ":memory:"
        self._reader = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="tollgate-store-read")
            if separate_reader else self._writer
        )
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(db, *args)` for a function that only reads; retried on transient errors."""
        return await self._run(self._reader, fn, args, idempotent=True)

    def read_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(db, *args)` on the reader thread, waited for by the calling thread (never the event
        loop's): for a watcher with a thread of its own. Not retried."""
        if self._closed:
            raise RuntimeError("the store is closed")
        return self._reader.submit(self._job, fn, args).result()

    async def write(self, fn: Callable[..., T], *args: Any, idempotent: bool = False) -> T:
        """`fn(db, *args)` on the writer; `idempotent` allows a retry after a lost connection."""
        return await self._run(self._writer, fn, args, idempotent=idempotent)

    async def close(self) -> None:
        """Finish queued calls, then close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        executors = [self._writer] if self._reader is self._writer else [self._writer, self._reader]
        if not self._pooled:
            # A SQLite connection belongs to the thread that opened it: close it there.
            for executor in executors:
                await loop.run_in_executor(executor, self._close_thread_connection)
        for executor in executors:
            await asyncio.to_thread(executor.shutdown, True)
        if self._pooled:
            self.db.close_all()

    async def _run(
        self, executor: ThreadPoolExecutor, fn: Callable[..., T], args: tuple[Any, ...], idempotent: bool
    ) -> T:
        loop = asyncio.get_running_loop()
        started = self._clock.monotonic()
        delay = 0.02
        while True:
            if self._closed:
                raise RuntimeError("the store is closed")
            try:
                return await loop.run_in_executor(executor, self._job, fn, args)
            except (pw.OperationalError, pw.InterfaceError) as exc:
                if self._clock.monotonic() - started >= self._retry_budget(exc, idempotent):
                    raise
            await self._clock.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _job(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._pooled:
            with self.db.connection_context():
                return fn(self.db, *args)
        self.db.connect(reuse_if_open=True)  # this thread's own connection, kept open
        return fn(self.db, *args)

    def _close_thread_connection(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    def _retry_budget(self, exc: Exception, idempotent: bool) -> float:
        """How long this kind of failure may be retried for; 0 means never."""
        orig = getattr(exc, "orig", exc)  # peewee keeps the driver's exception here
        if isinstance(orig, sqlite3.Error):
            code = getattr(orig, "sqlite_errorcode", None)
            busy = code & 0xFF in _SQLITE_BUSY_CODES if code is not None else "locked" in str(orig)
            return self._budget if busy else 0.0
        if getattr(orig, "pgcode", None) in _PG_RETRY_STATES:
            return self._budget
        if idempotent and not is_sqlite(self.db):
            # A lost connection: a few seconds to reconnect (D6), then let the caller decide
            # (the ledger buffers, a request fails) instead of hanging it for the full budget.
            return min(self._budget, PG_RECONNECT_BUDGET_S)
        return 0.0
