"""Credentials: users' passwords and invite tokens, hashed and checked here, over the store's hashes.

argon2id runs on the default executor (asyncio.to_thread), so a sign-up or a sign-in never holds
the event loop or the database thread; the store only keeps and returns the hashes. Also the
rules a sign-up's email and password follow before any hash is made. An invite token is kept as
an HMAC under the API-key pepper, like an API key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets

from services.auth.passwords import hash_password, needs_rehash, verify_password
from services.clock import Clock
from services.core.errors import FieldViolation, InvalidArgument
from services.store.records import STATE_SUSPENDED, RegistrationClosed, UserRecord
from services.store.repos.ids import new_id
from services.store.repos.users import normalize_email
from services.store.store import Store

DEFAULT_USER_TIER = "basic"
MAX_EMAIL_LEN = 254
MAX_PASSWORD_LEN = 4096  # what the store's hash accepts at all
# What a sign-up through KeyService may choose (argon2 hashes any length; a bound keeps its cost bounded).
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
INVITE_PREFIX = "tgi_"
INVITE_TTL_S = 7 * 86400.0
INVITE_MAX_LEN = 200
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")


class Credentials:
    """Sign-up, password checks and changes, admin-created users and invites: the password side."""

    def __init__(self, store: Store, clock: Clock, pepper: bytes) -> None:
        if not pepper:
            raise ValueError("Credentials needs a non-empty pepper for invite hashes")
        self._store = store
        self._clock = clock
        self._pepper = pepper
        self._dummy_hash: str | None = None

    def __repr__(self) -> str:
        return "Credentials()"  # never the pepper

    def new_invite(self) -> tuple[str, str, float]:
        """(token shown once, its hash the store keeps, when it expires) for an invited user."""
        token = INVITE_PREFIX + secrets.token_urlsafe(24)
        return token, self._hash_invite(token), self._clock.now() + INVITE_TTL_S

    def invite_hash(self, token: str) -> str | None:
        """The hash an invite token is stored under; None for what cannot be an invite token."""
        if not token.startswith(INVITE_PREFIX) or len(token) > INVITE_MAX_LEN:
            return None
        return self._hash_invite(token)

    def _hash_invite(self, token: str) -> str:
        return hmac.new(self._pepper, b"invite|" + token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    async def sign_up(self, email: str, password: str, tier: str) -> UserRecord:
        """A user signing up (KeyService.Register): VALIDATION_ERROR naming each field that breaks
        the rules, RegistrationClosed or EmailTaken."""
        email = normalize_email(email)
        problems = []
        if len(email) > MAX_EMAIL_LEN or not _EMAIL_RE.fullmatch(email) or any(ord(c) < 32 or ord(c) == 127 for c in email):
            problems.append(FieldViolation("email", "must be an email address"))
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            problems.append(FieldViolation("password", f"must be {PASSWORD_MIN}-{PASSWORD_MAX} characters"))
        if problems:
            raise _invalid(problems)
        try:
            return await self.create_user(email, password, tier=tier)
        except InvalidArgument as e:
            if e.reason != "INVALID_ARGUMENT":
                raise
            raise _invalid([FieldViolation("email", "must be an email address")]) from None

    async def create_user(self, email: str, password: str, *, tier: str = DEFAULT_USER_TIER) -> UserRecord:
        """Sign up. The first user becomes admin and closes registration, atomically even under
        concurrent sign-ups (F6). Raises RegistrationClosed, EmailTaken or InvalidArgument."""
        email = normalize_email(email if isinstance(email, str) else "")
        check_email(email)
        if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_LEN:
            raise InvalidArgument(f"password must be 1-{MAX_PASSWORD_LEN} characters")
        # Cheap pre-check so a closed registration costs no argon2 hash; re-checked under the
        # lock in the store's create_user.
        if not await self._store.registration_allowed():
            raise RegistrationClosed("registration is closed")
        password_hash = await asyncio.to_thread(hash_password, password)
        return await self._store.create_user(email, password_hash, tier)

    async def authenticate(self, email: str, password: str, *, suspended: bool = False) -> UserRecord | None:
        """The user when email and password match and the account is enabled, else None.

        With `suspended`, a suspended account whose password matches is returned too (its state
        says so), so sign-in can answer "suspended" only to someone who knew the password.
        """
        if not isinstance(email, str) or not isinstance(password, str):
            return None
        found = await self._store.find_login(normalize_email(email))
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
            await self._store.set_password_hash(user.id, fresh)
        return user

    async def check_password(self, user_id: str, password: str) -> bool:
        """Whether `password` is this user's (argon2 off the event loop)."""
        stored = await self._store.find_password_hash(user_id)
        if stored is None or not isinstance(password, str) or len(password) > MAX_PASSWORD_LEN:
            return False
        return await asyncio.to_thread(verify_password, stored, password)

    async def set_password(self, user_id: str, password: str) -> None:
        password_hash = await asyncio.to_thread(hash_password, password)
        await self._store.set_password_hash(user_id, password_hash)

    async def insert_user(self, email: str, password: str | None, tier: str, role: str,
                          invite_hash: str | None = None, invite_expires_at: float | None = None) -> UserRecord:
        """An admin-created user; without a password it can only sign in after accepting its invite."""
        email = normalize_email(email)
        check_email(email)
        # An unusable hash until the invite sets one: no password verifies against it.
        secret = password if password else "invite:" + new_id("")
        password_hash = await asyncio.to_thread(hash_password, secret)
        return await self._store.insert_user(email, password_hash, tier, role, invite_hash, invite_expires_at)

    async def accept_invite(self, user_id: str, invite_hash: str, password: str) -> bool:
        password_hash = await asyncio.to_thread(hash_password, password)
        return await self._store.accept_invite(user_id, invite_hash, password_hash)

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(hash_password, "tollgate-timing-equalizer")
        return self._dummy_hash


def check_email(email: str) -> None:
    """InvalidArgument unless `email` (normalized) looks like an address."""
    local, at, domain = email.partition("@")
    if (
        not at or not local or "." not in domain or domain.startswith(".")
        or len(email) > MAX_EMAIL_LEN or "@" in domain
        or any(c.isspace() or ord(c) < 32 for c in email)
    ):
        raise InvalidArgument("email is not a valid address")


def _invalid(problems: list[FieldViolation]) -> InvalidArgument:
    return InvalidArgument("; ".join(f"{p.field}: {p.description}" for p in problems), reason="VALIDATION_ERROR",
                           field_violations=problems)
