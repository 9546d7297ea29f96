"""Many streams to one provider are open upstream at once (issue 20 point 4): a stream holds its
upstream connection for its whole length, so a per-host connection cap makes every stream past
it wait, unseen, for another to end. The old fixed cap of 256 ran 1,000 paced streams in four
waves (TTFT p99 +6.9 s). Real sockets: client -> bridge -> core -> the fake upstream."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body


async def _open_streams(url: str, key: str, n: int, first_tokens: list[int]) -> tuple[aiohttp.ClientSession, list]:
    """n streams that each send one token and then stay silent (fault-stall-after-1)."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def one() -> None:
        async with session.post(url + CHAT, json=chat_body("fault-stall-after-1", stream=True), headers=bearer(key)) as r:
            assert r.status == 200
            async for line in r.content:
                if line.startswith(b"data: {") and b'"content":"tok0' in line:
                    first_tokens[0] += 1
            # never reached: the upstream stays silent until the test hangs up

    return session, [asyncio.create_task(one()) for _ in range(n)]


async def _until(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        await asyncio.sleep(0.02)
    return cond()


async def _hang_up(session: aiohttp.ClientSession, tasks: list) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()


async def test_300_streams_to_one_provider_are_all_open_upstream_at_once(gateway, fake_openai):
    key = await gateway.new_key()
    got = [0]
    session, tasks = await _open_streams(gateway.url, key, 300, got)
    try:
        assert await _until(lambda: got[0] == 300, 30.0), (got[0], fake_openai.streams_started)
        assert fake_openai.streams_started == 300  # all at once: the old cap held 44 of them back
    finally:
        await _hang_up(session, tasks)


async def test_a_configured_cap_holds_the_streams_past_it_back(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), upstream_connections_per_host=2)
    async with run_gateway(cfg) as gw:
        key = await gw.new_key()
        got = [0]
        session, tasks = await _open_streams(gw.url, key, 3, got)
        try:
            assert await _until(lambda: got[0] == 2, 10.0), got[0]
            await asyncio.sleep(0.3)
            assert (got[0], fake_openai.streams_started) == (2, 2)  # the third waits for a connection
        finally:
            await _hang_up(session, tasks)
