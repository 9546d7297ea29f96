"""RELIABILITY C2 (scaled for make test): two gateway processes share one limit.

Two `python -m services` processes on their own ports and data directories, one PostgreSQL
schema, one Redis, the same TOLLGATE_SECRET_KEY (a key made on one works on the other). Four
clients hammer both gateways with one 100 rpm key: within the window between 99 and 100
requests are admitted in all, and each gateway serves 30–70 % of them; the ledger both write to
has one row per request. (The 60 s soak with a moved clock is `make soak`'s.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import aiohttp
import psycopg2

from tests.reliability.replicas import replica, write_config
from tests.support.gateway import ADMIN_KEY
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tests.support.sse_read import CHAT, bearer, chat_body

RPM = 100
CLIENTS = 4


async def hammer(urls: list[str], key: str, max_s: float = 30.0) -> tuple[Counter, Counter]:
    """CLIENTS clients, each alternating between the gateways as fast as answers come back, until
    both gateways have refused 20 requests (the limit is reached everywhere) or `max_s` passed."""
    admitted: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    stop = time.monotonic() + max_s

    def done() -> bool:
        return time.monotonic() > stop or all(refused[u] >= 20 for u in urls)

    async def client(i: int, s: aiohttp.ClientSession) -> None:
        n = i
        while not done():
            url = urls[n % len(urls)]
            n += 1
            async with s.post(url + CHAT, json=chat_body("tokens-1"), headers=bearer(key)) as r:
                await r.read()
                assert r.status in (200, 429), (r.status, await r.text())
                (admitted if r.status == 200 else refused)[url] += 1

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(client(i, s) for i in range(CLIENTS)))
    return admitted, refused


async def test_two_gateway_processes_enforce_one_limit(tmp_path, fake_openai, postgres_url, redis_url):
    cfg = write_config(tmp_path / "tollgate.toml", fake_openai.base_url, {"c2": {"rpm": RPM}})
    shared = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url}
    async with contextlib.AsyncExitStack() as stack:
        # Both start at once (each stops by its PID when the stack closes, whatever happened).
        a, b = await asyncio.gather(*(stack.enter_async_context(replica(tmp_path / n, cfg, n, **shared))
                                      for n in ("gw1", "gw2")))
        async with aiohttp.ClientSession() as s:
            async with s.post(a.url + "/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY},
                              json={"name": "c2", "email": "c2@example.com", "tier": "c2"}) as r:
                assert r.status == 201, await r.text()
                key = (await r.json())["key"]
            # The key made on one replica is known to the other (one database, one pepper).
            async with s.get(b.url + "/v1/models", headers=bearer(key)) as r:
                assert r.status == 200 and r.headers["X-RateLimit-Limit"] == str(RPM)

        t0 = time.monotonic()
        admitted, refused = await hammer([a.url, b.url], key)
        assert time.monotonic() - t0 < 55  # all of it inside one 60 s window
        total = sum(admitted.values())
        split = {url: n / total for url, n in admitted.items()}
        print(f"C2: admitted {total} ({dict(admitted)}), refused {sum(refused.values())}, split {split}")
        assert 99 <= total <= RPM, dict(admitted)
        assert sum(refused.values()) > 0  # the clients really ran past the limit
        assert all(0.30 <= split.get(url, 0.0) <= 0.70 for url in (a.url, b.url)), split
        assert len(fake_openai.requests) == total  # nothing refused went upstream

        # The ledger both replicas write to: one row per request, the admitted ones `ok`.
        await asyncio.sleep(0.5)  # both flush every 0.1 s
        conn = psycopg2.connect(postgres_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT status, count(*) FROM usage GROUP BY status")
                by_status = dict(cur.fetchall())
        finally:
            conn.close()
        assert by_status.get("ok") == total
        assert by_status.get("rate_limited") == sum(refused.values())
