"""The server secret: env-derived or a 0600 file created once, and per-purpose derivation."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.auth.secrets import (
    PURPOSE_API_KEY_PEPPER,
    PURPOSE_PROVIDER_KEY_SEAL,
    PURPOSE_SESSION,
    derive,
    load_or_create_secret,
)


def test_env_value_derives_32_bytes_deterministically(tmp_path):
    a = load_or_create_secret(str(tmp_path), "any string at all")
    assert len(a) == 32 and a == load_or_create_secret(str(tmp_path / "x"), "any string at all")
    assert a != load_or_create_secret(str(tmp_path), "any string at all!")
    assert not (tmp_path / "secret.key").exists()  # env wins: no file written


def test_file_created_0600_and_reused(tmp_path):
    data = tmp_path / "data"
    first = load_or_create_secret(str(data), None)
    path = data / "secret.key"
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(str(data), None) == first
    assert load_or_create_secret(str(data), "") == first  # empty env var counts as unset
    assert [p.name for p in data.iterdir()] == ["secret.key"]  # no temp files left


def test_concurrent_first_starts_agree(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        secrets = list(pool.map(lambda _: load_or_create_secret(str(tmp_path), None), range(16)))
    assert len(set(secrets)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]


def test_loose_permissions_are_tightened(tmp_path):
    secret = load_or_create_secret(str(tmp_path), None)
    os.chmod(tmp_path / "secret.key", 0o644)
    assert load_or_create_secret(str(tmp_path), None) == secret
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600


def test_malformed_file_named_without_its_content(tmp_path):
    (tmp_path / "secret.key").write_text("not-hex-but-maybe-a-real-secret-value")
    with pytest.raises(ValueError) as info:
        load_or_create_secret(str(tmp_path), None)
    assert "secret.key" in str(info.value)
    assert "maybe-a-real-secret" not in str(info.value)


def test_derive_gives_distinct_keys_per_purpose():
    secret = bytes(range(32))
    keys = {p: derive(secret, p) for p in (PURPOSE_API_KEY_PEPPER, PURPOSE_PROVIDER_KEY_SEAL, PURPOSE_SESSION)}
    assert len(set(keys.values())) == 3
    assert all(len(k) == 32 and k != secret for k in keys.values())
    assert derive(secret, PURPOSE_SESSION) == keys[PURPOSE_SESSION]
    assert derive(bytes(32), PURPOSE_SESSION) != keys[PURPOSE_SESSION]
    with pytest.raises(ValueError):
        derive(secret, "")
    with pytest.raises(ValueError):
        derive(b"short", PURPOSE_SESSION)


async def test_fingerprint_check_keeps_the_first_secret_and_names_the_source(store):
    from services.auth.secrets import SecretMismatch, check_fingerprint, secret_fingerprint

    first, second = derive(b"a" * 32, PURPOSE_API_KEY_PEPPER), derive(b"b" * 32, PURPOSE_API_KEY_PEPPER)
    await check_fingerprint(store, first, "TOLLGATE_SECRET_KEY")
    await check_fingerprint(store, first, "TOLLGATE_SECRET_KEY")  # a restart with the same secret
    with pytest.raises(SecretMismatch) as info:
        await check_fingerprint(store, second, "/data/secret.key")
    message = str(info.value)
    assert "/data/secret.key" in message and "first started with" in message
    assert first.hex() not in message and second.hex() not in message
    assert await store.get_setting("secret_fingerprint") == secret_fingerprint(first)
