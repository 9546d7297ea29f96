"""Provider keys: sealed at rest, AAD-bound to their row, isolated per user, rotatable (F2, F5)."""

from __future__ import annotations

import pytest

from services.auth.sealing import SealError, key_id
from services.store import ProviderKeyNotFound
from tests.services.store.conftest import SEAL_KEY, dump_text, make_sealer

SECRET_A = "sk-alice-0123456789abcdefWXYZ"
SECRET_B = "sk-bob-0123456789abcdefghijk"
SECRET_SHARED = "sk-shared-0123456789abcdefgh"


async def _two_users(store):
    alice = await store.create_user("alice@x.io", "pw")
    await store.set_registration_open(True)
    bob = await store.create_user("bob@x.io", "pw")
    return alice, bob


async def _add(store, user_id, secret, **kw):
    return await store.add_provider_key(
        user_id=user_id, provider_kind="openai", name="k", base_url="https://api.openai.com/v1",
        secret=secret, models=["gpt-4o", "gpt-4o-mini"], default_model="gpt-4o", priority=1,
        daily_quota=100, rpm=10, **kw,
    )


async def test_add_and_open(store, clock):
    rec = await _add(store, None, SECRET_SHARED)
    assert rec.id.startswith("pk_") and rec.mask == "sk-...efgh"
    assert (rec.models, rec.default_model, rec.priority, rec.daily_quota, rec.rpm) == (
        ["gpt-4o", "gpt-4o-mini"], "gpt-4o", 1, 100, 10)
    assert rec.created_at == clock.now() and rec.disabled is False
    assert await store.open_provider_key(rec.id) == SECRET_SHARED
    assert await store.get_provider_key(rec.id, None) == rec
    with pytest.raises(ProviderKeyNotFound):
        await store.open_provider_key("pk_missing")


async def test_secret_is_sealed_at_rest(store):
    rec = await _add(store, None, SECRET_SHARED)
    text = await dump_text(store)
    assert SECRET_SHARED not in text and SECRET_SHARED[3:15] not in text
    assert f"v1:{key_id(SEAL_KEY)}:" in text and rec.mask in text


async def test_listing_is_isolated_between_users(store):
    alice, bob = await _two_users(store)
    shared = await _add(store, None, SECRET_SHARED)
    mine = await _add(store, alice.id, SECRET_A)
    theirs = await _add(store, bob.id, SECRET_B)
    assert await store.list_provider_keys() == [shared]
    assert await store.list_provider_keys(alice.id) == [mine]
    assert await store.list_provider_keys(bob.id) == [theirs]
    assert {r.id for r in await store.list_all_provider_keys()} == {shared.id, mine.id, theirs.id}
    assert await store.get_provider_key(theirs.id, alice.id) is None
    assert await store.get_provider_key(shared.id, alice.id) is None
    assert await store.get_provider_key(mine.id, None) is None
    assert await store.delete_provider_key(theirs.id, alice.id) is False
    assert await store.delete_provider_key(shared.id, alice.id) is False
    assert await store.get_provider_key(theirs.id, bob.id) == theirs
    assert await store.delete_provider_key(mine.id, alice.id) is True
    assert await store.list_provider_keys(alice.id) == []


async def test_ciphertext_moved_to_another_row_fails(store):
    one = await _add(store, None, SECRET_A)
    two = await _add(store, None, SECRET_B)

    def move(db):
        sealed = db.execute_sql(f"SELECT sealed FROM provider_keys WHERE id = '{one.id}'").fetchone()[0]
        db.execute_sql(f"UPDATE provider_keys SET sealed = '{sealed}' WHERE id = '{two.id}'")

    await store.run(move)
    assert await store.open_provider_key(one.id) == SECRET_A
    with pytest.raises(SealError) as info:
        await store.open_provider_key(two.id)
    assert SECRET_A not in str(info.value) and SECRET_B not in str(info.value)


async def test_disable_and_enable(store):
    rec = await _add(store, None, SECRET_A)
    assert await store.set_provider_key_disabled(rec.id, True) is True
    assert (await store.get_provider_key(rec.id, None)).disabled is True
    assert await store.set_provider_key_disabled("pk_missing", True) is False


async def test_missing_sealing_key_stops_start_and_names_it(make_store):
    first = await make_store()
    rec = await _add(first, None, SECRET_A)
    await first.close()
    other = bytes(32)
    with pytest.raises(SealError) as info:
        await make_store(sealer=make_sealer(other))
    message = str(info.value)
    assert rec.id in message and key_id(SEAL_KEY) in message
    assert SECRET_A not in message and SEAL_KEY.hex() not in message


async def test_rotation_keeps_old_rows_readable(make_store):
    old_store = await make_store()
    old = await _add(old_store, None, SECRET_A)
    await old_store.close()
    new_key = bytes(range(100, 132))
    rotated = await make_store(sealer=make_sealer(SEAL_KEY, new_key))
    new = await _add(rotated, None, SECRET_B)
    assert await rotated.open_provider_key(old.id) == SECRET_A
    assert await rotated.open_provider_key(new.id) == SECRET_B
    sealed = await rotated.run(
        lambda db: db.execute_sql(f"SELECT sealed FROM provider_keys WHERE id = '{new.id}'").fetchone()[0]
    )
    assert sealed.startswith(f"v1:{key_id(new_key)}:")


async def test_validation(store):
    from services.core.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        await _add(store, None, "")
    with pytest.raises(InvalidArgument):
        await store.add_provider_key(user_id=None, provider_kind="openai", secret="x" * 20, rpm=-1)
