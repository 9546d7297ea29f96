"""API keys in GitHub's token shape: `tg_` + 32 random base62 + a 6-char CRC32 checksum.

The checksum lets a typo be rejected before any database lookup; the first 11 characters are
the visible prefix shown in lists. Only `hash_key` (HMAC-SHA256 with the server pepper) is
ever stored (RELIABILITY F1), and every comparison goes through `hmac.compare_digest` (F4).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

from services.core.base62 import BASE62

RANDOM_LEN = 32
CHECKSUM_LEN = 6
PREFIX_LEN = 11
MAX_KEY_LEN = 64

_KIND_RE = re.compile(r"[a-z][a-z0-9]{0,7}")
_KEY_RE = re.compile(r"([a-z][a-z0-9]{0,7}_[0-9A-Za-z]{%d})([0-9A-Za-z]{%d})" % (RANDOM_LEN, CHECKSUM_LEN))


def new_api_key(kind: str = "tg") -> str:
    """A fresh key: `{kind}_` + 32 random base62 characters (~190 bits) + checksum."""
    if not _KIND_RE.fullmatch(kind):
        raise ValueError("api key kind must be 1-8 lowercase letters or digits, starting with a letter")
    body = f"{kind}_" + "".join(secrets.choice(BASE62) for _ in range(RANDOM_LEN))
    return body + _checksum(body)


def looks_valid(key: str) -> bool:
    """True when `key` has the token shape and its checksum matches (no lookup needed)."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LEN:
        return False
    m = _KEY_RE.fullmatch(key)
    if m is None:
        return False
    return hmac.compare_digest(_checksum(m.group(1)).encode("ascii"), m.group(2).encode("ascii"))


def key_prefix(key: str) -> str:
    """The part of a key that may be shown again after creation, e.g. `tg_AbC12345`."""
    return key[:PREFIX_LEN]


def hash_key(pepper: bytes, key: str) -> str:
    """HMAC-SHA256(pepper, key) as hex: what the store keeps instead of the key."""
    if not pepper:
        raise ValueError("hash_key: pepper must be non-empty")
    return hmac.new(pepper, key.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(pepper: bytes, key: str, stored_hash: str) -> bool:
    """True when `key` hashes to `stored_hash`; constant-time on the digests (F4)."""
    if not isinstance(key, str) or not isinstance(stored_hash, str):
        return False
    return hmac.compare_digest(
        hash_key(pepper, key).encode("ascii"), stored_hash.encode("utf-8", "replace")
    )


def _checksum(body: str) -> str:
    n = zlib.crc32(body.encode("ascii"))
    out = []
    for _ in range(CHECKSUM_LEN):  # 62**6 > 2**32, so six digits always suffice
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return "".join(reversed(out))
