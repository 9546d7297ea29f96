"""The server secret: loaded from TOLLGATE_SECRET_KEY or a 0600 file, and the keys derived from it.

One 32-byte secret feeds three independent keys (HKDF-SHA256, one `info` per purpose): the
pepper for API-key hashes, the key that seals provider keys, and the session-token key. Losing
the secret makes every issued API key and every sealed provider key unreadable, so it is
created once and reused on every restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_FILE = "secret.key"
SECRET_LEN = 32

PURPOSE_API_KEY_PEPPER = "api-key-pepper"
PURPOSE_PROVIDER_KEY_SEAL = "provider-key-seal"
PURPOSE_SESSION = "session"

# Fixed salts make derivation deterministic (the same env value gives the same secret on every
# replica); they only separate Tollgate's use of a value from any other use of it.
_ENV_SALT = b"tollgate/secret-key/v1"
_DERIVE_SALT = b"tollgate/derive/v1"


SECRET_FINGERPRINT_SETTING = "secret_fingerprint"


class SecretMismatch(RuntimeError):
    """The server secret is not the one the database was first started with (check_fingerprint)."""


def secret_fingerprint(pepper: bytes) -> str:
    """A MAC of a constant under a key derived from the server secret (through the API-key pepper):
    equal for equal secrets, says nothing about the secret. Stored at first start, compared after."""
    check_key = hmac.new(pepper, b"tollgate/v1/secret-fingerprint-key", hashlib.sha256).digest()
    return "v1:" + hmac.new(check_key, b"tollgate secret fingerprint", hashlib.sha256).hexdigest()


async def check_fingerprint(store: Any, pepper: bytes, source: str) -> None:
    """At start-up: the database was first started with this server secret, or SecretMismatch.

    Issue 15 point 4: a replica with another server secret would hash every API key differently
    and answer 401 to all of them, silently. The store keeps the fingerprint from the first start
    (`store.set_setting_once`: the first writer wins); a different secret stops start-up here,
    naming where the secret comes from (`source`: the variable, or the file)."""
    mine = secret_fingerprint(pepper)
    stored = await store.set_setting_once(SECRET_FINGERPRINT_SETTING, mine)
    if not hmac.compare_digest(stored.encode(), mine.encode()):
        raise SecretMismatch(
            f"the server secret ({source}) is not the one this database was first started with, so every "
            "API key would be refused; start with the original secret (every replica must share one "
            "TOLLGATE_SECRET_KEY)")


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=SECRET_LEN, salt=salt, info=info).derive(ikm)


def load_or_create_secret(data_dir: str, env_value: str | None) -> bytes:
    """The server secret: derived from `env_value` when set, else read from (or created in)
    `{data_dir}/secret.key`.

    An empty `env_value` counts as unset (an exported but empty variable). The file holds 64 hex
    characters, mode 0600; creation is atomic (written aside, then hard-linked into place) so
    two processes starting together agree on one secret.
    """
    if env_value:
        return _hkdf(env_value.encode("utf-8"), _ENV_SALT, b"tollgate server secret")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, SECRET_FILE)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    _create(path)
    return _read(path)


def derive(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose; different purposes give unrelated keys."""
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise ValueError("derive: the server secret must be at least 16 bytes")
    if not purpose:
        raise ValueError("derive: purpose must be a non-empty string")
    return _hkdf(secret, _DERIVE_SALT, b"tollgate/v1/" + purpose.encode("utf-8"))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        text = f.read(4096).strip()
    try:
        secret = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) != SECRET_LEN:
        # Never echo the content: it may be a real secret in the wrong format.
        raise ValueError(
            f"{path} is not a Tollgate secret (expected {SECRET_LEN * 2} hex characters); "
            "restore the original file or set TOLLGATE_SECRET_KEY (a new secret invalidates "
            "issued API keys and stored provider keys)"
        )
    # A secret readable by others is a leak waiting to happen; tighten it like ssh would want.
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(path, 0o600)
    return secret


def _create(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only remove bits, but be explicit
        os.write(fd, os.urandom(SECRET_LEN).hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() never overwrites: if another process got there first, its secret wins and
        # both processes read the same file.
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:
        # Filesystems without hard links: rename is still atomic, and O_EXCL-style safety is
        # kept by only renaming when nothing is there yet.
        if not os.path.exists(path):
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
