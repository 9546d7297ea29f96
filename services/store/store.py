"""Store: the async facade over the database that the rest of the gateway calls.

Every query runs on the DbWorker's threads (for SQLite one writer plus one reader, for
PostgreSQL a small pool), so the event loop never blocks on I/O; password hashing runs on the default executor so a sign-up never
holds the database thread. Methods return records (records.py), never peewee rows.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from services.auth.api_keys import hash_key, key_prefix, looks_valid, new_api_key, verify
from services.auth.passwords import hash_password, needs_rehash, verify_password
from services.auth.sealing import Sealer, SealError, mask, sealed_key_id
from services.auth.secrets import SECRET_FILE, SecretMismatch, secret_fingerprint
from services.clock import Clock
from services.core.errors import InvalidArgument
from services.core.scrub import Scrubber
from services.store import migrations
from services.store.db import (
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_PG_POOL_SIZE,
    DEFAULT_RETRY_BUDGET_S,
    DbWorker,
    is_sqlite,
    open_database,
)
from services.store.records import STATE_SUSPENDED, LoadedModelRecord
from services.store.records import (
    KIND_API,
    KIND_TOKEN,
    ApiKeyRecord,
    EmailTaken,
    ProviderKeyNotFound,
    ProviderKeyRecord,
    RegistrationClosed,
    SessionRecord,
    TierRecord,
    UsageFilter,
    UsageRecord,
    UserRecord,
)
from services.store.repos import api_keys as keys_repo
from services.store.repos import loaded_models as lm_repo
from services.store.repos import provider_keys as pk_repo
from services.store.repos import responses as responses_repo
from services.store.repos import audit as audit_repo
from services.store.repos import sessions as sessions_repo
from services.store.repos import settings as settings_repo
from services.store.repos import tiers as tiers_repo
from services.store.repos import usage as usage_repo
from services.store.repos import users as users_repo
from services.store.repos.ids import API_KEY_PREFIX, PROVIDER_KEY_PREFIX, USER_PREFIX, new_id

LOADED_MODEL_PREFIX = "lm_"

__all__ = ["EmailTaken", "RegistrationClosed", "Store"]

T = TypeVar("T")
DEFAULT_USER_TIER = "basic"
_MAX_EMAIL_LEN = 254
_MAX_PASSWORD_LEN = 4096
SECRET_FINGERPRINT_SETTING = "secret_fingerprint"


class Store:
    """Tiers, users, API keys, provider keys, the usage ledger and settings."""

    def __init__(
        self,
        url: str | None,
        data_dir: str,
        pepper: bytes,
        sealer: Sealer,
        clock: Clock,
        *,
        sqlite_busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        pg_pool_size: int = DEFAULT_PG_POOL_SIZE,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
        secret_source: str = "",
        scrubber: Scrubber | None = None,
    ) -> None:
        if not pepper:
            raise ValueError("Store needs a non-empty pepper for API-key hashes")
        self._url = url
        self._data_dir = data_dir
        self._pepper = pepper
        self._sealer = sealer
        self._clock = clock
        self._busy_timeout_ms = sqlite_busy_timeout_ms
        self._pool_size = pg_pool_size
        self._retry_budget_s = retry_budget_s
        self._worker: DbWorker | None = None
        self._dummy_hash: str | None = None
        self._secret_source = secret_source  # what to name when the secret is not the database's
        # Every provider key in clear that passes through here (opened, added) is made known to the
        # scrubber, and forgotten when deleted (issue 15 point 3).
        self._scrubber = scrubber if scrubber is not None else Scrubber()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database, run migrations, seed the default tiers, check sealed keys."""
        if self._worker is not None:
            return
        db = open_database(
            self._url, self._data_dir,
            busy_timeout_ms=self._busy_timeout_ms, pool_size=self._pool_size,
        )
        threads = 1 if is_sqlite(db) else self._pool_size
        self._worker = DbWorker(db, self._clock, threads=threads, retry_budget_s=self._retry_budget_s)
        try:
            await self._worker.write(migrations.migrate, self._clock.now())
            await self._worker.write(tiers_repo.seed_default_tiers)
            await self._check_secret()
            await self._check_sealed_keys()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.close()

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when the database answers `SELECT 1` within `timeout_s` (readiness)."""
        if self._worker is None:
            return False
        try:
            await asyncio.wait_for(self._read(_select_one), timeout_s)
        except Exception:  # unreachable, timed out, closed: all mean "not ready"
            return False
        return True

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql" (after start)."""
        worker = self._require()
        return "sqlite" if is_sqlite(worker.db) else "postgresql"

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Escape hatch for maintenance and tests: `fn(db, *args)` on the store's worker."""
        return await self._write(fn, *args)

    # --- stored responses (Responses API) ----------------------------------------------------

    async def save_response(self, row: responses_repo.StoredResponse, max_per_owner: int) -> None:
        await self._write(responses_repo.insert_response, row, self._clock.now(), max_per_owner)

    async def get_response(self, rid: str, owner: str) -> responses_repo.StoredResponse | None:
        return await self._read(responses_repo.get_response, rid, owner, self._clock.now())

    async def delete_response(self, rid: str, owner: str) -> bool:
        return await self._write(responses_repo.delete_response, rid, owner, idempotent=True)

    # --- tiers ---------------------------------------------------------------------------

    async def list_tiers(self) -> list[TierRecord]:
        return await self._read(tiers_repo.list_tiers)

    async def get_tier(self, name: str) -> TierRecord | None:
        return await self._read(tiers_repo.get_tier, name)

    async def upsert_tier(self, tier: TierRecord) -> TierRecord:
        return await self._write(tiers_repo.upsert_tier, tier, idempotent=True)

    async def seed_config_tier(self, tier: TierRecord) -> None:
        await self._write(tiers_repo.seed_config_tier, tier, idempotent=True)

    async def list_edited_tiers(self) -> list[TierRecord]:
        return await self._read(tiers_repo.list_edited_tiers)

    async def create_tier(self, tier: TierRecord) -> TierRecord:
        return await self._write(tiers_repo.create_tier, tier)

    async def update_tier(self, tier: TierRecord) -> TierRecord:
        return await self._write(tiers_repo.update_tier, tier, idempotent=True)

    async def delete_tier(self, name: str) -> None:
        await self._write(tiers_repo.delete_tier, name)

    # --- API keys --------------------------------------------------------------------------

    async def create_api_key(
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
        """A new key: its record and the plaintext, which is returned this once and never stored."""
        if kind not in (KIND_API, KIND_TOKEN):
            raise InvalidArgument(f"api key kind must be {KIND_API!r} or {KIND_TOKEN!r}")
        plaintext = new_api_key()
        record = ApiKeyRecord(
            id=new_id(API_KEY_PREFIX), prefix=key_prefix(plaintext), name=name, email=email,
            tier=tier, user_id=user_id, kind=kind, created_at=self._clock.now(),
            expires_at=expires_at, **(limits or {}),
        )
        await self._write(keys_repo.insert_api_key, record, hash_key(self._pepper, plaintext))
        return record, plaintext

    async def find_api_key(self, plaintext: str) -> ApiKeyRecord | None:
        """The active key for this plaintext; None if malformed, unknown, revoked or expired."""
        if not looks_valid(plaintext):
            return None  # a typo or garbage never reaches the database
        found = await self._read(keys_repo.find_by_hash, hash_key(self._pepper, plaintext))
        if found is None:
            return None
        record, stored_hash = found
        if not verify(self._pepper, plaintext, stored_hash):  # F4: compare_digest on digests
            return None
        return record if record.active(self._clock.now()) else None

    async def get_api_key(self, key_id: str, user_id: str | None = None) -> ApiKeyRecord | None:
        """The key by id; with `user_id`, None unless that user owns it (never reveal it exists)."""
        return await self._read(keys_repo.get_api_key, key_id, user_id)

    async def list_api_keys(
        self, user_id: str | None = None, kind: str | None = None, include_revoked: bool = False
    ) -> list[ApiKeyRecord]:
        """Newest first; `user_id` None lists every user's keys (admin views)."""
        return await self._read(keys_repo.list_api_keys, user_id, kind, include_revoked)

    async def revoke_api_key(self, key_id: str, user_id: str | None = None) -> bool:
        return await self._write(
            keys_repo.revoke_api_key, key_id, user_id, self._clock.now(), idempotent=True
        )

    async def active_key_hashes(self) -> dict[str, ApiKeyRecord]:
        """hash -> record for every active key, to fill an in-memory auth cache."""
        return await self._read(keys_repo.active_key_hashes, self._clock.now())

    async def touch_api_keys(self, ids_to_time: dict[str, float]) -> int:
        """Batched last_used_at updates (never moved back); returns rows changed."""
        if not ids_to_time:
            return 0
        return await self._write(keys_repo.touch_api_keys, dict(ids_to_time), idempotent=True)

    # --- users -----------------------------------------------------------------------------

    async def create_user(self, email: str, password: str, *, tier: str = DEFAULT_USER_TIER) -> UserRecord:
        """Sign up. The first user becomes admin and closes registration, atomically even under
        concurrent sign-ups (F6). Raises RegistrationClosed, EmailTaken or InvalidArgument."""
        email = users_repo.normalize_email(email if isinstance(email, str) else "")
        _check_email(email)
        if not isinstance(password, str) or not password or len(password) > _MAX_PASSWORD_LEN:
            raise InvalidArgument(f"password must be 1-{_MAX_PASSWORD_LEN} characters")
        # Cheap pre-check so a closed registration costs no argon2 hash; re-checked under the
        # lock in users_repo.create_user.
        if not await self._read(users_repo.registration_allowed):
            raise RegistrationClosed("registration is closed")
        password_hash = await asyncio.to_thread(hash_password, password)
        return await self._write(
            users_repo.create_user, new_id(USER_PREFIX), email, password_hash, tier,
            self._clock.now(),
        )

    async def authenticate(self, email: str, password: str, *, suspended: bool = False) -> UserRecord | None:
        """The user when email and password match and the account is enabled, else None.

        With `suspended`, a suspended account whose password matches is returned too (its state
        says so), so sign-in can answer "suspended" only to someone who knew the password.
        """
        if not isinstance(email, str) or not isinstance(password, str):
            return None
        found = await self._read(users_repo.find_login, users_repo.normalize_email(email))
        if found is None:
            # Same argon2 work as a real check, so timing does not tell which emails exist.
            await asyncio.to_thread(verify_password, await self._dummy(), password)
            return None
        user, stored = found
        if not await asyncio.to_thread(verify_password, stored, password):
            return None
        if user.disabled and not (suspended and user.state == STATE_SUSPENDED):
            return None
        if needs_rehash(stored):
            fresh = await asyncio.to_thread(hash_password, password)
            await self._write(users_repo.set_password_hash, user.id, fresh, idempotent=True)
        return user

    async def find_user_by_email(self, email: str) -> UserRecord | None:
        found = await self._read(users_repo.find_login, users_repo.normalize_email(email))
        return found[0] if found else None

    async def get_user(self, user_id: str) -> UserRecord | None:
        return await self._read(users_repo.get_user, user_id)

    async def list_users(self) -> list[UserRecord]:
        return await self._read(users_repo.list_users)

    async def registration_allowed(self) -> bool:
        """Whether a sign-up would be accepted now (the first one always is)."""
        return await self._read(users_repo.registration_allowed)

    async def check_password(self, user_id: str, password: str) -> bool:
        """Whether `password` is this user's (argon2 off the event loop)."""
        stored = await self._read(users_repo.find_password_hash, user_id)
        if stored is None or not isinstance(password, str) or len(password) > _MAX_PASSWORD_LEN:
            return False
        return await asyncio.to_thread(verify_password, stored, password)

    async def set_password(self, user_id: str, password: str) -> None:
        password_hash = await asyncio.to_thread(hash_password, password)
        await self._write(users_repo.set_password_hash, user_id, password_hash, idempotent=True)

    # --- issue 16: the admin's user management -----------------------------------------------

    async def list_users_page(self, query: str = "", plan: str = "", role: str = "", state: str = "",
                              limit: int = 50, offset: int = 0) -> tuple[list[UserRecord], int]:
        return await self._read(users_repo.list_users_page, query, plan, role, state, limit, offset)

    async def insert_user(self, email: str, password: str | None, tier: str, role: str,
                          invite_hash: str | None = None, invite_expires_at: float | None = None) -> UserRecord:
        """An admin-created user; without a password it can only sign in after accepting its invite."""
        email = users_repo.normalize_email(email)
        _check_email(email)
        # An unusable hash until the invite sets one: no password verifies against it.
        secret = password if password else "invite:" + new_id("")
        password_hash = await asyncio.to_thread(hash_password, secret)
        return await self._write(users_repo.insert_user, new_id(USER_PREFIX), email, password_hash, tier, role,
                                 self._clock.now(), invite_hash, invite_expires_at)

    async def update_user(self, user_id: str, changes: dict[str, Any]) -> tuple[UserRecord, UserRecord] | None:
        return await self._write(users_repo.update_user, user_id, dict(changes))

    async def revoke_user_keys(self, user_id: str) -> int:
        return await self._write(keys_repo.revoke_user_keys, user_id, self._clock.now(), idempotent=True)

    async def count_active_keys(self, user_id: str) -> int:
        return await self._read(keys_repo.count_active, user_id, self._clock.now())

    async def find_invite(self, invite_hash: str) -> tuple[UserRecord, float | None] | None:
        return await self._read(users_repo.find_invite, invite_hash)

    async def accept_invite(self, user_id: str, invite_hash: str, password: str) -> bool:
        password_hash = await asyncio.to_thread(hash_password, password)
        return await self._write(users_repo.accept_invite, user_id, invite_hash, password_hash)

    # --- audit and alerts (issue 16) ---------------------------------------------------------

    async def insert_audit(self, rec: Any) -> None:
        await self._write(audit_repo.insert_audit, rec)

    async def list_audit(self, actor: str = "", action: str = "", since: float = 0.0, until: float = 0.0,
                         limit: int = 50, offset: int = 0) -> tuple[list[Any], int]:
        return await self._read(audit_repo.list_audit, actor, action, since, until, limit, offset)

    async def insert_alert(self, rec: Any, dedupe: str | None) -> bool:
        return await self._write(audit_repo.insert_alert, rec, dedupe, idempotent=True)

    async def mark_alert_delivered(self, alert_id: str) -> None:
        await self._write(audit_repo.mark_delivered, alert_id, idempotent=True)

    async def list_alerts(self, limit: int = 50, offset: int = 0) -> tuple[list[Any], int]:
        return await self._read(audit_repo.list_alerts, limit, offset)

    # --- sessions --------------------------------------------------------------------------

    async def insert_session(self, rec: SessionRecord) -> SessionRecord:
        return await self._write(sessions_repo.insert_session, rec)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        return await self._read(sessions_repo.get_session, session_id)

    async def list_sessions(self, user_id: str) -> list[SessionRecord]:
        """The user's live sessions, newest first."""
        return await self._read(sessions_repo.list_live, user_id, self._clock.now())

    async def count_sessions(self, user_id: str) -> int:
        return await self._read(sessions_repo.count_live, user_id, self._clock.now())

    async def touch_session(self, session_id: str) -> None:
        await self._write(sessions_repo.touch, session_id, self._clock.now(), idempotent=True)

    async def revoke_session(self, session_id: str, user_id: str | None = None) -> bool:
        return await self._write(sessions_repo.revoke, session_id, user_id, self._clock.now(), idempotent=True)

    async def revoke_sessions(self, user_id: str, except_id: str = "") -> int:
        return await self._write(sessions_repo.revoke_all, user_id, self._clock.now(), except_id, idempotent=True)

    async def set_registration_open(self, is_open: bool) -> None:
        await self._write(settings_repo.set_registration_open, bool(is_open), idempotent=True)

    async def registration_open(self) -> bool:
        return await self._read(settings_repo.registration_open)

    # --- provider keys -----------------------------------------------------------------------

    async def add_provider_key(
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
        self._scrubber.set("pk:" + key_id, secret)
        return await self._write(pk_repo.insert_provider_key, record, sealed)

    async def list_provider_keys(self, user_id: str | None = None) -> list[ProviderKeyRecord]:
        """user_id None: the gateway's shared keys; user_id X: only X's own keys."""
        return await self._read(pk_repo.list_provider_keys, user_id)

    async def list_all_provider_keys(self) -> list[ProviderKeyRecord]:
        """Shared and every user's keys (for the router's candidate cache)."""
        return await self._read(pk_repo.list_all_provider_keys)

    async def get_provider_key(self, key_id: str, user_id: str | None) -> ProviderKeyRecord | None:
        """None unless the key belongs to exactly this owner (None = shared)."""
        return await self._read(pk_repo.get_provider_key, key_id, user_id)

    async def delete_provider_key(self, key_id: str, user_id: str | None) -> bool:
        deleted = await self._write(pk_repo.delete_provider_key, key_id, user_id, idempotent=True)
        if deleted:
            self._scrubber.drop("pk:" + key_id)
        return deleted

    async def set_provider_key_disabled(self, key_id: str, disabled: bool) -> bool:
        """Disable a key the provider refused (its 401/403), or re-enable it."""
        return await self._write(pk_repo.set_disabled, key_id, bool(disabled), idempotent=True)

    async def open_provider_key(self, key_id: str) -> str:
        """The provider key in clear, for the router only. Raises ProviderKeyNotFound or
        SealError (tampered, moved to another row, sealing key not configured)."""
        sealed = await self._read(pk_repo.get_sealed, key_id)
        if sealed is None:
            raise ProviderKeyNotFound("provider key not found", metadata={"provider_key_id": key_id})
        plain = self._sealer.open(key_id, sealed)
        self._scrubber.set("pk:" + key_id, plain)  # added on another replica: known before its first use
        return plain

    # --- loaded models (issue 19) ------------------------------------------------------------

    async def add_loaded_model(self, record: LoadedModelRecord, secret: str = "") -> LoadedModelRecord:
        """Persist a loaded model; its key (if any) sealed with the row id as AAD, like provider keys.
        AlreadyExists when the name is taken."""
        record.id = record.id or new_id(LOADED_MODEL_PREFIX)
        record.created_at = record.created_at or self._clock.now()
        record.has_key = bool(secret)
        sealed = self._sealer.seal(record.id, secret) if secret else ""
        return await self._write(lm_repo.insert, record, sealed)

    async def list_loaded_models(self) -> list[LoadedModelRecord]:
        return await self._read(lm_repo.list_all)

    async def remove_loaded_model(self, name: str) -> LoadedModelRecord | None:
        return await self._write(lm_repo.delete_by_name, name)

    async def open_loaded_model_key(self, model_id: str) -> str:
        """A loaded model's upstream key in clear, for the router only ("" when it has none)."""
        sealed = await self._read(lm_repo.get_sealed, model_id)
        return self._sealer.open(model_id, sealed) if sealed else ""

    # --- usage ledger ------------------------------------------------------------------------

    async def insert_usage(self, rows: list[UsageRecord]) -> int:
        """Batch insert; a request_id already present is a no-op. Returns rows inserted."""
        if not rows:
            return 0
        return await self._write(usage_repo.insert_usage, list(rows), idempotent=True)

    async def upsert_usage(self, rows: list[UsageRecord]) -> int:
        """Batch write where a final row replaces its request's `in_flight` marker (RELIABILITY B7);
        any other request_id already present is a no-op. Returns rows inserted or upgraded."""
        if not rows:
            return 0
        return await self._write(usage_repo.upsert_usage, list(rows), idempotent=True)

    async def interrupt_in_flight(self, owner: str, started_at: float, stale_before: float) -> int:
        """Markers of requests that died with their process become `interrupted` (RELIABILITY B7)."""
        return await self._write(usage_repo.interrupt_in_flight, owner, started_at, stale_before, idempotent=True)

    async def list_usage(self, filter: UsageFilter, limit: int = 100, offset: int = 0) -> list[UsageRecord]:  # noqa: A002
        """Newest first, at most usage_repo.MAX_PAGE rows."""
        return await self._read(usage_repo.list_usage, filter, limit, offset)

    async def count_usage(self, filter: UsageFilter) -> int:  # noqa: A002
        return await self._read(usage_repo.count_usage, filter)

    async def usage_totals(self, filter: UsageFilter) -> dict[str, Any]:  # noqa: A002
        """{requests, prompt_tokens, completion_tokens, cost_usd, by_status: {status: n},
        by_model: {model: {requests, prompt_tokens, completion_tokens, cost_usd}}}."""
        return await self._read(usage_repo.usage_totals, filter)

    async def usage_by_day(self, filter: UsageFilter) -> list[tuple[int, int, int, int, float]]:  # noqa: A002
        return await self._read(usage_repo.usage_by_day, filter)

    async def tokens_used_since(self, key_id: str, since: float) -> int:
        return await self._read(usage_repo.tokens_used_since, key_id, since)

    # --- settings ----------------------------------------------------------------------------

    async def get_setting(self, key: str, default: str | None = None) -> str | None:
        return await self._read(settings_repo.get_setting, key, default)

    async def set_setting(self, key: str, value: str) -> None:
        await self._write(settings_repo.set_setting, key, value, idempotent=True)

    # --- internals ---------------------------------------------------------------------------

    def _require(self) -> DbWorker:
        if self._worker is None:
            raise RuntimeError("Store is not started (call await store.start())")
        return self._worker

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._require().read(fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any, idempotent: bool = False) -> T:
        return await self._require().write(fn, *args, idempotent=idempotent)

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(hash_password, "tollgate-timing-equalizer")
        return self._dummy_hash

    async def _check_secret(self) -> None:
        # Issue 15 point 4: a replica with another server secret would hash every API key
        # differently and answer 401 to all of them, silently. The store keeps a MAC of a constant
        # under the secret from its first start; a different secret stops start-up here.
        mine = secret_fingerprint(self._pepper)
        stored = await self._write(settings_repo.set_once, SECRET_FINGERPRINT_SETTING, mine, idempotent=True)
        if not hmac.compare_digest(stored.encode(), mine.encode()):
            raise SecretMismatch(
                f"the server secret ({self._secret_source or 'TOLLGATE_SECRET_KEY, or ' + self._secret_file()}) "
                "is not the one this database was first started with, so every API key would be refused; "
                "start with the original secret (every replica must share one TOLLGATE_SECRET_KEY)")

    def _secret_file(self) -> str:
        return os.path.join(self._data_dir, SECRET_FILE) + " when it is unset"

    async def _check_sealed_keys(self) -> None:
        # RELIABILITY F2: a sealing key that went missing stops start-up and is named, rather
        # than surfacing later as a provider failure on the hot path.
        for key_id, sealed in await self._read(pk_repo.all_sealed):
            kid = sealed_key_id(sealed)
            if kid not in self._sealer.key_ids:
                raise SealError(
                    f"provider key {key_id} is sealed with key id {kid!r}, which is not "
                    f"configured (configured: {', '.join(sorted(self._sealer.key_ids))}); "
                    "restore the server secret it was sealed with (TOLLGATE_SECRET_KEY or "
                    f"{self._data_dir}/secret.key) or delete and re-add that provider key",
                    metadata={"provider_key_id": key_id, "key_id": kid},
                )
            self._scrubber.set("pk:" + key_id, self._sealer.open(key_id, sealed))


def _select_one(db: Any) -> int:
    return int(db.execute_sql("SELECT 1").fetchone()[0])


def _check_email(email: str) -> None:
    local, at, domain = email.partition("@")
    if (
        not at or not local or "." not in domain or domain.startswith(".")
        or len(email) > _MAX_EMAIL_LEN or "@" in domain
        or any(c.isspace() or ord(c) < 32 for c in email)
    ):
        raise InvalidArgument("email is not a valid address")
