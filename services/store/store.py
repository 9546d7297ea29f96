"""Store: the async facade over the database that the rest of the gateway calls.

Every query runs on the DbWorker's threads (for SQLite one writer plus one reader, for
PostgreSQL a small pool), so the event loop never blocks on I/O. Methods return records
(records.py), never peewee rows. The store only stores: it takes and returns hashes and sealed
values, never a pepper, a sealing key or a secret in clear; hashing, verifying, sealing and
opening are auth/'s (key_vault.py, credentials.py, provider_secrets.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from services.clock import Clock
from services.store import migrations
from services.store.db import (
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_PG_POOL_SIZE,
    DEFAULT_RETRY_BUDGET_S,
    DbWorker,
    is_sqlite,
    open_database,
)
from services.store.records import LoadedModelRecord
from services.store.records import (
    ApiKeyRecord,
    EmailTaken,
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
from services.store.repos.ids import USER_PREFIX, new_id

__all__ = ["EmailTaken", "RegistrationClosed", "Store"]

T = TypeVar("T")


class Store:
    """Tiers, users, API keys, provider keys, the usage ledger and settings."""

    def __init__(
        self,
        url: str | None,
        data_dir: str,
        clock: Clock,
        *,
        sqlite_busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        pg_pool_size: int = DEFAULT_PG_POOL_SIZE,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
    ) -> None:
        self._url = url
        self._data_dir = data_dir
        self._clock = clock
        self._busy_timeout_ms = sqlite_busy_timeout_ms
        self._pool_size = pg_pool_size
        self._retry_budget_s = retry_budget_s
        self._worker: DbWorker | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database, run migrations, seed the default tiers."""
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

    async def insert_api_key(self, record: ApiKeyRecord, key_hash: str) -> None:
        """A new key's row and the hash it is found by (auth/key_vault.py makes both)."""
        await self._write(keys_repo.insert_api_key, record, key_hash)

    async def find_api_key_by_hash(self, key_hash: str) -> tuple[ApiKeyRecord, str] | None:
        """(record, stored hash) of the key stored under this hash, revoked or not."""
        return await self._read(keys_repo.find_by_hash, key_hash)

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

    async def create_user(self, email: str, password_hash: str, tier: str) -> UserRecord:
        """Sign up (email normalized and checked, password hashed: auth/credentials.py). The first
        user becomes admin and closes registration, atomically even under concurrent sign-ups (F6).
        Raises RegistrationClosed or EmailTaken."""
        return await self._write(users_repo.create_user, new_id(USER_PREFIX), email, password_hash, tier,
                                 self._clock.now())

    async def find_login(self, email: str) -> tuple[UserRecord, str] | None:
        """(user, stored password hash) for a normalized email."""
        return await self._read(users_repo.find_login, email)

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

    async def find_password_hash(self, user_id: str) -> str | None:
        return await self._read(users_repo.find_password_hash, user_id)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self._write(users_repo.set_password_hash, user_id, password_hash, idempotent=True)

    # --- issue 16: the admin's user management -----------------------------------------------

    async def list_users_page(self, query: str = "", plan: str = "", role: str = "", state: str = "",
                              limit: int = 50, offset: int = 0) -> tuple[list[UserRecord], int]:
        return await self._read(users_repo.list_users_page, query, plan, role, state, limit, offset)

    async def insert_user(self, email: str, password_hash: str, tier: str, role: str,
                          invite_hash: str | None = None, invite_expires_at: float | None = None) -> UserRecord:
        """An admin-created user (email normalized and checked, password hashed: auth/credentials.py)."""
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

    async def accept_invite(self, user_id: str, invite_hash: str, password_hash: str) -> bool:
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

    async def insert_provider_key(self, record: ProviderKeyRecord, sealed: str) -> ProviderKeyRecord:
        """A provider key's row with its sealed secret (auth/provider_secrets.py seals it)."""
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
        return await self._write(pk_repo.delete_provider_key, key_id, user_id, idempotent=True)

    async def set_provider_key_disabled(self, key_id: str, disabled: bool) -> bool:
        """Disable a key the provider refused (its 401/403), or re-enable it."""
        return await self._write(pk_repo.set_disabled, key_id, bool(disabled), idempotent=True)

    async def get_sealed_provider_key(self, key_id: str) -> str | None:
        """The sealed secret of a provider key (None: no such row)."""
        return await self._read(pk_repo.get_sealed, key_id)

    async def all_sealed_provider_keys(self) -> list[tuple[str, str]]:
        """(id, sealed secret) of every provider key: the start-up check of the sealing keys."""
        return await self._read(pk_repo.all_sealed)

    # --- loaded models (issue 19) ------------------------------------------------------------

    async def insert_loaded_model(self, record: LoadedModelRecord, sealed: str = "") -> LoadedModelRecord:
        """Persist a loaded model (its id set, its key if any sealed: auth/provider_secrets.py).
        AlreadyExists when the name is taken."""
        record.created_at = record.created_at or self._clock.now()
        record.has_key = bool(sealed)
        return await self._write(lm_repo.insert, record, sealed)

    async def list_loaded_models(self) -> list[LoadedModelRecord]:
        return await self._read(lm_repo.list_all)

    async def remove_loaded_model(self, name: str) -> LoadedModelRecord | None:
        return await self._write(lm_repo.delete_by_name, name)

    async def get_sealed_loaded_model_key(self, model_id: str) -> str | None:
        """A loaded model's sealed upstream key (None or "" when it has none)."""
        return await self._read(lm_repo.get_sealed, model_id)

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

    async def set_setting_once(self, key: str, value: str) -> str:
        """Store `value` unless the setting exists; returns the value stored (first writer wins)."""
        return await self._write(settings_repo.set_once, key, value, idempotent=True)

    # --- change counter (issue 20 point 5) ----------------------------------------------------

    async def change_count(self) -> int:
        """How many writes the tables every replica polls have had (migrations.WATCHED_TABLES):
        unchanged means a re-read of them would find what the last one found."""
        return await self._read(_change_count)

    def change_count_blocking(self) -> int:
        """change_count() for a thread that is not the event loop's (core/poller.py Changes):
        runs on the reader thread and waits for it; no retry (the caller polls again)."""
        return self._require().read_blocking(_change_count)

    # --- internals ---------------------------------------------------------------------------

    def _require(self) -> DbWorker:
        if self._worker is None:
            raise RuntimeError("Store is not started (call await store.start())")
        return self._worker

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._require().read(fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any, idempotent: bool = False) -> T:
        return await self._require().write(fn, *args, idempotent=idempotent)


def _select_one(db: Any) -> int:
    return int(db.execute_sql("SELECT 1").fetchone()[0])



def _change_count(db: Any) -> int:
    return int(db.execute_sql("SELECT n FROM store_changes WHERE id = 1").fetchone()[0])
