"""RELIABILITY C4, issue 15 point 1: Redis killed under load and started again, limits hold again.

Before the fix, a 60/min key got 100 of 100 through 5 s after Redis came back: every pooled
connection from before the outage failed once under the next burst, and each failure sent the
gateway back to its local limits. This test runs its own redis-server (never the shared one),
loads a gateway through it, kills it for ~8 s, starts it again on the same port, and from 1 s
after it answers again sends a burst on a fresh 60/min key: Redis decides, so exactly 60 pass.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from tests.support.gateway import config, provider, run_gateway
from tests.support.redis_server import own_redis  # noqa: F401  (fixture)
from tests.support.sse_read import CHAT, bearer, chat_body

TIERS = DEFAULT_TIERS + (TierConfig("h15", rpm=60),)


async def backend_up(gw) -> float:
    text = (await gw.http.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("tollgate_limiter_backend_up"))
    return float(line.split()[-1])


async def burst(http: httpx.AsyncClient, key: str, n: int) -> list[int]:
    async def one() -> int:
        return (await http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(key))).status_code
    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_shared_limit_holds_from_one_second_after_redis_restarts(tmp_path, fake_openai, own_redis):  # noqa: F811
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), tiers=TIERS,
                 redis_url=own_redis.url, limiter_fail_mode="open")
    async with run_gateway(cfg) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30,
                                                          limits=httpx.Limits(max_connections=200)) as http:
        steady = await gw.new_key("enterprise")
        warm = await gw.new_key("h15")
        # Shared limits first, with many pooled connections to Redis (a concurrent burst opens them).
        codes = await burst(http, warm, 100)
        assert codes.count(200) == 60 and codes.count(429) == 40, codes
        assert await backend_up(gw) == 1.0

        stop = asyncio.Event()
        served: list[int] = []

        async def load() -> None:
            while not stop.is_set():
                served.extend(await burst(http, steady, 4))
                await asyncio.sleep(0.02)

        loader = asyncio.ensure_future(load())
        try:
            await asyncio.sleep(0.5)
            await own_redis.kill()
            await asyncio.sleep(8.0)
            assert await backend_up(gw) == 0.0  # it noticed, and kept serving on local limits
            await own_redis.start()
            back = time.monotonic()
            await asyncio.sleep(1.0)
            limited = await gw.new_key("h15")  # a fresh key: Redis came back empty, so would the gateway
            t = time.monotonic() - back
            codes = await burst(http, limited, 100)
            assert codes.count(200) == 60 and codes.count(429) == 40, (t, {c: codes.count(c) for c in set(codes)})
            assert await backend_up(gw) == 1.0
            # And it stays shared under the load that kept running.
            await asyncio.sleep(1.0)
            codes = await burst(http, limited, 20)
            assert codes == [429] * 20, codes
            assert await backend_up(gw) == 1.0
        finally:
            stop.set()
            await loader
        assert served and set(served) == {200}, {c: served.count(c) for c in set(served)}
