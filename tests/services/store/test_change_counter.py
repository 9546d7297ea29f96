"""The store's change counter (migration 7, issue 20 point 5): every write to a table that replicas
poll moves it, from triggers, whoever writes; the ledger's writes do not."""

from __future__ import annotations

import asyncio

from services.store import UsageRecord
from services.store.records import LoadedModelRecord, ProviderKeyRecord, TierRecord


async def _moves(store, write) -> bool:
    before = await store.change_count()
    await write()
    return await store.change_count() != before


async def test_writes_to_polled_tables_move_it(store):
    pk = ProviderKeyRecord(id="", user_id=None, provider_kind="openai", name="shared", base_url="", mask="sk-…1234",
                           models=[], default_model="", priority=0, daily_quota=0, rpm=0, created_at=1.0)
    lm = LoadedModelRecord(id="", name="My Model", format="openai", source="http://127.0.0.1:9/v1", provider="",
                           kind="openai_compatible", base_url="http://127.0.0.1:9/v1", upstream_model="m")
    assert await _moves(store, lambda: store.upsert_tier(TierRecord("team", rpm=10)))  # insert
    assert await _moves(store, lambda: store.upsert_tier(TierRecord("team", rpm=11)))  # update
    assert await _moves(store, lambda: store.set_setting("model_aliases", '{"smart":["a"]}'))
    assert await _moves(store, lambda: store.set_setting("model_aliases", ""))
    added: list[ProviderKeyRecord] = []

    async def add_key():
        added.append(await store.insert_provider_key(pk, "sealed-secret"))

    assert await _moves(store, add_key)
    assert await _moves(store, lambda: store.set_provider_key_disabled(added[0].id, True))
    assert await _moves(store, lambda: store.delete_provider_key(added[0].id, None))
    assert await _moves(store, lambda: store.insert_loaded_model(lm))
    assert await _moves(store, lambda: store.remove_loaded_model("My Model"))
    # A hand-made edit (another tool, an older replica) moves it too: the triggers are in the database.
    assert await _moves(store, lambda: store.run(lambda db: db.execute_sql("DELETE FROM tiers WHERE name = 'team'")))


async def test_the_ledger_and_keys_in_use_do_not_move_it(store):
    before = await store.change_count()
    rows = [UsageRecord(request_id=f"r{i}", key_id="ak_a", created_at=1000.0 + i) for i in range(3)]
    await store.insert_usage(rows)
    await store.upsert_usage(rows)
    await store.list_edited_tiers()
    await store.list_provider_keys(None)
    assert await store.change_count() == before


async def test_read_from_a_thread_of_its_own(store):
    """What core/poller.py Changes calls, off the event loop."""
    await store.set_setting("x", "1")
    assert await asyncio.to_thread(store.change_count_blocking) == await store.change_count()


async def test_two_replicas_see_each_others_writes(make_store):
    a, b = await make_store(), await make_store()
    before = await b.change_count()
    await a.set_setting("model_aliases", '{"fast":["m"]}')
    assert await b.change_count() != before
