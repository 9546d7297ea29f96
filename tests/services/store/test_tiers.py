"""Tiers: the six defaults seeded once, operator edits kept, upsert and validation."""

from __future__ import annotations

import pytest

from services.core.errors import InvalidArgument
from services.store import TierRecord

EXPECTED = {
    "basic": (60, 1_000, 100_000, 0),
    "pro": (300, 10_000, 1_000_000, 0),
    "enterprise": (1_000, 100_000, 10_000_000, 0),
    "explorer": (20, 0, 0, 100_000),
    "startup": (60, 0, 0, 1_000_000),
    "growth": (200, 0, 0, 10_000_000),
}


async def test_default_tiers_seeded(store):
    tiers = {t.name: (t.rpm, t.rpd, t.tpd, t.tpm_month) for t in await store.list_tiers()}
    assert tiers == EXPECTED
    assert (await store.get_tier("pro")).rpm == 300
    assert await store.get_tier("nope") is None


async def test_seeded_once_and_edits_survive_restart(make_store):
    first = await make_store()
    await first.upsert_tier(TierRecord("basic", rpm=5, rpd=6, tpd=7, description="edited"))
    await first.close()
    second = await make_store()
    tiers = await second.list_tiers()
    assert len(tiers) == 6
    assert await second.get_tier("basic") == TierRecord("basic", 5, 6, 7, 0, "edited")


async def test_upsert_inserts_and_updates(store):
    await store.upsert_tier(TierRecord("team", rpm=10, tpm_month=5))
    assert await store.get_tier("team") == TierRecord("team", 10, 0, 0, 5, "")
    await store.upsert_tier(TierRecord("team", rpm=11))
    assert (await store.get_tier("team")).rpm == 11
    assert len(await store.list_tiers()) == 7


@pytest.mark.parametrize(
    "tier", [TierRecord(""), TierRecord(" x"), TierRecord("x", rpm=-1), TierRecord("x", tpd=1.5)]
)
async def test_invalid_tiers_rejected(store, tier):
    with pytest.raises(InvalidArgument):
        await store.upsert_tier(tier)
