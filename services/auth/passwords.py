"""User passwords: argon2id hashes (argon2-cffi), verified with a constant-time compare.

`verify_password` recomputes the raw argon2id digest with the stored salt and parameters and
compares with `hmac.compare_digest`, so every secret check in Tollgate goes through one
auditable function (RELIABILITY F4). Hashes are standard PHC strings that argon2-cffi's own
`PasswordHasher.verify` accepts too.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError
from argon2.low_level import Type, hash_secret_raw

# argon2-cffi's defaults are RFC 9106's second recommended profile (64 MiB, t=3, p=4).
# A constant: immutable configuration, not state.
_HASHER = PasswordHasher()

# Bounds on parameters read back from a stored hash, so a corrupt row cannot make one
# verification allocate gigabytes or spin for minutes.
_MAX_MEMORY_KIB = 1 << 20
_MAX_TIME_COST = 64
_MAX_PARALLELISM = 64


def hash_password(password: str) -> str:
    """An argon2id PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$digest`)."""
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    return _HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """True when `password` matches `stored`; False on mismatch or a malformed hash."""
    if not isinstance(stored, str) or not isinstance(password, str):
        return False
    parsed = _parse(stored)
    if parsed is None:
        return False
    version, memory, time_cost, parallelism, salt, digest = parsed
    try:
        computed = hash_secret_raw(
            password.encode("utf-8"), salt, time_cost, memory, parallelism, len(digest),
            Type.ID, version,
        )
    except (Argon2Error, ValueError):
        return False
    return hmac.compare_digest(computed, digest)


def needs_rehash(stored: str) -> bool:
    """True when `stored` was made with other parameters than today's (or is unreadable)."""
    if not isinstance(stored, str):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except (InvalidHashError, ValueError, TypeError):
        return True


def _parse(stored: str) -> tuple[int, int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] or parts[1] != "argon2id" or parts[2] != "v=19":
        return None
    try:
        params = dict(p.split("=", 1) for p in parts[3].split(","))
        memory, time_cost, parallelism = int(params["m"]), int(params["t"]), int(params["p"])
        salt, digest = _b64(parts[4]), _b64(parts[5])
    except (KeyError, ValueError, binascii.Error):
        return None
    if not (1 <= parallelism <= _MAX_PARALLELISM and 1 <= time_cost <= _MAX_TIME_COST):
        return None
    if not 8 * parallelism <= memory <= _MAX_MEMORY_KIB:
        return None
    if len(salt) < 8 or not 4 <= len(digest) <= 1024:
        return None
    return 19, memory, time_cost, parallelism, salt, digest


def _b64(text: str) -> bytes:
    # PHC strings use unpadded standard base64.
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
