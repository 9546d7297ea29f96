"""Provider keys sealed at rest: AES-256-GCM with the row id as associated data.

A sealed value reads `v1:<key-id>:<base64(nonce + ciphertext)>`. The key id names the sealing
key, so rotation works: a new current key seals, older keys still open (RELIABILITY F2). The
row id is the AAD, so a ciphertext copied into another row fails to open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.core.errors import Internal

VERSION = "v1"
NONCE_LEN = 12
KEY_LEN = 32
MASK_MIN_LEN = 12

_KEY_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class SealError(Internal):
    """A sealed value could not be opened. The message names ids only, never key material."""

    reason = "SEALED_SECRET_UNREADABLE"


def key_id(key: bytes) -> str:
    """A stable, non-secret name for a sealing key (a truncated hash of it)."""
    return "k" + hashlib.sha256(b"tollgate/seal-key-id/v1" + key).hexdigest()[:8]


class Sealer:
    """Seals with the current key; opens with whichever configured key sealed the value."""

    __slots__ = ("_aeads", "_current")

    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"sealing key id {current!r} is not among the configured keys")
        for kid, key in keys.items():
            if not _KEY_ID_RE.fullmatch(kid):
                raise ValueError(f"sealing key id {kid!r} must be 1-32 of [A-Za-z0-9_.-]")
            if not isinstance(key, bytes) or len(key) != KEY_LEN:
                raise ValueError(f"sealing key {kid!r} must be {KEY_LEN} bytes (AES-256)")
        self._aeads = {kid: AESGCM(key) for kid, key in keys.items()}
        self._current = current

    def __repr__(self) -> str:
        return f"Sealer(current={self._current!r}, key_ids={sorted(self._aeads)!r})"

    @property
    def current_key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._aeads)

    def seal(self, row_id: str, plaintext: str) -> str:
        if not row_id:
            raise ValueError("seal: row_id must be non-empty (it is the associated data)")
        nonce = os.urandom(NONCE_LEN)
        ct = self._aeads[self._current].encrypt(nonce, plaintext.encode("utf-8"), row_id.encode("utf-8"))
        return f"{VERSION}:{self._current}:{base64.b64encode(nonce + ct).decode('ascii')}"

    def open(self, row_id: str, sealed: str) -> str:
        kid = sealed_key_id(sealed)
        aead = self._aeads.get(kid)
        if aead is None:
            raise SealError(f"provider key {row_id} is sealed with unknown key id {kid!r}")
        try:
            blob = base64.b64decode(sealed.split(":", 2)[2], validate=True)
        except (binascii.Error, ValueError):
            raise SealError(f"provider key {row_id}: sealed value is not valid base64") from None
        if len(blob) < NONCE_LEN + 16:
            raise SealError(f"provider key {row_id}: sealed value is truncated")
        try:
            plain = aead.decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], row_id.encode("utf-8"))
        except InvalidTag:
            # `from None`: nothing of the key or the ciphertext travels with the error.
            raise SealError(
                f"provider key {row_id}: sealed value failed authentication "
                "(tampered, or sealed for another row)"
            ) from None
        return plain.decode("utf-8")


def sealed_key_id(sealed: str) -> str:
    """The key id a sealed value names; SealError when it is not a `v1:` sealed value."""
    parts = sealed.split(":", 2) if isinstance(sealed, str) else []
    if len(parts) != 3 or parts[0] != VERSION or not _KEY_ID_RE.fullmatch(parts[1]):
        raise SealError("value is not a v1 sealed secret")
    return parts[1]


def mask(secret: str) -> str:
    """What a list may show of a provider key: `sk-...wxyz`; short secrets show nothing."""
    if len(secret) < MASK_MIN_LEN:
        return "****"
    return f"{secret[:3]}...{secret[-4:]}"
