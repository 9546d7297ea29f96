"""A client that hangs up mid-stream cancels the upstream call and still gets metered
(RELIABILITY B2, D2): real sockets from the HTTP client to the bridge to the fake upstream."""

from __future__ import annotations

import asyncio
import sys
import time
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson

from tests.support.gateway import config, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body


async def rows_when(gw, want: int, timeout: float = 2.0) -> list:
    end = time.monotonic() + timeout
    rows = await gw.ledger()
    while len(rows) < want and time.monotonic() < end:
        await asyncio.sleep(0.05)
        rows = await gw.ledger()
    return rows


def token_chunks(lines: list[str]) -> int:
    n = 0
    for line in lines:
        if line.startswith("data: {"):
            obj = orjson.loads(line[6:])
            if any((c.get("delta") or {}).get("content") for c in obj.get("choices") or ()):
                n += 1
    return n


async def test_httpx_client_hangs_up_mid_stream(gateway, fake_openai):
    key = await gateway.new_key()
    lines: list[str] = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        async with http.stream("POST", CHAT, json=chat_body("fault-stall-after-3", stream=True), headers=bearer(key)) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                lines.append(line)
                if token_chunks(lines) == 3:
                    break
        # Leaving the block mid-body closes the connection (httpx never reuses an unread one).
        t0 = time.monotonic()
    await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
    assert time.monotonic() - t0 < 1.0
    assert fake_openai.disconnects == 1
    rows = await rows_when(gateway, 1)
    assert len(rows) == 1
    row = rows[0]
    assert (row.status, row.surface, row.provider) == ("client_cancelled", "openai", "primary")
    assert row.completion_tokens > 0 and row.estimated
    assert gateway.app.pipeline.active == 0


async def test_aiohttp_client_hangs_up_mid_stream(gateway, fake_openai):
    key = await gateway.new_key()
    async with aiohttp.ClientSession() as s:
        resp = await s.post(gateway.url + CHAT, json=chat_body("fault-stall-after-3", stream=True), headers=bearer(key))
        assert resp.status == 200
        lines: list[str] = []
        while token_chunks(lines) < 3:
            raw = await asyncio.wait_for(resp.content.readline(), 5)
            lines.append(raw.decode().rstrip("\n"))
        t0 = time.monotonic()
        resp.close()  # drops the connection
    await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
    assert time.monotonic() - t0 < 1.0
    rows = await rows_when(gateway, 1)
    assert [(r.status, r.estimated) for r in rows] == [("client_cancelled", True)]
    assert rows[0].completion_tokens >= 3


async def test_hang_up_before_first_token_is_one_row(gateway, fake_openai):
    key = await gateway.new_key()
    async with aiohttp.ClientSession() as s:
        task = asyncio.ensure_future(s.post(gateway.url + CHAT, json=chat_body("fault-slow-first-5", stream=True),
                                            headers=bearer(key)))
        end = time.monotonic() + 2
        while not fake_openai.requests and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert fake_openai.requests
        task.cancel()  # aborts the request: the socket closes before any byte of the answer
        try:
            await task
        except asyncio.CancelledError:
            pass
    await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
    rows = await rows_when(gateway, 1)
    assert [(r.status, r.completion_tokens) for r in rows] == [("client_cancelled", 0)]


# A client in its own process, as curl is: it must be able to hang up while the gateway's event
# loop is busy writing (an in-process client would only run between the gateway's writes).
HANG_UP = """
import socket, sys
host, port, path, body, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].encode(), sys.argv[5]
s = socket.create_connection((host, port))
s.sendall(f"POST {path} HTTP/1.1\\r\\nHost: {host}\\r\\nContent-Type: application/json\\r\\n"
          f"Authorization: Bearer {key}\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n".encode() + body)
got = b""
while b"data: " not in got:
    got += s.recv(256)
s.close()  # unread data: the kernel answers the next segment with a reset
"""


async def test_a_client_gone_mid_write_is_not_an_error(tmp_path, caplog):
    """A client closes while the bridge writes a stream that needs no upstream read between its
    chunks (the demo model's echo): a write can find the socket reset (ConnectionResetError)
    before aiohttp gets round to cancelling the handler. That is a client leaving, not a bridge
    error logged with a traceback (seen with `curl … | head -4` against `make run`). Ten
    hang-ups each on /v1/chat/completions and /v1/messages, each right after the first event."""
    text = "word " * 20_000  # echoed back a word per chunk
    paths = {CHAT: {"model": "demo", "stream": True, "messages": [{"role": "user", "content": text}]},
             "/v1/messages": {"model": "demo", "max_tokens": 30_000, "stream": True,
                              "messages": [{"role": "user", "content": text}]}}
    async with run_gateway(config(tmp_path)) as gw:
        key = await gw.new_key(tier="unlimited")
        u = urlsplit(gw.url)
        sent = 0
        for path, body in paths.items():
            for _ in range(10):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", HANG_UP, u.hostname, str(u.port), path, orjson.dumps(body).decode(), key)
                assert await asyncio.wait_for(proc.wait(), 20) == 0
                sent += 1
        rows = await rows_when(gw, sent, timeout=5.0)
        statuses = {r.status for r in rows}
        assert len(rows) == sent and "client_cancelled" in statuses and statuses <= {"client_cancelled", "ok"}, statuses
    errors = [r for r in caplog.records if r.levelno >= 40]
    assert errors == [], [r.getMessage() for r in errors]
