"""Session tokens: signed, expiring proofs of a login that need no database row (seed 001's JWT).

A token reads `tgs_<payload>.<signature>`, both unpadded base64url. The payload is compact JSON
`{"v": 1, "u": user id, "r": role, "e": expiry, "i": issued, "n": nonce}` (epoch seconds); the
signature is HMAC-SHA256 over `tgs_<payload>` with `derive(secret, "session")`, so a token
minted by one replica verifies on every replica sharing the secret. Verification recomputes
the MAC and compares with `hmac.compare_digest` before it reads a byte of the payload (F4).

Issue 16: a token also names its session row (`"s"`), which the authenticator reads through a
one-second cache, so logging out (or any revocation) is honoured on every replica within a
second; a token without a session id is refused there. The authenticator also checks the
account (cached one second, like API keys): a disabled or deleted user, or an admin who lost
the role, stops being honoured within a second. The CSRF token of a browser session is an HMAC
of its session id under the same key, so every replica can check it without a lookup. A token
never appears in a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from services.clock import Clock

PREFIX = "tgs_"
DEFAULT_TTL_S = 24 * 3600.0
MAX_TOKEN_LEN = 1024  # a forged multi-megabyte "token" costs one length check, not a MAC
ROLES = ("admin", "user")
_VERSION = 1


@dataclass(slots=True, frozen=True)
class Session:
    """What a verified token says: who, in which role, until when."""

    user_id: str
    role: str
    expires_at: float
    issued_at: float
    session_id: str = ""


def looks_like_session(token: str) -> bool:
    """True for strings of the session shape (cheap; says nothing about validity)."""
    return isinstance(token, str) and token.startswith(PREFIX) and "." in token


class Sessions:
    """Issues and verifies session tokens with one key; time comes from the injected clock."""

    __slots__ = ("_key", "_clock", "ttl_s")

    def __init__(self, key: bytes, clock: Clock, ttl_s: float = DEFAULT_TTL_S) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("Sessions: the signing key must be at least 16 bytes")
        if ttl_s <= 0:
            raise ValueError("Sessions: ttl_s must be positive")
        self._key = key
        self._clock = clock
        self.ttl_s = ttl_s

    def __repr__(self) -> str:  # never the key
        return f"Sessions(ttl_s={self.ttl_s})"

    def issue(self, user_id: str, role: str, ttl_s: float | None = None, now: float | None = None,
              session_id: str = "") -> tuple[str, float]:
        """A new token for `user_id` and its expiry (epoch seconds)."""
        if not user_id or role not in ROLES:
            raise ValueError("Sessions.issue: a user id and a role of 'admin' or 'user' are required")
        issued = self._clock.now() if now is None else now
        expires = issued + (self.ttl_s if ttl_s is None else ttl_s)
        claims = {"v": _VERSION, "u": user_id, "r": role, "e": int(expires), "i": int(issued), "n": os.urandom(6).hex()}
        if session_id:
            claims["s"] = session_id
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True)
        body = PREFIX + _b64(payload.encode("utf-8"))
        return f"{body}.{_b64(self._mac(body))}", float(int(expires))

    def verify(self, token: str) -> Session | None:
        """The session when the signature holds and it has not expired; otherwise None."""
        if not looks_like_session(token) or len(token) > MAX_TOKEN_LEN:
            return None
        body, _, sig = token.rpartition(".")
        payload = body[len(PREFIX):]
        if not _is_b64(payload) or not _is_b64(sig):
            return None
        # Compared as canonical text, not decoded bytes: the last character of an unpadded
        # base64 signature carries two ignored bits, so decoding would accept four spellings of it.
        if not hmac.compare_digest(_b64(self._mac(body)), sig):
            return None
        try:
            claims = json.loads(_unb64(payload))
            user_id, role, expires, issued = claims["u"], claims["r"], claims["e"], claims["i"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None  # signed by us but unreadable: only a key reuse elsewhere could make this
        if claims.get("v") != _VERSION or not isinstance(user_id, str) or not user_id or role not in ROLES:
            return None
        if not isinstance(expires, (int, float)) or not isinstance(issued, (int, float)):
            return None
        if expires <= self._clock.now():
            return None
        sid = claims.get("s", "")
        if not isinstance(sid, str):
            return None
        return Session(user_id=user_id, role=role, expires_at=float(expires), issued_at=float(issued), session_id=sid)

    def csrf(self, session_id: str) -> str:
        """The CSRF token of a session: derived, so any replica checks it without a lookup."""
        return _b64(hmac.new(self._key, b"csrf|" + session_id.encode("utf-8"), hashlib.sha256).digest())[:32]

    def csrf_ok(self, session_id: str, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf(session_id), presented)

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _is_b64(text: str) -> bool:
    return bool(text) and len(text) % 4 != 1 and all(c in _B64_CHARS for c in text)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
