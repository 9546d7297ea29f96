"""Passwords: argon2id PHC strings, verification via compare_digest, rehash detection."""

from __future__ import annotations

import hmac

import pytest
from argon2 import PasswordHasher

from services.auth import passwords
from services.auth.passwords import hash_password, needs_rehash, verify_password


def test_hash_is_argon2id_and_verifies():
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$")
    assert "correct horse" not in stored
    assert verify_password(stored, "correct horse battery staple")
    assert not verify_password(stored, "correct horse battery stapl")
    assert not verify_password(stored, "")
    assert hash_password("x") != hash_password("x")  # salted
    assert needs_rehash(stored) is False


@pytest.mark.parametrize("pw", ["", "pässwörd ✓", "a" * 1000, "emoji 🔐"])
def test_compatible_with_argon2_cffi(pw):
    ours = hash_password(pw)
    assert PasswordHasher().verify(ours, pw)
    theirs = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=2).hash(pw)
    assert verify_password(theirs, pw)
    assert not verify_password(theirs, pw + "x")


@pytest.mark.parametrize(
    "stored",
    [
        "", "garbage", "$argon2i$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$argon2id$v=19$m=65536,t=3,p=4$!!!$aGFzaGhhc2g",
        "$argon2id$v=19$m=99999999,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g",  # absurd memory
        "$argon2id$v=19$m=65536,t=3$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$argon2id$v=16$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g",
        None,
    ],
)
def test_malformed_hash_is_false_not_an_error(stored):
    assert verify_password(stored, "pw") is False
    assert needs_rehash(stored) is True


def test_weaker_parameters_need_rehash():
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert needs_rehash(weak) is True
    assert verify_password(weak, "pw")


def test_verify_uses_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(passwords.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    stored = hash_password("pw")
    assert verify_password(stored, "pw") and not verify_password(stored, "nope")
    assert len(calls) == 2
