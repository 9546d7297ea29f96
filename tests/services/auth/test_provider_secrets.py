"""ProviderSecrets over a real store: sealed at rest, AAD-bound to their row, isolated per user,
rotatable, known to the scrubber while they exist (F2, F5, issue 15 point 3)."""

from __future__ import annotations

import pytest

from services.auth.provider_secrets import ProviderSecrets
from services.auth.sealing import SealError, key_id
from services.core.scrub import REDACTED, Scrubber
from services.store import ProviderKeyNotFound
from services.store.records import LoadedModelRecord
from tests.services.auth.conftest import SECRET_HINT
from tests.services.store.conftest import SEAL_KEY, dump_text, make_sealer

SECRET_A = "sk-alice-0123456789abcdefWXYZ"
SECRET_B = "sk-bob-0123456789abcdefghijk"
SECRET_SHARED = "sk-shared-0123456789abcdefgh"


async def _two_users(store, credentials):
    alice = await credentials.create_user("alice@x.io", "pw")
    await store.set_registration_open(True)
    bob = await credentials.create_user("bob@x.io", "pw")
    return alice, bob


def _model(name: str) -> LoadedModelRecord:
    return LoadedModelRecord(id="", name=name, format="openai", source="https://api.example.com/v1", provider="",
                             kind="openai_compatible", base_url="https://api.example.com/v1", upstream_model=name)


async def _add(provider_secrets, user_id, secret, **kw):
    return await provider_secrets.add(
        user_id=user_id, provider_kind="openai", name="k", base_url="https://api.openai.com/v1",
        secret=secret, models=["gpt-4o", "gpt-4o-mini"], default_model="gpt-4o", priority=1,
        daily_quota=100, rpm=10, **kw,
    )


async def test_add_and_open(store, clock, provider_secrets):
    rec = await _add(provider_secrets, None, SECRET_SHARED)
    assert rec.id.startswith("pk_") and rec.mask == "sk-...efgh"
    assert (rec.models, rec.default_model, rec.priority, rec.daily_quota, rec.rpm) == (
        ["gpt-4o", "gpt-4o-mini"], "gpt-4o", 1, 100, 10)
    assert rec.created_at == clock.now() and rec.disabled is False
    assert await provider_secrets.open(rec.id) == SECRET_SHARED
    assert await store.get_provider_key(rec.id, None) == rec
    with pytest.raises(ProviderKeyNotFound):
        await provider_secrets.open("pk_missing")


async def test_secret_is_sealed_at_rest(store, provider_secrets):
    rec = await _add(provider_secrets, None, SECRET_SHARED)
    text = await dump_text(store)
    assert SECRET_SHARED not in text and SECRET_SHARED[3:15] not in text
    assert f"v1:{key_id(SEAL_KEY)}:" in text and rec.mask in text


async def test_listing_is_isolated_between_users(store, credentials, provider_secrets):
    alice, bob = await _two_users(store, credentials)
    shared = await _add(provider_secrets, None, SECRET_SHARED)
    mine = await _add(provider_secrets, alice.id, SECRET_A)
    theirs = await _add(provider_secrets, bob.id, SECRET_B)
    assert await store.list_provider_keys() == [shared]
    assert await store.list_provider_keys(alice.id) == [mine]
    assert await store.list_provider_keys(bob.id) == [theirs]
    assert {r.id for r in await store.list_all_provider_keys()} == {shared.id, mine.id, theirs.id}
    assert await store.get_provider_key(theirs.id, alice.id) is None
    assert await store.get_provider_key(shared.id, alice.id) is None
    assert await store.get_provider_key(mine.id, None) is None
    assert await provider_secrets.delete(theirs.id, alice.id) is False
    assert await provider_secrets.delete(shared.id, alice.id) is False
    assert await store.get_provider_key(theirs.id, bob.id) == theirs
    assert await provider_secrets.delete(mine.id, alice.id) is True
    assert await store.list_provider_keys(alice.id) == []


