"""Storage: the async Store facade, its records and errors, and how the database is opened."""

from services.store.db import open_database, redact_url
from services.store.records import (
    KIND_API,
    KIND_TOKEN,
    ROLE_ADMIN,
    ROLE_USER,
    ApiKeyRecord,
    EmailTaken,
    ProviderKeyNotFound,
    ProviderKeyRecord,
    RegistrationClosed,
    TierRecord,
    UnknownTier,
    UnknownUser,
    UsageFilter,
    UsageRecord,
    UserRecord,
)
from services.store.repos.tiers import default_tiers
from services.store.store import Store

__all__ = [
    "KIND_API",
    "KIND_TOKEN",
    "ROLE_ADMIN",
    "ROLE_USER",
    "ApiKeyRecord",
    "EmailTaken",
    "ProviderKeyNotFound",
    "ProviderKeyRecord",
    "RegistrationClosed",
    "Store",
    "TierRecord",
    "UnknownTier",
    "UnknownUser",
    "UsageFilter",
    "UsageRecord",
    "UserRecord",
    "default_tiers",
    "open_database",
    "redact_url",
]
