"""Fixtures for auth/'s objects over a real Store (SQLite and PostgreSQL, from the store's fixtures)."""

from __future__ import annotations

import pytest

from services.auth.credentials import Credentials
from services.auth.key_vault import KeyVault
from services.auth.provider_secrets import ProviderSecrets
from services.core.scrub import Scrubber
from tests.services.store.conftest import PEPPER, clock, db_url, make_sealer, make_store, store  # noqa: F401  (fixtures)
from tests.support.postgres import postgres_url  # noqa: F401  (fixture, used by db_url)

SECRET_HINT = "TOLLGATE_SECRET_KEY or /data/secret.key"


@pytest.fixture
def vault(store, clock) -> KeyVault:  # noqa: F811
    return KeyVault(store, PEPPER, clock)


@pytest.fixture
def credentials(store, clock) -> Credentials:  # noqa: F811
    return Credentials(store, clock, PEPPER)


@pytest.fixture
def scrubber() -> Scrubber:
    return Scrubber()


@pytest.fixture
def provider_secrets(store, clock, scrubber) -> ProviderSecrets:  # noqa: F811
    return ProviderSecrets(store, make_sealer(), clock, scrubber, SECRET_HINT)
