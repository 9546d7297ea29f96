"""Settings: plain key/value rows; set_setting_once keeps the first writer's value (the secret
fingerprint's start-up check relies on it across replicas)."""

from __future__ import annotations

import asyncio


async def test_get_and_set(store):
    assert await store.get_setting("theme") is None
    assert await store.get_setting("theme", "dark") == "dark"
    await store.set_setting("theme", "light")
    await store.set_setting("theme", "blue")
    assert await store.get_setting("theme") == "blue"


async def test_set_once_keeps_the_first_value(make_store):
    a, b = await make_store(), await make_store()
    results = await asyncio.gather(*(s.set_setting_once("fp", f"v{i}") for i, s in enumerate((a, b, a, b))))
    assert len(set(results)) == 1 and results[0] in {"v0", "v1", "v2", "v3"}
    assert await a.set_setting_once("fp", "later") == results[0]
    assert await b.get_setting("fp") == results[0]
