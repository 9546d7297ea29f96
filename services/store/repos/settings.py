"""The settings table: small string values by key, such as whether registration is open."""

from __future__ import annotations

import peewee as pw

from services.store.models import Setting

REGISTRATION_OPEN = "registration_open"


def get_setting(db: pw.Database, key: str, default: str | None = None) -> str | None:
    row = Setting.select(Setting.value).where(Setting.key == key).first(db)
    return row.value if row else default


def set_setting(db: pw.Database, key: str, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError("setting values are strings")
    (Setting.insert(key=key, value=value)
        .on_conflict(conflict_target=[Setting.key], update={Setting.value: value})
        .execute(db))


def set_once(db: pw.Database, key: str, value: str) -> str:
    """Stores `value` unless `key` already holds one; returns what the key holds now (the first
    writer wins, also between replicas starting together)."""
    Setting.insert(key=key, value=value).on_conflict_ignore().execute(db)
    return get_setting(db, key, value) or value


def registration_open(db: pw.Database) -> bool:
    # Unset means open: the first sign-up must be possible on a fresh store.
    return get_setting(db, REGISTRATION_OPEN, "true") == "true"


def set_registration_open(db: pw.Database, is_open: bool) -> None:
    set_setting(db, REGISTRATION_OPEN, "true" if is_open else "false")
