"""KeyVault: issuing API keys and finding the one a plaintext names, over the store's hashes.

The store keeps only HMAC-SHA256(pepper, key) (RELIABILITY F1); the pepper stays here. A key is
returned in clear once, when it is made; a lookup hashes the presented key, reads the row stored
under that hash and compares the digests in constant time (F4).
"""

from __future__ import annotations

from typing import Any

from services.auth.api_keys import hash_key, key_prefix, looks_valid, new_api_key, verify
from services.clock import Clock
from services.core.errors import InvalidArgument
from services.store.records import KIND_API, KIND_TOKEN, ApiKeyRecord
from services.store.repos.ids import API_KEY_PREFIX, new_id
from services.store.store import Store


class KeyVault:
    """API keys and tokens: made here, stored as hashes, looked up by plaintext."""

    def __init__(self, store: Store, pepper: bytes, clock: Clock) -> None:
        if not pepper:
            raise ValueError("KeyVault needs a non-empty pepper for API-key hashes")
        self._store = store
        self._pepper = pepper
        self._clock = clock

    def __repr__(self) -> str:
        return "KeyVault()"  # never the pepper

    async def create(
        self,
        *,
        name: str,
        email: str,
        tier: str,
        user_id: str | None = None,
        kind: str = KIND_API,
        expires_at: float | None = None,
        limits: dict[str, Any] | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """A new key: its record and the plaintext, which is returned this once and never stored.
        UnknownTier / UnknownUser (from the store) when the tier or user does not exist."""
        if kind not in (KIND_API, KIND_TOKEN):
            raise InvalidArgument(f"api key kind must be {KIND_API!r} or {KIND_TOKEN!r}")
        plaintext = new_api_key()
        record = ApiKeyRecord(
            id=new_id(API_KEY_PREFIX), prefix=key_prefix(plaintext), name=name, email=email,
            tier=tier, user_id=user_id, kind=kind, created_at=self._clock.now(),
            expires_at=expires_at, **(limits or {}),
        )
        await self._store.insert_api_key(record, hash_key(self._pepper, plaintext))
        return record, plaintext

    async def find(self, plaintext: str) -> ApiKeyRecord | None:
        """The active key for this plaintext; None if malformed, unknown, revoked or expired."""
        if not looks_valid(plaintext):
            return None  # a typo or garbage never reaches the database
        found = await self._store.find_api_key_by_hash(hash_key(self._pepper, plaintext))
        if found is None:
            return None
        record, stored_hash = found
        if not verify(self._pepper, plaintext, stored_hash):  # F4: compare_digest on digests
            return None
        return record if record.active(self._clock.now()) else None
