"""UserKeys: a user's own provider keys as candidates, cached, isolated (real store on SQLite)."""

from __future__ import annotations

import asyncio

import pytest

from services.auth.credentials import Credentials
from services.auth.provider_secrets import ProviderSecrets
from services.auth.sealing import Sealer, key_id
from services.auth.secrets import derive
from services.catalog.pricing import Catalog
from services.clock import FakeClock
from services.core.scrub import Scrubber
from services.core.types import Target
from services.limits.base import Rule
from services.routing.user_keys import UserKeys
from services.store import Store
from services.store.records import ProviderKeyNotFound

SECRET = bytes(range(32))
PEPPER = derive(SECRET, "api-key-pepper")
SEAL = derive(SECRET, "provider-key-seal")


class CountingStore:
    """The real store and provider secrets, counting the calls the hot path must not repeat."""

    def __init__(self, store: Store, secrets: ProviderSecrets) -> None:
        self.store = store
        self.secrets = secrets
        self.lists = 0
        self.opens = 0

    async def list_provider_keys(self, user_id):
        self.lists += 1
        return await self.store.list_provider_keys(user_id)

    async def open(self, key_id):
        self.opens += 1
        return await self.secrets.open(key_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path, clock):
    s = Store(None, str(tmp_path), clock)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
def secrets(store, clock) -> ProviderSecrets:
    return ProviderSecrets(store, Sealer({key_id(SEAL): SEAL}, key_id(SEAL)), clock, Scrubber(), "TOLLGATE_SECRET_KEY")


@pytest.fixture
def credentials(store, clock) -> Credentials:
    return Credentials(store, clock, PEPPER)


@pytest.fixture
async def world(store, credentials, secrets):
    """Two users with keys, plus a gateway-wide key in the same table."""
    ann = await credentials.create_user("ann@example.com", "password-ann")
    await store.set_registration_open(True)
    bob = await credentials.create_user("bob@example.com", "password-bob")
    keys = {
        "ann_openai": await secrets.add(user_id=ann.id, provider_kind="openai", name="a1", secret="sk-ann-openai-000111",
                                                   models=["gpt-4o", "gpt-4o-mini"], default_model="gpt-4o", priority=1,
                                                   rpm=10, daily_quota=500),
        "ann_any": await secrets.add(user_id=ann.id, provider_kind="anthropic", name="a2", secret="sk-ann-any-000222",
                                                base_url="https://proxy.example.com", default_model="claude-x", priority=0),
        "ann_off": await secrets.add(user_id=ann.id, provider_kind="openai", name="a3", secret="sk-ann-off-000333",
                                                models=["gpt-4o"]),
        "bob_openai": await secrets.add(user_id=bob.id, provider_kind="openai", name="b1", secret="sk-bob-openai-000444",
                                                   models=["gpt-4o"], default_model="gpt-4o"),
        "shared": await secrets.add(user_id=None, provider_kind="openai", name="g", secret="sk-gateway-000555",
                                               models=["gpt-4o"]),
    }
    await store.set_provider_key_disabled(keys["ann_off"].id, True)
    return ann, bob, keys


async def test_candidates_are_the_users_enabled_keys_that_allow_the_model(store, clock, world, secrets) -> None:
    ann, bob, k = world
    uk = UserKeys(store, secrets, clock, catalog=Catalog.builtin())
    views = await uk.candidates(ann.id, "gpt-4o")
    by_id = {v.target.key_id: v for v in views}
    assert set(by_id) == {k["ann_openai"].id, k["ann_any"].id}  # not the disabled one, not Bob's, not the gateway's
    t = by_id[k["ann_openai"].id].target
    assert t == Target(provider="openai", kind="openai", key_id=k["ann_openai"].id, model="gpt-4o",
                       base_url="https://api.openai.com/v1", timeout_s=60.0, owner=ann.id)
    assert by_id[k["ann_openai"].id].priority == 1 and by_id[k["ann_any"].id].priority == 0
    assert by_id[k["ann_any"].id].target.base_url == "https://proxy.example.com"
    assert by_id[k["ann_openai"].id].price_in_per_mtok > 0  # catalogue price of gpt-4o

    # No model named: each key's default model; an empty allow-list allows anything.
    assert {(v.target.key_id, v.target.model) for v in await uk.candidates(ann.id, "")} == {
        (k["ann_openai"].id, "gpt-4o"), (k["ann_any"].id, "claude-x")}
    assert [v.target.key_id for v in await uk.candidates(ann.id, "something-else")] == [k["ann_any"].id]
    assert [v.target.key_id for v in await uk.candidates(bob.id, "gpt-4o")] == [k["bob_openai"].id]
    assert await uk.candidates(bob.id, "gpt-4o-mini") == []
    assert await uk.candidates("", "gpt-4o") == []
    assert await uk.candidates("usr_nobody", "gpt-4o") == []


