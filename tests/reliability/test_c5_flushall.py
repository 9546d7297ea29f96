"""RELIABILITY C5: FLUSHALL mid-day → the day's counters are rebuilt from the ledger on the next
admit for the key; the budget is overshot by at most one reservation. C7: two gateways rebuilding
at once seed each counter once, and later spend is kept.

FLUSHALL wipes a whole server, so this test runs its own redis-server (started and stopped by
PID, on a free loopback port) instead of flushing the shared one other tests use; the shared
REDIS_URL fixture still decides whether Redis tests may run (a failure under CI=true).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from services.store.records import UsageFilter
from tests.support.gateway import config, provider, run_gateway
from tests.support.procs import free_port
from tests.support.redis_server import _unusable, redis_url  # noqa: F401  (fixture)
from tests.support.sse_read import CHAT, bearer, chat_body

# Each request reserves 7 (prompt "hi") + 50 (max_tokens) and the fake reports exactly 7 + 50.
COST = 57
TIERS = DEFAULT_TIERS + (TierConfig("c5", rpd=1_000, tpd=10 * COST),)
BODY = chat_body("tokens-50", max_tokens=50)


@pytest.fixture
async def private_redis(redis_url: str, tmp_path) -> AsyncIterator[str]:
    """A redis-server of our own (FLUSHALL must not touch the shared one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        _unusable("redis-server is not installed (needed for a private server to FLUSHALL)")
    port = free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if await client.ping():
                    break
            except OSError:
                pass
            except Exception:  # redis ConnectionError while it starts
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "private redis-server did not start"
            await asyncio.sleep(0.05)
        yield url
    finally:
        await client.aclose()
        proc.kill()  # by its own PID
        proc.wait(5)


async def flushall(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


async def test_flushall_rebuilds_the_counters_from_the_ledger(tmp_path, fake_openai, private_redis):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), redis_url=private_redis, tiers=TIERS)
    async with run_gateway(cfg) as gw:
        key = await gw.new_key("c5")
        for _ in range(6):
            r = await gw.http.post(CHAT, json=BODY, headers=bearer(key))
            assert r.status_code == 200 and r.json()["usage"]["total_tokens"] == COST
        assert r.headers["X-RateLimit-Used"] == "6"

        await flushall(private_redis)  # mid-day: both counters gone

        # The next admit notices the empty counter and rebuilds both from the ledger.
        r = await gw.http.post(CHAT, json=BODY, headers=bearer(key))
        assert r.status_code == 200
        assert gw.app.quotas.rebuilds == 2  # tokens/day and requests/day
        r = await gw.http.post(CHAT, json=BODY, headers=bearer(key))
        assert r.status_code == 200 and r.headers["X-RateLimit-Used"] == "8"  # 6 before + 2 since

        # What is left of the day's budget is what the ledger says: 2 more, then 429.
        codes = [(await gw.http.post(CHAT, json=BODY, headers=bearer(key))).status_code for _ in range(4)]
        assert codes == [200, 200, 429, 429]
        rows = await gw.ledger()
        key_id = rows[0].key_id
        totals = await gw.app.store.usage_totals(UsageFilter(key_id=key_id))
        spent = totals["prompt_tokens"] + totals["completion_tokens"]
        assert spent == 10 * COST  # the whole budget, not a token more
        d = await gw.app.limiter.peek("ak:" + key_id, gw.app.quotas.token_rules("c5"))
        assert d.used == spent


async def test_flushall_under_a_burst_overshoots_by_at_most_one_reservation(tmp_path, fake_openai, private_redis):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), redis_url=private_redis, tiers=TIERS)
    async with run_gateway(cfg) as gw:
        key = await gw.new_key("c5")
        for _ in range(6):
            assert (await gw.http.post(CHAT, json=BODY, headers=bearer(key))).status_code == 200
        await gw.app.ledger.flush()
        await flushall(private_redis)
        answers = await asyncio.gather(*(gw.http.post(CHAT, json=BODY, headers=bearer(key)) for _ in range(10)))
        admitted = sum(r.status_code == 200 for r in answers)
        assert {r.status_code for r in answers} <= {200, 429}
        assert 4 <= admitted <= 5, admitted  # 4 fit; one more at most
        rows = await gw.ledger()
        totals = await gw.app.store.usage_totals(UsageFilter(key_id=rows[0].key_id))
        assert totals["prompt_tokens"] + totals["completion_tokens"] <= 10 * COST + COST


async def test_two_gateways_rebuilding_one_window_at_once_seed_it_once(tmp_path, fake_openai, private_redis):
    """RELIABILITY C7: the day's counters are gone and two gateways (one Redis, one store) rebuild
    them at the same moment: a marker in Redis lets exactly one of them seed each counter from the
    ledger, and the spend after it is kept on top — not seeded twice (which would double the
    day's count) and not lost. The two rebuilds are started together directly: through requests,
    the second gateway's reservation would find the first one's and not rebuild at all."""
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), redis_url=private_redis, tiers=TIERS)
    async with run_gateway(cfg) as a, run_gateway(cfg) as b:
        key = await a.new_key("c5")
        for _ in range(6):
            assert (await a.http.post(CHAT, json=BODY, headers=bearer(key))).status_code == 200
        await a.app.ledger.flush()
        await flushall(private_redis)

        p = await a.app.auth.resolve({"authorization": "Bearer " + key})
        tok = a.app.quotas.token_rules("c5")
        rpd = tuple(r for r in a.app.quotas.request_rules("c5") if r.period)
        until = a.app.quotas._now()
        won = await asyncio.gather(a.app.quotas._rebuild(p, tok, until), b.app.quotas._rebuild(p, tok, until))
        assert any(won)
        # Each counter (tokens/day, requests/day) seeded once, by whichever gateway took its marker.
        assert a.app.quotas.rebuilds + b.app.quotas.rebuilds == 2
        assert (await b.app.limiter.peek(p.subject, tok)).used == 6 * COST  # seeded twice: 12 x COST
        assert (await b.app.limiter.peek(p.subject, rpd)).used == 6

        answers = await asyncio.gather(*(gw.http.post(CHAT, json=BODY, headers=bearer(key)) for gw in (a, b, a, b)))
        assert [r.status_code for r in answers] == [200] * 4
        assert (await a.app.limiter.peek(p.subject, tok)).used == 10 * COST  # the spend since: on top
        assert (await a.app.limiter.peek(p.subject, rpd)).used == 10
        r = await b.http.post(CHAT, json=BODY, headers=bearer(key))
        assert r.status_code == 429  # an 11th would pass the day's 10 x COST
        await b.app.ledger.flush()
        await a.app.ledger.flush()
        totals = await a.app.store.usage_totals(UsageFilter(key_id=p.key_id))
        assert totals["prompt_tokens"] + totals["completion_tokens"] == 10 * COST
