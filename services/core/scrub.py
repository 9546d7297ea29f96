"""Scrubber: every secret the gateway knows, cut out of upstream-originated text before it leaves.

Issue 15 point 3 (RELIABILITY F3): a provider's error message may quote the key it was sent
("Invalid request for key sk-…"), the caller's token from the prompt, or anything else the gateway
holds. One Scrubber is built at start-up (App) from the config's provider keys, static API keys,
admin key and server secret; auth/provider_secrets.py adds each stored provider key when it is opened or added
and drops it when deleted. It is applied where upstream text enters (the router's failures, the
pass-through's error bodies) and once more on every error Status the RPC guard sends, with the
caller's own credentials as `extra`. Only error texts are scrubbed: the success path never calls it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_SECRET_LEN = 8  # shorter strings would cut ordinary words; no real key is this short


class Scrubber:
    """A named set of secrets and the one regex that finds any of them."""

    __slots__ = ("_secrets", "_text", "_bytes")

    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        self._secrets: dict[str, str] = {}
        self._text: re.Pattern[str] | None = None
        self._bytes: re.Pattern[bytes] | None = None
        for name, secret in (secrets or {}).items():
            self.set(name, secret)

    def set(self, name: str, secret: str) -> None:
        """Knows `secret` under `name` (a key id, "admin", …), replacing what that name held."""
        if not secret or len(secret) < MIN_SECRET_LEN:
            self.drop(name)
            return
        if self._secrets.get(name) != secret:
            self._secrets[name] = secret
            self._text = self._bytes = None

    def drop(self, name: str) -> None:
        if self._secrets.pop(name, None) is not None:
            self._text = self._bytes = None

    def __len__(self) -> int:
        return len(self._secrets)

    @property
    def longest(self) -> int:
        """The longest secret's length in bytes (what a reader must hold back between reads)."""
        return max((len(s.encode("utf-8", "replace")) for s in self._secrets.values()), default=0)

    def scrub(self, text: str, extra: Iterable[str] = ()) -> str:
        """`text` with every known secret (and each of `extra`) replaced by [redacted]."""
        if not text:
            return text
        if self._text is None:
            self._text = _pattern(self._secrets.values(), str)
        if self._text is not None:
            text = self._text.sub(REDACTED, text)
        for s in extra:
            if s and len(s) >= MIN_SECRET_LEN and s in text:
                text = text.replace(s, REDACTED)
        return text

    def scrub_bytes(self, data: bytes, extra: Iterable[str] = ()) -> bytes:
        if not data:
            return data
        if self._bytes is None:
            self._bytes = _pattern(self._secrets.values(), bytes)
        if self._bytes is not None:
            data = self._bytes.sub(REDACTED.encode(), data)
        for s in extra:
            b = s.encode("utf-8", "replace") if s else b""
            if len(b) >= MIN_SECRET_LEN and b in data:
                data = data.replace(b, REDACTED.encode())
        return data


def _pattern(secrets: Iterable[str], kind: type) -> re.Pattern | None:
    # Longest first: a secret that contains another is cut whole.
    uniq = sorted(set(secrets), key=len, reverse=True)
    if not uniq:
        return None
    if kind is bytes:
        return re.compile(b"|".join(re.escape(s.encode("utf-8", "replace")) for s in uniq))
    return re.compile("|".join(re.escape(s) for s in uniq))
