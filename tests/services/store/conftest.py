"""Fixtures for store tests: one Store per test, on SQLite (tmp_path) and on real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from services.auth.sealing import Sealer, key_id
from services.auth.secrets import derive
from services.clock import FakeClock
from services.store import Store
from tests.support.postgres import postgres_url  # noqa: F401  (fixture, used by db_url)

SECRET = bytes(range(32))
PEPPER = derive(SECRET, "api-key-pepper")
SEAL_KEY = derive(SECRET, "provider-key-seal")
SEAL_KID = key_id(SEAL_KEY)


def make_sealer(*keys: bytes) -> Sealer:
    """A Sealer over `keys`; the last one is current."""
    keys = keys or (SEAL_KEY,)
    return Sealer({key_id(k): k for k in keys}, key_id(keys[-1]))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None  # the default: {data_dir}/tollgate.db
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture
async def make_store(db_url: str | None, tmp_path: Any, clock: FakeClock) -> AsyncIterator[StoreFactory]:
    """Start Stores on the test's database (restarts, replicas); all closed afterwards."""
    stores: list[Store] = []

    async def factory(start: bool = True, **kwargs: Any) -> Store:
        store = Store(db_url, str(tmp_path), clock, **kwargs)
        stores.append(store)
        if start:
            await store.start()
        return store

    yield factory
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    return await make_store()


def _dump(db: Any) -> str:
    out = []
    for table in db.get_tables():
        for row in db.execute_sql(f'SELECT * FROM "{table}"').fetchall():
            out.append(f"{table}: {row!r}")
    return "\n".join(out)


async def dump_text(store: Store) -> str:
    """Every row of every table as text: what a leaked backup would show."""
    return await store.run(_dump)
