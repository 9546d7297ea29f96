"""ProviderSecrets: provider keys and loaded models' keys, sealed here, stored sealed, opened here.

AES-256-GCM with the row id as associated data (sealing.py, RELIABILITY F2); the store keeps and
returns only the sealed values. Every provider key in clear that passes through here (added,
opened, or checked at start-up) is made known to the scrubber, and forgotten when deleted
(issue 15 point 3), so no log line or error carries it.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.auth.sealing import Sealer, SealError, mask, sealed_key_id
from services.clock import Clock
from services.core.errors import InvalidArgument
from services.core.scrub import Scrubber
from services.store.records import LoadedModelRecord, ProviderKeyNotFound, ProviderKeyRecord
from services.store.repos.ids import LOADED_MODEL_PREFIX, PROVIDER_KEY_PREFIX, new_id
from services.store.store import Store

SCRUB_PREFIX = "pk:"


class ProviderSecrets:
    """The one place a stored upstream key is sealed or opened."""

    def __init__(self, store: Store, sealer: Sealer, clock: Clock, scrubber: Scrubber, secret_hint: str) -> None:
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self._scrubber = scrubber
        self._secret_hint = secret_hint  # where the server secret comes from, named by check_sealed()

    def __repr__(self) -> str:
        return f"ProviderSecrets({self._sealer!r})"

    async def add(
        self,
        *,
        user_id: str | None,
        provider_kind: str,
        name: str = "",
        base_url: str = "",
        secret: str,
        models: Iterable[str] = (),
        default_model: str = "",
        priority: int = 0,
        daily_quota: int = 0,
        rpm: int = 0,
    ) -> ProviderKeyRecord:
        """Store a provider key sealed with the current key, the row id as AAD (F2)."""
        if not isinstance(secret, str) or not secret:
            raise InvalidArgument("provider key secret must be non-empty")
        if not provider_kind:
            raise InvalidArgument("provider_kind must be non-empty")
        if daily_quota < 0 or rpm < 0:
            raise InvalidArgument("daily_quota and rpm must be >= 0 (0 = unlimited)")
        key_id = new_id(PROVIDER_KEY_PREFIX)
        record = ProviderKeyRecord(
            id=key_id, user_id=user_id, provider_kind=provider_kind, name=name,
            base_url=base_url, mask=mask(secret), models=[str(m) for m in models],
            default_model=default_model, priority=int(priority), daily_quota=int(daily_quota),
            rpm=int(rpm), created_at=self._clock.now(),
        )
        sealed = self._sealer.seal(key_id, secret)
        self._scrubber.set(SCRUB_PREFIX + key_id, secret)
        return await self._store.insert_provider_key(record, sealed)

    async def delete(self, key_id: str, user_id: str | None) -> bool:
        """Delete a key of exactly this owner (None = shared); False when there is none."""
        deleted = await self._store.delete_provider_key(key_id, user_id)
        if deleted:
            self._scrubber.drop(SCRUB_PREFIX + key_id)
        return deleted

    async def open(self, key_id: str) -> str:
        """The provider key in clear, for the router only. Raises ProviderKeyNotFound or
        SealError (tampered, moved to another row, sealing key not configured)."""
        sealed = await self._store.get_sealed_provider_key(key_id)
        if sealed is None:
            raise ProviderKeyNotFound("provider key not found", metadata={"provider_key_id": key_id})
        plain = self._sealer.open(key_id, sealed)
        self._scrubber.set(SCRUB_PREFIX + key_id, plain)  # added on another replica: known before its first use
        return plain

    async def add_loaded_model(self, record: LoadedModelRecord, secret: str = "") -> LoadedModelRecord:
        """Persist a loaded model; its key (if any) sealed with the row id as AAD, like provider keys.
        AlreadyExists when the name is taken."""
        record.id = record.id or new_id(LOADED_MODEL_PREFIX)
        sealed = self._sealer.seal(record.id, secret) if secret else ""
        return await self._store.insert_loaded_model(record, sealed)

    async def open_loaded_model(self, model_id: str) -> str:
        """A loaded model's upstream key in clear, for the router only ("" when it has none)."""
        sealed = await self._store.get_sealed_loaded_model_key(model_id)
        return self._sealer.open(model_id, sealed) if sealed else ""

    async def check_sealed(self) -> None:
        """At start-up: every stored provider key opens with a configured sealing key.

        RELIABILITY F2: a sealing key that went missing stops start-up and is named, rather
        than surfacing later as a provider failure on the hot path. Each key opened is known to
        the scrubber from then on."""
        for key_id, sealed in await self._store.all_sealed_provider_keys():
            kid = sealed_key_id(sealed)
            if kid not in self._sealer.key_ids:
                raise SealError(
                    f"provider key {key_id} is sealed with key id {kid!r}, which is not "
                    f"configured (configured: {', '.join(sorted(self._sealer.key_ids))}); "
                    f"restore the server secret it was sealed with ({self._secret_hint}) "
                    "or delete and re-add that provider key",
                    metadata={"provider_key_id": key_id, "key_id": kid},
                )
            self._scrubber.set(SCRUB_PREFIX + key_id, self._sealer.open(key_id, sealed))
