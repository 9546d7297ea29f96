"""Fixtures for accounts/: a real Store (SQLite and PostgreSQL, from the store's fixtures)."""

from tests.services.store.conftest import clock, db_url, make_store, store  # noqa: F401  (fixtures)
from tests.support.postgres import postgres_url  # noqa: F401  (fixture, used by db_url)