async def test_ciphertext_moved_to_another_row_fails(store, provider_secrets):
    one = await _add(provider_secrets, None, SECRET_A)
    two = await _add(provider_secrets, None, SECRET_B)

    def move(db):
        sealed = db.execute_sql(f"SELECT sealed FROM provider_keys WHERE id = '{one.id}'").fetchone()[0]
        db.execute_sql(f"UPDATE provider_keys SET sealed = '{sealed}' WHERE id = '{two.id}'")

    await store.run(move)
    assert await provider_secrets.open(one.id) == SECRET_A
    with pytest.raises(SealError) as info:
        await provider_secrets.open(two.id)
    assert SECRET_A not in str(info.value) and SECRET_B not in str(info.value)


async def test_disable_and_enable(store, provider_secrets):
    rec = await _add(provider_secrets, None, SECRET_A)
    assert await store.set_provider_key_disabled(rec.id, True) is True
    assert (await store.get_provider_key(rec.id, None)).disabled is True
    assert await store.set_provider_key_disabled("pk_missing", True) is False


def _secrets(store, clock, *keys: bytes, scrubber: Scrubber | None = None) -> ProviderSecrets:
    return ProviderSecrets(store, make_sealer(*keys), clock, scrubber if scrubber is not None else Scrubber(), SECRET_HINT)


async def test_missing_sealing_key_stops_start_and_names_it(make_store, clock):
    first = await make_store()
    rec = await _add(_secrets(first, clock), None, SECRET_A)
    await first.close()
    other = bytes(32)
    with pytest.raises(SealError) as info:
        await _secrets(await make_store(), clock, other).check_sealed()
    message = str(info.value)
    assert rec.id in message and key_id(SEAL_KEY) in message and SECRET_HINT in message
    assert SECRET_A not in message and SEAL_KEY.hex() not in message


async def test_start_up_check_makes_every_stored_key_known_to_the_scrubber(make_store, clock):
    first = await make_store()
    await _add(_secrets(first, clock), None, SECRET_SHARED)
    await first.close()
    scrubber = Scrubber()
    await _secrets(await make_store(), clock, scrubber=scrubber).check_sealed()  # a restart, or another replica
    assert scrubber.scrub(f"upstream said: bad key {SECRET_SHARED}") == f"upstream said: bad key {REDACTED}"


async def test_scrubber_knows_a_key_from_add_or_open_until_it_is_deleted(store, clock, provider_secrets, scrubber):
    rec = await _add(provider_secrets, None, SECRET_A)
    line = f"echo {SECRET_A}"
    assert SECRET_A not in scrubber.scrub(line)
    elsewhere = Scrubber()  # another replica's: learns the key when it opens it
    assert await _secrets(store, clock, scrubber=elsewhere).open(rec.id) == SECRET_A
    assert SECRET_A not in elsewhere.scrub(line)
    assert await provider_secrets.delete(rec.id, None) is True
    assert scrubber.scrub(line) == line


async def test_rotation_keeps_old_rows_readable(make_store, clock):
    old_store = await make_store()
    old = await _add(_secrets(old_store, clock), None, SECRET_A)
    await old_store.close()
    new_key = bytes(range(100, 132))
    rotated_store = await make_store()
    rotated = _secrets(rotated_store, clock, SEAL_KEY, new_key)
    await rotated.check_sealed()
    new = await _add(rotated, None, SECRET_B)
    assert await rotated.open(old.id) == SECRET_A
    assert await rotated.open(new.id) == SECRET_B
    sealed = await rotated_store.run(
        lambda db: db.execute_sql(f"SELECT sealed FROM provider_keys WHERE id = '{new.id}'").fetchone()[0]
    )
    assert sealed.startswith(f"v1:{key_id(new_key)}:")


async def test_loaded_model_key_is_sealed_to_its_row(store, provider_secrets):
    with_key = await provider_secrets.add_loaded_model(_model("m1"), SECRET_A)
    without = await provider_secrets.add_loaded_model(_model("m2"))
    assert with_key.id.startswith("lm_") and with_key.has_key and not without.has_key
    assert await provider_secrets.open_loaded_model(with_key.id) == SECRET_A
    assert await provider_secrets.open_loaded_model(without.id) == ""
    text = await dump_text(store)
    assert SECRET_A not in text and f"v1:{key_id(SEAL_KEY)}:" in text


async def test_validation(store, provider_secrets):
    from services.core.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        await _add(provider_secrets, None, "")
    with pytest.raises(InvalidArgument):
        await provider_secrets.add(user_id=None, provider_kind="openai", secret="x" * 20, rpm=-1)