async def test_isolation_across_many_users(store, clock, credentials, secrets) -> None:
    users = []
    for i in range(6):
        u = await credentials.create_user(f"u{i}@example.com", "password-x")
        await store.set_registration_open(True)
        own = {(await secrets.add(user_id=u.id, provider_kind="openai", secret=f"sk-user{i}-key{j}-xxxx",
                                             models=["m"] if j % 2 else [])).id for j in range(3)}
        users.append((u.id, own))
    uk = UserKeys(store, secrets, clock)
    for uid, own in users:
        for model in ("m", "", "x"):
            views = await uk.candidates(uid, model)
            assert {v.target.key_id for v in views} <= own
            assert all(v.target.owner == uid for v in views)
        for other, theirs in users:
            if other != uid:
                for kid in theirs:
                    with pytest.raises(ProviderKeyNotFound):
                        await uk.secret(kid, owner=uid)


async def test_listing_is_cached_for_a_second_and_shared(store, clock, world, secrets) -> None:
    ann, _, k = world
    counting = CountingStore(store, secrets)
    uk = UserKeys(counting, counting, clock)
    await asyncio.gather(*(uk.candidates(ann.id, "gpt-4o") for _ in range(20)))
    for _ in range(50):
        await uk.candidates(ann.id, "gpt-4o")
    assert counting.lists == 1
    await secrets.delete(k["ann_openai"].id, ann.id)
    assert k["ann_openai"].id in {v.target.key_id for v in await uk.candidates(ann.id, "gpt-4o")}
    clock.advance(1.0)
    assert k["ann_openai"].id not in {v.target.key_id for v in await uk.candidates(ann.id, "gpt-4o")}
    assert counting.lists == 2
    # forget() (after a change through KeyService) takes effect at once.
    await secrets.add(user_id=ann.id, provider_kind="groq", secret="sk-ann-groq-0009999", models=["llama"])
    uk.forget(ann.id)
    assert {v.target.kind for v in await uk.candidates(ann.id, "llama")} == {"anthropic", "groq"}


async def test_secret_is_opened_once_and_only_for_its_owner(store, clock, world, secrets) -> None:
    ann, bob, k = world
    counting = CountingStore(store, secrets)
    uk = UserKeys(counting, counting, clock)
    await uk.candidates(ann.id, "gpt-4o")
    kid = k["ann_openai"].id
    assert await uk.secret(kid, owner=ann.id) == "sk-ann-openai-000111"
    assert await uk.secret(kid, owner=ann.id) == "sk-ann-openai-000111"
    assert counting.opens == 1
    with pytest.raises(ProviderKeyNotFound):
        await uk.secret(kid, owner=bob.id)
    with pytest.raises(ProviderKeyNotFound):
        await uk.secret(k["shared"].id, owner=ann.id)  # a gateway key is not a user key
    # Deleted: once the listing refreshes, the cached secret goes with it.
    await secrets.delete(kid, ann.id)
    clock.advance(1.0)
    await uk.candidates(ann.id, "gpt-4o")
    with pytest.raises(ProviderKeyNotFound):
        await uk.secret(kid, owner=ann.id)
    with pytest.raises(ProviderKeyNotFound):
        await uk.secret(kid)  # the store has no such row either


async def test_key_rules_follow_the_key(store, clock, world, secrets) -> None:
    ann, _, k = world
    uk = UserKeys(store, secrets, clock, quota_tz="Europe/Paris")
    await uk.candidates(ann.id, "gpt-4o")
    assert uk.rules(k["ann_openai"].id) == (Rule("key_rpm", 10, window_s=60.0),
                                           Rule("key_daily", 500, period="day", tz="Europe/Paris"))
    assert uk.rules(k["ann_any"].id) == ()
    assert uk.rules("pk_unknown") == ()


async def test_a_store_failure_reaches_every_waiter_and_is_not_cached(store, clock, world, secrets) -> None:
    ann, _, _ = world

    class Flaky(CountingStore):
        fail = True

        async def list_provider_keys(self, user_id):
            self.lists += 1
            await asyncio.sleep(0.01)
            if self.fail:
                raise RuntimeError("database unavailable")
            return await self.store.list_provider_keys(user_id)

    flaky = Flaky(store, secrets)
    uk = UserKeys(flaky, flaky, clock)
    results = await asyncio.gather(*(uk.candidates(ann.id, "gpt-4o") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and flaky.lists == 1
    flaky.fail = False
    assert len(await uk.candidates(ann.id, "gpt-4o")) == 2
