"""API key format, checksum, prefix, peppered hash and constant-time verification (F1, F4)."""

from __future__ import annotations

import hmac
import re

import pytest

from services.auth import api_keys
from services.auth.api_keys import BASE62, hash_key, key_prefix, looks_valid, new_api_key, verify

PEPPER = b"p" * 32


def test_shape():
    key = new_api_key()
    assert re.fullmatch(r"tg_[0-9A-Za-z]{38}", key)
    assert looks_valid(key)
    assert key_prefix(key) == key[:11] and len(key_prefix(key)) == 11
    assert len({new_api_key() for _ in range(200)}) == 200
    assert new_api_key("tga").startswith("tga_") and looks_valid(new_api_key("tga"))
    with pytest.raises(ValueError):
        new_api_key("TG")


def test_every_single_character_typo_is_caught():
    key = new_api_key()
    for i in range(len(key)):
        for c in (BASE62[(BASE62.find(key[i]) + 1) % 62], "_", "-"):
            typo = key[:i] + c + key[i + 1 :]
            if typo != key:
                assert not looks_valid(typo), (i, c)


@pytest.mark.parametrize(
    "bad", ["", "tg_", "tg_short", "x" * 41, None, 42, "tg_" + "a" * 500, "TG_" + "a" * 38]
)
def test_garbage_is_not_valid(bad):
    assert looks_valid(bad) is False


def test_valid_key_with_newline_rejected():
    assert not looks_valid(new_api_key() + "\n")


def test_hash_and_verify():
    key = new_api_key()
    digest = hash_key(PEPPER, key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and key not in digest
    assert digest == hash_key(PEPPER, key)
    assert digest != hash_key(b"q" * 32, key)  # the pepper matters
    assert verify(PEPPER, key, digest)
    assert not verify(PEPPER, new_api_key(), digest)
    assert not verify(b"q" * 32, key, digest)
    assert not verify(PEPPER, key, "é" * 64)
    assert not verify(PEPPER, key, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hash_key(b"", key)


def test_checks_go_through_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", spy)
    key = new_api_key()
    assert verify(PEPPER, key, hash_key(PEPPER, key))
    assert looks_valid(key)
    assert calls == [(bytes, bytes), (bytes, bytes)]
