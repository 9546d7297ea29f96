"""RELIABILITY B7: 20 streams in flight, SIGKILL the gateway, restart it on the same data dir →
exactly one row per request (those cut by the kill say `interrupted`), and the token holds the
killed requests had taken come back within the lease + 5 s.

The rows exist because the pipeline opens every request in the ledger: a request still running
at a flush (and older than a second) has an `in_flight` placeholder, which the final row
replaces; a restarted gateway turns its earlier life's placeholders into `interrupted`.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.reliability.replicas import replica, write_config
from tests.reliability.scripted import run_scripted, stall
from tests.support.gateway import ADMIN_KEY
from tests.support.procs import REPO
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tests.support.sse_read import CHAT, bearer, chat_body

STREAMS = 20
COST = 57  # each request reserves 7 (prompt "hi") + 50 (max_tokens)
BODY = chat_body("gpt-4o-mini", stream=True, max_tokens=50)
LEASE_S = 6.0  # the Redis variant's lease (its gateway is started with it)


def rows(data_dir: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{data_dir / 'tollgate.db'}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT request_id, status FROM usage").fetchall()
    finally:
        db.close()


async def until(pred, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def open_stream(s: aiohttp.ClientSession, url: str, key: str) -> tuple[str, aiohttp.ClientResponse]:
    """A stream that has delivered its first 3 tokens and then waits (the upstream stalls)."""
    resp = await s.post(url + CHAT, json=BODY, headers=bearer(key))
    assert resp.status == 200, await resp.text()
    seen = 0
    while seen < 3:
        line = await asyncio.wait_for(resp.content.readline(), 10)
        if line.startswith(b"data: {"):
            seen += sum(1 for c in orjson.loads(line[6:])["choices"] if (c.get("delta") or {}).get("content"))
    return resp.headers["X-Request-Id"], resp


async def post(url: str, key: str, max_tokens: int = 50) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.post(url + CHAT, json=chat_body("gpt-4o-mini", max_tokens=max_tokens), headers=bearer(key)) as r:
            await r.read()
            return r.status


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_sigkill_with_streams_in_flight_leaves_one_row_each(tmp_path, backend, request):
    extra: dict[str, str] = {}
    module = "services"
    if backend == "redis":
        extra = {"REDIS_URL": request.getfixturevalue("redis_url"), "B7_LEASE_S": str(LEASE_S), "PYTHONPATH": str(REPO)}
        module = "tests.reliability.replicas"
    data = tmp_path / "data"
    async with run_scripted(stall(3, tokens=20)) as up:
        cfg = write_config(tmp_path / "tollgate.toml", up.base_url, {"b7": {"tpd": STREAMS * COST}})
        async with replica(tmp_path / "run1", cfg, "gw1", data_dir=data, module=module, **extra) as gw:
            async with aiohttp.ClientSession() as s:
                async with s.post(gw.url + "/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY},
                                  json={"name": "b7", "email": "b7@example.com", "tier": "b7"}) as r:
                    key = (await r.json())["key"]
            sessions = [aiohttp.ClientSession() for _ in range(STREAMS)]
            try:
                t_open = time.monotonic()
                opened = await asyncio.gather(*(open_stream(s, gw.url, key) for s in sessions))
                ids = {rid for rid, _ in opened}
                assert len(ids) == STREAMS
                if backend == "memory" or time.monotonic() - t_open < LEASE_S - 1:  # (a starved machine: leases ran out)
                    assert await post(gw.url, key) == 429  # the 20 streams hold the whole day's budget
                # Their placeholders reach the database a second after they started.
                await until(lambda: sum(st == "in_flight" for _, st in rows(data)) == STREAMS, 10, "placeholders")
                killed_at = time.monotonic()
                gw.proc.signal(signal.SIGKILL)
                assert await gw.proc.wait(5) == -signal.SIGKILL
            finally:
                for s in sessions:
                    await s.close()

        before_restart = dict(rows(data))
        async with replica(tmp_path / "run2", cfg, "gw2", data_dir=data, module=module, **extra) as gw:
            await until(lambda: sum(st == "interrupted" for _, st in rows(data)) == STREAMS, 5, "interrupted")
            after = dict(rows(data))
            assert len(after) == STREAMS + 1  # one row per request: the 20 streams and the refused one
            assert {rid for rid, st in after.items() if st == "interrupted"} == ids
            assert sorted(after.values()).count("rate_limited") == 1
            assert set(before_restart) == set(after)

            # The holds of the killed requests come back (memory: with the process; Redis: by its
            # lease): a request reserving the whole day's budget (7 + 1133 tokens) fits again.
            refusals = 0
            while (code := await post(gw.url, key, max_tokens=STREAMS * COST - 7)) != 200:
                assert code == 429 and time.monotonic() - killed_at < LEASE_S + 5, "reservations not back within lease + 5 s"
                refusals += 1
                await asyncio.sleep(0.2)
            print(f"B7 {backend}: the whole budget is back {time.monotonic() - killed_at:.1f} s after the kill "
                  f"({refusals} refusals after the restart)")
