"""KeyVault over a real store: hash-only storage, lookups, revocation, expiry, ownership (F1, F5, F6)."""

from __future__ import annotations

import pytest

from services.auth.api_keys import BASE62, hash_key, looks_valid
from services.core.errors import InvalidArgument
from services.store import UnknownTier, UnknownUser
from services.store.repos import api_keys as keys_repo
from tests.services.store.conftest import PEPPER, dump_text


async def test_round_trip(store, clock, vault):
    record, plaintext = await vault.create(name="acme", email="ops@acme.io", tier="pro")
    assert plaintext.startswith("tg_") and len(plaintext) == 41 and looks_valid(plaintext)
    assert record.id.startswith("ak_") and len(record.id) == 19
    assert record.prefix == plaintext[:11]
    assert (record.kind, record.tier, record.user_id, record.created_at) == ("api", "pro", None, clock.now())
    assert await vault.find(plaintext) == record
    assert await store.get_api_key(record.id) == record
    assert await store.list_api_keys() == [record]


async def test_only_the_hash_is_stored(store, vault):
    record, plaintext = await vault.create(name="n", email="e@x.io", tier="basic")
    text = await dump_text(store)
    assert plaintext not in text
    assert plaintext[3:35] not in text  # the random part alone
    assert hash_key(PEPPER, plaintext) in text
    assert record.prefix in text


async def test_revoked_key_is_not_found(store, vault):
    record, plaintext = await vault.create(name="n", email="e@x.io", tier="basic")
    assert await store.revoke_api_key(record.id) is True
    assert await store.revoke_api_key(record.id) is False  # already revoked
    assert await vault.find(plaintext) is None
    assert await store.list_api_keys() == []
    [listed] = await store.list_api_keys(include_revoked=True)
    assert listed.revoked_at is not None
    assert await store.active_key_hashes() == {}


async def test_expired_key_is_not_found(store, clock, vault):
    record, plaintext = await vault.create(
        name="n", email="e@x.io", tier="basic", expires_at=clock.now() + 60
    )
    assert await vault.find(plaintext) == record
    clock.advance(60)
    assert await vault.find(plaintext) is None
    assert await store.active_key_hashes() == {}


async def test_bad_checksum_is_rejected_without_a_query(store, monkeypatch, vault):
    _, plaintext = await vault.create(name="n", email="e@x.io", tier="basic")
    calls = []
    real = keys_repo.find_by_hash
    monkeypatch.setattr(keys_repo, "find_by_hash", lambda *a: calls.append(a) or real(*a))
    last = plaintext[-1]
    typo = plaintext[:-1] + next(c for c in BASE62 if c != last)
    for bad in (typo, plaintext[:-1], plaintext + "x", "", "Bearer " + plaintext, "tg_" + "a" * 38):
        assert await vault.find(bad) is None
    assert calls == []
    assert await vault.find(plaintext) is not None
    assert len(calls) == 1


async def test_unknown_well_formed_key_is_none(store, vault):
    from services.auth.api_keys import new_api_key

    assert await vault.find(new_api_key()) is None


async def test_other_users_key_is_invisible(store, vault, credentials):
    alice = await credentials.create_user("alice@x.io", "pw-alice")
    await store.set_registration_open(True)
    bob = await credentials.create_user("bob@x.io", "pw-bob")
    record, plaintext = await vault.create(
        name="a", email=alice.email, tier="basic", user_id=alice.id, kind="token"
    )
    assert await store.get_api_key(record.id, user_id=alice.id) == record
    assert await store.get_api_key(record.id, user_id=bob.id) is None
    assert await store.get_api_key("ak_doesnotexist000", user_id=bob.id) is None
    assert await store.list_api_keys(user_id=bob.id) == []
    assert await store.revoke_api_key(record.id, user_id=bob.id) is False
    assert await vault.find(plaintext) == record  # untouched
    assert await store.list_api_keys(user_id=alice.id, kind="token") == [record]
    assert await store.list_api_keys(user_id=alice.id, kind="api") == []
    assert await store.revoke_api_key(record.id, user_id=alice.id) is True


async def test_create_validates(store, vault):
    with pytest.raises(UnknownTier):
        await vault.create(name="n", email="e", tier="platinum")
    with pytest.raises(UnknownUser):
        await vault.create(name="n", email="e", tier="basic", user_id="usr_missing")
    with pytest.raises(InvalidArgument):
        await vault.create(name="n", email="e", tier="basic", kind="admin")
    assert await store.list_api_keys(include_revoked=True) == []


async def test_active_key_hashes_and_listing_order(store, clock, vault):
    first, k1 = await vault.create(name="1", email="e", tier="basic")
    clock.advance(1)
    second, k2 = await vault.create(name="2", email="e", tier="")
    assert await store.list_api_keys() == [second, first]  # newest first
    assert await store.active_key_hashes() == {hash_key(PEPPER, k1): first, hash_key(PEPPER, k2): second}


async def test_touch_moves_last_used_forward_only(store, vault):
    a, _ = await vault.create(name="a", email="e", tier="basic")
    b, _ = await vault.create(name="b", email="e", tier="basic")
    assert await store.touch_api_keys({a.id: 100.0, b.id: 50.0, "ak_unknown": 1.0}) == 2
    assert await store.touch_api_keys({a.id: 90.0}) == 0  # older: ignored
    assert await store.touch_api_keys({}) == 0
    assert (await store.get_api_key(a.id)).last_used_at == 100.0
    assert (await store.get_api_key(b.id)).last_used_at == 50.0
