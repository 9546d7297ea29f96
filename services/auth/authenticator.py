"""Turns the credentials of a call into a Principal, fast: no DB round trip per request.

Credentials arrive as metadata (`authorization: Bearer …`, `x-api-key`, `x-admin-key`). The
admin key and the static AUTH_KEY / AUTH_KEY_01..99 keys are compared by digest; issued API
keys are looked up by their HMAC in a cache whose entries live one second, so a revocation
reaches every replica within a second (RELIABILITY F6) while a busy key costs one store
lookup per second, not one per request. Unknown keys are cached as misses for a second too.
A request costs one HMAC of its key (the same digest serves the admin check, the static keys
and the cache), and concurrent requests with an expired entry share one store lookup.

Session tokens (`tgs_…`, sessions.py, issue 7) are checked by signature and expiry alone; the
account behind one is read through the same kind of one-second cache, so disabling a user or
taking away the admin role reaches every replica within a second. A session of an admin user
passes admin-only routes; any other valid session is a user (PERMISSION_DENIED there).

Issue 16: each session token names its row in the sessions table; the row is read through the
same one-second cache, so a logout or a revocation reaches every replica within a second. The
operator's session (signed in with the admin key) is the admin principal. A browser's session
arrives from the bridge's cookie together with `x-tollgate-csrf` metadata on writes; that value
must be the session's CSRF token (PERMISSION_DENIED, reason CSRF, otherwise).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field

from services.auth.api_keys import looks_valid
from services.core.principal import Principal
from services.auth.sessions import PREFIX as SESSION_PREFIX
from services.auth.sessions import Sessions
from services.clock import Clock
from services.config.schema import Config, StaticKey
from services.core.errors import PermissionDenied, Unauthenticated
from services.store.records import STATE_SUSPENDED, ApiKeyRecord, SessionRecord, UserRecord

log = logging.getLogger("tollgate.auth")

CACHE_TTL_S = 0.9  # under a second, read included: RELIABILITY F6, issue 16 suspensions
MAX_CACHE = 100_000
MISSING = "Provide an API key via Authorization: Bearer <key> or X-API-Key header"
OPERATOR = "operator"  # the user id of the admin key's console sessions
CSRF_METADATA = "x-tollgate-csrf"  # set by the bridge on cookie-authenticated writes only
TOUCH_EVERY_S = 60.0  # a session's last_used_at is accurate to this, at one write per period


@dataclass(slots=True)
class AuthStats:
    successes: int = 0
    failures: int = 0
    per_static: dict[str, list[float]] = field(default_factory=dict)  # id -> [count, last_used_at]


class _KeyedSha256:
    """HMAC-SHA256 under one fixed key, remembered per message through a cheap index.

    Every request digests its key. HMAC through OpenSSL 3 costs ~17k instructions even with the
    keyed state prepared once and copied (hmac.new() per call: ~23k); an unkeyed BLAKE2b of the
    key costs ~4k (bench/gate.py, measured under callgrind). So the HMAC is computed once per key
    and found again by the key's BLAKE2b: 256 bits, salted with a random value of this process,
    so the index says nothing outside it. The plaintext is never kept. Same digests as before.
    """

    __slots__ = ("_base", "_salt", "_known")

    MAX_KNOWN = 10_000  # keys presented (valid or not); the index starts over when full

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        self._salt = os.urandom(16)
        self._known: dict[bytes, str] = {}

    def hexdigest(self, msg: bytes) -> str:
        ref = hashlib.blake2b(msg, digest_size=32, salt=self._salt).digest()
        digest = self._known.get(ref)
        if digest is None:
            h = self._base.copy()
            h.update(msg)
            digest = h.hexdigest()
            if len(self._known) >= self.MAX_KNOWN:
                self._known.clear()
            self._known[ref] = digest
        return digest


class Authenticator:
    def __init__(self, cfg: Config, store, keys, pepper: bytes, clock: Clock, admin_key_hash: str,
                 sessions: Sessions | None = None) -> None:
        self.cfg = cfg
        self.store = store  # sessions' rows and accounts
        self.keys = keys  # key_vault.KeyVault: the stored key a plaintext names
        self.pepper = pepper
        self.clock = clock
        self.enabled = cfg.enable_auth
        self._admin_hash = admin_key_hash
        self._static: dict[str, StaticKey] = {}
        self._cache: OrderedDict[str, tuple[float, ApiKeyRecord | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task] = {}  # one store lookup per key hash at a time
        # The Principal of each cached record: it is immutable and the same for every request
        # until the record is fetched again (a new object), so it is built once per fetch.
        self._principals: dict[str, tuple[ApiKeyRecord, Principal]] = {}
        self.stats = AuthStats()
        self.load_static(cfg.static_keys)
        self.sessions = sessions  # None: session tokens are not accepted
        self._accounts: OrderedDict[str, tuple[float, UserRecord | None]] = OrderedDict()
        self._session_rows: OrderedDict[str, tuple[float, SessionRecord | None]] = OrderedDict()

    @property
    def pepper(self) -> bytes:
        return self._pepper

    @pepper.setter
    def pepper(self, value: bytes) -> None:
        self._pepper = value
        self._keyed = _KeyedSha256(value)

    def _digest(self, secret: str) -> str:
        return self._keyed.hexdigest(secret.encode("utf-8", "surrogatepass"))

    def load_static(self, keys: tuple[StaticKey, ...]) -> int:
        self._static = {self._digest(k.secret): k for k in keys}
        for k in keys:
            self.stats.per_static.setdefault(k.id, [0, 0.0])
        return len(self._static)

    @property
    def static_count(self) -> int:
        return len(self._static)

    def forget(self, key_hash: str | None = None) -> None:
        """Drop cached lookups (after a revoke in this process: effective at once here).
        A lookup still in flight is left to finish for its callers but neither cached nor
        shared with later ones, which look the key up afresh."""
        if key_hash is None:
            self._cache.clear()
            self._inflight.clear()
            self._accounts.clear()
            self._principals.clear()
            self._session_rows.clear()
        else:
            self._cache.pop(key_hash, None)
            self._inflight.pop(key_hash, None)
            self._principals.pop(key_hash, None)

    @staticmethod
    def credentials(md: dict[str, str]) -> tuple[str, str]:
        """(api key, admin key) from metadata; either may be ''."""
        admin = md.get("x-admin-key", "")
        auth = md.get("authorization", "")
        key = ""
        if auth:
            scheme, _, value = auth.partition(" ")
            key = value.strip() if scheme.lower() == "bearer" else ""
        return key or md.get("x-api-key", ""), admin

    def use_admin_hash(self, digest: str) -> None:
        """The admin key's digest, known once App.start() has read (or made) it."""
        self._admin_hash = digest

    def is_admin_key(self, secret: str) -> bool:
        return bool(secret) and bool(self._admin_hash) and hmac.compare_digest(self._digest(secret), self._admin_hash)

    def _is_admin_digest(self, digest: str) -> bool:
        return bool(self._admin_hash) and hmac.compare_digest(digest, self._admin_hash)

    async def resolve(self, md: dict[str, str], admin_only: bool = False) -> Principal:
        key, admin = self.credentials(md)
        if admin:
            if self.is_admin_key(admin):
                return Principal("admin", "admin", "unlimited", role="admin", name="admin")
            self.stats.failures += 1
            raise Unauthenticated("Invalid admin key", reason="INVALID_ADMIN_KEY")
        if self.sessions is not None and key.startswith(SESSION_PREFIX):
            # Issue 7: a valid session wins here; anything else falls through to the paths below
            # exactly as before (a static AUTH_KEY may even start with "tgs_").
            p = await self._session(key)
            if p is not None:
                csrf = md.get(CSRF_METADATA)
                if csrf is not None and not self.sessions.csrf_ok(p.session_id, csrf):
                    raise PermissionDenied("This write came with the session cookie but without its CSRF token "
                                           "(send it in the X-CSRF-Token header)", reason="CSRF")
                if admin_only and not p.is_admin:
                    raise PermissionDenied("This route needs the admin key", reason="ADMIN_ONLY")
                return p
        if admin_only:
            if key and self.is_admin_key(key):
                return Principal("admin", "admin", "unlimited", role="admin", name="admin")
            if not key:
                raise Unauthenticated("Admin key required: send it in the X-Admin-Key header", reason="ADMIN_KEY_REQUIRED")
            # A valid user key on an admin route is forbidden, a bad one unauthenticated (F7).
            await self._user(key)
            raise PermissionDenied("This route needs the admin key", reason="ADMIN_ONLY")
        if not self.enabled:
            return Principal("anonymous", "anonymous", self.cfg.auth_key_tier or "unlimited")
        if not key:
            self.stats.failures += 1
            raise Unauthenticated(MISSING, reason="API_KEY_REQUIRED")
        digest = self._digest(key)
        if self._is_admin_digest(digest):
            return Principal("admin", "admin", "unlimited", role="admin", name="admin")
        return self._fresh(digest) or await self._user(key, digest)

    def resolve_now(self, md: dict[str, str]) -> Principal | None:
        """resolve(md) for the usual request, without a coroutine: a stored API key looked up
        within the last CACHE_TTL_S. None for anything else (no key, the admin key, a session, a
        static key, auth off, a stale or missing entry): resolve() answers those."""
        if not self.enabled or "x-admin-key" in md:
            return None
        key = self.credentials(md)[0]
        if not key or (self.sessions is not None and key.startswith(SESSION_PREFIX)):
            return None
        # _digest() and _is_admin_digest(), written out: once per request
        digest = self._keyed.hexdigest(key.encode("utf-8", "surrogatepass"))
        if self._admin_hash and hmac.compare_digest(digest, self._admin_hash):
            return None
        return self._fresh(digest)

    def _fresh(self, digest: str) -> Principal | None:
        """The usual request: a stored key looked up within the last CACHE_TTL_S, its principal
        already built. Answered without _user's and _lookup's coroutines; anything else (static
        keys, a stale or missing entry, an expired key) is None: the full path's."""
        hit = self._cache.get(digest)
        if hit is not None and (rec := hit[1]) is not None and self.clock.monotonic() - hit[0] < CACHE_TTL_S:
            built = self._principals.get(digest)
            if (built is not None and built[0] is rec and digest not in self._static and rec.owner_state != STATE_SUSPENDED
                    and not (rec.expires_at and rec.expires_at <= self.clock.now())):
                self.stats.successes += 1
                return built[1]
        return None

    async def _user(self, key: str, digest: str | None = None) -> Principal:
        if digest is None:
            digest = self._digest(key)
        st = self._static.get(digest)
        if st is not None:
            self.stats.successes += 1
            entry = self.stats.per_static[st.id]
            entry[0] += 1
            entry[1] = self.clock.now()
            return Principal(st.id, "static", self.cfg.auth_key_tier or "unlimited", name=st.id)
        rec = await self._lookup(key, digest)
        if rec is None:
            self.stats.failures += 1
            raise Unauthenticated("Invalid API key", reason="INVALID_API_KEY")
        if rec.owner_state == STATE_SUSPENDED:
            raise PermissionDenied("This account is suspended; contact the operator", reason="ACCOUNT_SUSPENDED")
        self.stats.successes += 1
        hit = self._principals.get(digest)
        if hit is not None and hit[0] is rec:
            return hit[1]
        own = (rec.rpm, rec.rpd, rec.tpd, rec.tpm_month)
        budgets = (*rec.owner_budgets, rec.budget_usd_day or 0.0, rec.budget_usd_month or 0.0)
        p = Principal(rec.id, "token" if rec.kind == "token" else "api_key", rec.tier or self.cfg.default_tier,
                      user_id=rec.user_id or "", name=rec.name, own=own if any(own) else (),
                      budgets=budgets if any(budgets) else ())
        if len(self._principals) >= MAX_CACHE:
            self._principals.clear()
        self._principals[digest] = (rec, p)
        return p

    async def _session(self, token: str) -> Principal | None:
        s = self.sessions.verify(token) if self.sessions is not None else None
        if s is None or not s.session_id:
            return None
        row = await self._session_row(s.session_id)
        if row is None or row.user_id != s.user_id or not row.live(self.clock.now()):
            return None  # logged out, revoked, or a row that does not match the token
        if s.user_id == OPERATOR:
            self.stats.successes += 1
            return Principal("admin", "admin", "unlimited", role="admin", name=OPERATOR, session_id=s.session_id)
        user = await self._account(s.user_id)
        if user is not None and user.state == STATE_SUSPENDED:
            raise PermissionDenied("This account is suspended; contact the operator", reason="ACCOUNT_SUSPENDED")
        if user is None or user.disabled:
            return None
        # The lesser of the token's role and the account's: a demoted admin loses admin within a second.
        role = "admin" if s.role == "admin" and user.role == "admin" else "user"
        self.stats.successes += 1
        budgets = (user.budget_usd_day or 0.0, user.budget_usd_month or 0.0, 0.0, 0.0)
        return Principal(user.id, "session", user.tier or self.cfg.default_tier, user_id=user.id, role=role,
                         name=user.id, session_id=s.session_id, budgets=budgets if any(budgets) else ())

    async def _session_row(self, session_id: str) -> SessionRecord | None:
        now = self.clock.monotonic()
        hit = self._session_rows.get(session_id)
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        row = await self.store.get_session(session_id)
        wall = self.clock.now()
        if row is not None and row.live(wall) and (row.last_used_at is None or wall - row.last_used_at >= TOUCH_EVERY_S):
            # At most one write per session per TOUCH_EVERY_S per replica: "last used" to the minute.
            await self.store.touch_session(session_id)
            row.last_used_at = wall
        self._session_rows[session_id] = (now, row)
        self._session_rows.move_to_end(session_id)
        if len(self._session_rows) > MAX_CACHE:
            self._session_rows.popitem(last=False)
        return row

    def forget_sessions(self) -> None:
        """Drop cached session rows and accounts (after a revocation here: effective at once)."""
        self._session_rows.clear()
        self._accounts.clear()

    async def _account(self, user_id: str) -> UserRecord | None:
        now = self.clock.monotonic()
        hit = self._accounts.get(user_id)
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        user = await self.store.get_user(user_id)
        self._accounts[user_id] = (now, user)
        self._accounts.move_to_end(user_id)
        if len(self._accounts) > MAX_CACHE:
            self._accounts.popitem(last=False)
        return user

    async def _lookup(self, key: str, digest: str) -> ApiKeyRecord | None:
        # `digest` is HMAC-SHA256(pepper, key) hex: for a well-formed (ASCII) key it equals
        # api_keys.hash_key(), the cache's and forget()'s key; only well-formed keys are cached.
        now = self.clock.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            rec = hit[1]
        elif not looks_valid(key):
            return None  # a typo or garbage never reaches the store
        else:
            task = self._inflight.get(digest)
            if task is None:
                task = asyncio.ensure_future(self._fetch(key, digest, now))
                self._inflight[digest] = task
                task.add_done_callback(functools.partial(self._fetched, digest))
            # Shielded: one caller going away must not cancel the lookup the others wait for.
            rec = await asyncio.shield(task)
        if rec is not None and rec.expires_at and rec.expires_at <= self.clock.now():
            return None
        return rec

    async def _fetch(self, key: str, digest: str, started: float) -> ApiKeyRecord | None:
        rec = await self.keys.find(key)
        if self._inflight.get(digest) is asyncio.current_task():  # not forgotten meanwhile
            self._cache[digest] = (started, rec)
            self._cache.move_to_end(digest)
            if len(self._cache) > MAX_CACHE:
                self._cache.popitem(last=False)
        return rec

    def _fetched(self, digest: str, task: asyncio.Task) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved here: waiters that went away must not leave it unobserved
