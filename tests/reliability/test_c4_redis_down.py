"""RELIABILITY C4: Redis goes away mid-run (a TCP proxy in front of the real one is cut or paused).

Fail mode "open": requests keep being served under per-gateway limits, /metrics says
tollgate_limiter_backend_up 0, /health/ready answers 200 with `limiter: degraded`, and shared
limits are back within ~5 s of Redis returning. Fail mode "closed": 503 + Retry-After (never
429 or 500) and /health/ready 503.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from tests.support.gateway import config, provider, run_gateway
from tests.support.redis_server import TcpProxy, redis_url  # noqa: F401  (fixture)
from tests.support.sse_read import CHAT, bearer, chat_body

TIERS = DEFAULT_TIERS + (TierConfig("c4", rpm=30),)


@asynccontextmanager
async def gateway_behind_proxy(tmp_path, fake_openai, url: str, mode: str):
    proxy = TcpProxy(urlsplit(url).port or 6379)
    await proxy.start()
    try:
        cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), tiers=TIERS,
                     redis_url=proxy.url, limiter_fail_mode=mode)
        async with run_gateway(cfg) as gw:
            yield gw, proxy
    finally:
        proxy.paused = False
        await proxy.stop()


async def backend_up(gw) -> float:
    text = (await gw.http.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("tollgate_limiter_backend_up"))
    return float(line.split()[-1])


class Load:
    """A client sending a request every 20 ms on an unlimited-enough key, counting answers."""

    def __init__(self, gw, key: str) -> None:
        self.gw, self.key = gw, key
        self.codes: list[int] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            r = await self.gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(self.key))
            self.codes.append(r.status_code)
            await asyncio.sleep(0.02)

    def __enter__(self) -> "Load":
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()


async def wait_for(pred, timeout: float) -> float:
    """Seconds until `pred()` (async) is true; fails after `timeout`."""
    t0 = time.monotonic()
    while not await pred():
        assert time.monotonic() - t0 < timeout, f"not within {timeout} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


@pytest.mark.parametrize("fault", ["cut", "pause"])
async def test_fail_open_serves_under_local_limits_and_recovers(tmp_path, fake_openai, redis_url, fault):
    async with gateway_behind_proxy(tmp_path, fake_openai, redis_url, "open") as (gw, proxy):
        steady = await gw.new_key("enterprise")
        limited = await gw.new_key("c4")
        for _ in range(5):  # shared limits first: counted in Redis
            assert (await gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(limited))).status_code == 200
        assert await backend_up(gw) == 1.0

        with Load(gw, steady) as load:
            await asyncio.sleep(0.3)
            if fault == "cut":
                await proxy.stop()
            else:
                proxy.paused = True
            await asyncio.sleep(0.5)

            # Still serving, now on this gateway's own counters: a fresh 30 rpm window here.
            codes = [(await gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(limited))).status_code
                     for _ in range(35)]
            assert codes.count(200) == 30 and codes.count(429) == 5, codes
            assert await backend_up(gw) == 0.0
            r = await gw.http.get("/health/ready")
            assert r.status_code == 200 and r.json()["checks"]["limiter"] == "degraded"

            if fault == "cut":
                await proxy.start()
            else:
                proxy.paused = False

            async def shared_again() -> bool:
                return await backend_up(gw) == 1.0
            took = await wait_for(shared_again, 6.0)
            assert took <= 5.0, took
            r = await gw.http.get("/health/ready")
            assert r.status_code == 200 and r.json()["checks"]["limiter"] == "ok"
            await asyncio.sleep(0.2)

        # Every request of the steady load was answered, through the cut and back.
        assert load.codes and set(load.codes) == {200}, {c: load.codes.count(c) for c in set(load.codes)}
        # Redis decides again: it still holds the 5 requests from before the outage.
        r = await gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(limited))
        assert r.status_code == 200 and r.headers["X-RateLimit-Used"] == "6"


@pytest.mark.parametrize("fault", ["cut", "pause"])
async def test_fail_closed_answers_503_with_retry_after(tmp_path, fake_openai, redis_url, fault):
    async with gateway_behind_proxy(tmp_path, fake_openai, redis_url, "closed") as (gw, proxy):
        key = await gw.new_key("c4")
        assert (await gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(key))).status_code == 200
        upstream_calls = len(fake_openai.requests)
        if fault == "cut":
            await proxy.stop()
        else:
            proxy.paused = True

        for _ in range(3):
            r = await gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(key))
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["type"] == "api_error"
        r = await gw.http.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"}]}, headers=bearer(key))
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["code"] == "SERVICE_UNAVAILABLE"
        assert len(fake_openai.requests) == upstream_calls  # nothing went upstream unmetered

        r = await gw.http.get("/health/ready")
        assert r.status_code == 503 and r.json()["checks"]["limiter"] == "unavailable"
        rows = [x for x in await gw.ledger() if x.status != "ok"]
        assert {x.status for x in rows} == {"unavailable"} and len(rows) == 4

        if fault == "cut":
            await proxy.start()
        else:
            proxy.paused = False

        async def serving() -> bool:
            return (await gw.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(key))).status_code == 200
        assert await wait_for(serving, 6.0) <= 5.0
        assert (await gw.http.get("/health/ready")).status_code == 200
