"""Sealing provider keys: AES-256-GCM, row id as AAD, key ids for rotation, masks (F2)."""

from __future__ import annotations

import base64

import pytest

from services.auth.sealing import SealError, Sealer, key_id, mask, sealed_key_id

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz"


def test_round_trip_and_format():
    sealer = Sealer({"k1": K1}, "k1")
    sealed = sealer.seal("pk_row1", SECRET)
    assert sealed.startswith("v1:k1:") and SECRET not in sealed
    assert sealer.open("pk_row1", sealed) == SECRET
    assert sealer.seal("pk_row1", SECRET) != sealed  # fresh nonce each time
    assert sealer.open("pk_row1", sealer.seal("pk_row1", "")) == ""
    assert sealed_key_id(sealed) == "k1"


def test_tampering_fails():
    sealer = Sealer({"k1": K1}, "k1")
    sealed = sealer.seal("pk_row1", SECRET)
    blob = bytearray(base64.b64decode(sealed.split(":", 2)[2]))
    for i in (0, 12, len(blob) - 1):  # nonce, ciphertext, tag
        bad = bytearray(blob)
        bad[i] ^= 1
        with pytest.raises(SealError):
            sealer.open("pk_row1", "v1:k1:" + base64.b64encode(bytes(bad)).decode())
    for bad in ("v1:k1:" + base64.b64encode(bytes(blob[:20])).decode(), "v1:k1:@@@", "v2" + sealed[2:], "", "plain"):
        with pytest.raises(SealError):
            sealer.open("pk_row1", bad)


def test_moved_to_another_row_fails():
    sealer = Sealer({"k1": K1}, "k1")
    sealed = sealer.seal("pk_row1", SECRET)
    with pytest.raises(SealError) as info:
        sealer.open("pk_row2", sealed)
    assert "pk_row2" in str(info.value)
    # Raised `from None`: no cryptography exception (or its locals) rides along.
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unknown_key_id_fails_and_errors_hold_no_secret():
    sealed = Sealer({"k1": K1}, "k1").seal("pk_row1", SECRET)
    with pytest.raises(SealError) as info:
        Sealer({"k2": K2}, "k2").open("pk_row1", sealed)
    text = str(info.value) + repr(info.value)
    assert "'k1'" in text
    for piece in (SECRET, SECRET[3:11], K1.hex(), K2.hex()):
        assert piece not in text
    assert info.value.__cause__ is None


def test_rotation():
    old = Sealer({"k1": K1}, "k1")
    sealed_old = old.seal("pk_a", SECRET)
    rotated = Sealer({"k1": K1, "k2": K2}, "k2")
    sealed_new = rotated.seal("pk_b", "sk-new-secret-value-000")
    assert sealed_new.startswith("v1:k2:")
    assert rotated.open("pk_a", sealed_old) == SECRET
    assert rotated.open("pk_b", sealed_new) == "sk-new-secret-value-000"
    with pytest.raises(SealError):
        old.open("pk_b", sealed_new)


def test_constructor_validates_without_echoing_keys():
    with pytest.raises(ValueError):
        Sealer({"k1": K1}, "k2")
    with pytest.raises(ValueError) as info:
        Sealer({"k1": b"short"}, "k1")
    assert "short" not in str(info.value)
    with pytest.raises(ValueError):
        Sealer({"bad:id": K1}, "bad:id")
    assert K1.hex() not in repr(Sealer({"k1": K1}, "k1"))


def test_key_id_is_stable_and_distinct():
    assert key_id(K1) == key_id(K1) and key_id(K1) != key_id(K2)
    assert K1.hex()[:8] not in key_id(K1)


@pytest.mark.parametrize(
    "secret, shown",
    [
        ("sk_abcdefghijklmnopqrstuvwxyz", "sk_...wxyz"),
        ("AIzaSyA-1234567890abcdef", "AIz...cdef"),
        ("sk-123456789", "sk-...6789"),
        ("sk-12345678", "****"),
        ("", "****"),
    ],
)
def test_mask(secret, shown):
    assert mask(secret) == shown
