"""RELIABILITY E7: slow readers are served at their pace; a client that stops reading is let go.

- 50 clients read a long stream at 1 KiB/s: each is served at its pace, and the gateway holds at
  most 256 KiB for each (its transport's write buffer: aiohttp drains it before the bridge asks
  the core for more).
- The upstream is paused: the core stops reading it, and TCP does the rest. The fake upstream's
  output stops growing once the kernel buffers between it and the gateway are full (~3 MB a
  stream here), so that part runs with 5 readers, not 50: 50 would take a minute to fill them.
  By then the gateway's own buffers are full too, and still at most 256 KiB each.
- A client that reads nothing: after `stream_stall_s` (60 s by default, 4 s here) its stream
  ends with its ledger row and the upstream connection closed, while a reader beside it is still
  served (gateway_http/stall.py). That reader takes 4 KiB/s: with its 4 KiB window the kernel
  shows its progress every few KiB read, and at 1 KiB/s that is longer than this test's 4 s.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import orjson

from gateway_http.state import BRIDGE
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body

KIB = 1024
MODEL = "tokens-100000"  # ~15 MB of SSE per stream: more than every buffer on the way


async def open_stream(url: str, key: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A raw HTTP/1.1 streaming request on a socket with a 4 KiB receive buffer, so the kernel's
    window opens by small steps as the client reads (as over a real network, not loopback's 64 KiB
    segments); returns once the response head is read: (reader, writer, request id)."""
    u = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * KIB)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (u.hostname, u.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=KIB)
    body = orjson.dumps(chat_body(MODEL, stream=True))
    head = f"POST {CHAT} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write((head + "".join(f"{k}: {v}\r\n" for k, v in bearer(key).items()) + "\r\n").encode() + body)
    status = await asyncio.wait_for(reader.readline(), 10)
    assert status.startswith(b"HTTP/1.1 200"), status
    rid = ""
    while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "x-request-id":
            rid = value.strip()
    return reader, writer, rid


async def read_slowly(reader: asyncio.StreamReader, seconds: float, per_s: int = 1) -> int:
    """`per_s` KiB a second for `seconds`; how many bytes came."""
    got, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        got += len(await reader.read(KIB))
        await asyncio.sleep(1.0 / per_s)
    return got


def buffered(gw) -> list[int]:
    """What the gateway holds for each client connection now (its transport's write buffer)."""
    return [h.transport.get_write_buffer_size() for h in gw.rt.runner.server.connections if h.transport is not None]


class Peak:
    """The largest per-connection buffer `buffered` shows while the block runs (sampled at 4 Hz)."""

    def __init__(self, gw) -> None:
        self.gw, self.value = gw, 0
        self._task: asyncio.Task | None = None

    async def _sample(self) -> None:
        while True:
            self.value = max([self.value, *buffered(self.gw)])
            await asyncio.sleep(0.25)

    async def __aenter__(self) -> "Peak":
        self._task = asyncio.ensure_future(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@asynccontextmanager
async def streams_open(tmp_path, n: int, sndbuf: int = 0, **cfg) -> AsyncIterator[tuple]:
    """A fake upstream, a gateway on it and `n` streams open on one key: (fake, gateway, key, streams)."""
    async with run_fake_openai() as fake:
        fake.stream_sndbuf = sndbuf
        async with run_gateway(config(tmp_path, providers=(provider("primary", fake.base_url),), **cfg)) as gw:
            key = await gw.new_key(tier="unlimited")
            streams = await asyncio.gather(*(open_stream(gw.url, key) for _ in range(n)))
            try:
                yield fake, gw, key, streams
            finally:
                for _, w, _ in streams:
                    w.close()


async def test_fifty_readers_at_1_kib_a_second_hold_at_most_256_kib_each(tmp_path):
    async with streams_open(tmp_path, 50) as (_, gw, _, streams), Peak(gw) as peak:
        got = await asyncio.gather(*(read_slowly(r, 4.0) for r, _, _ in streams))
    assert all(g >= 3 * KIB for g in got), got  # every reader was served at its pace
    assert peak.value <= 256 * KIB, peak.value


async def test_the_upstream_is_paused_at_the_readers_pace(tmp_path):
    # The fake's own side of the kernel buffers stays small (see the fake).
    async with streams_open(tmp_path, 5, sndbuf=16 * KIB) as (fake, gw, _, streams), Peak(gw) as peak:
        readers = asyncio.gather(*(read_slowly(r, 30.0) for r, _, _ in streams))
        try:
            # The buffers between the fake and the gateway fill at the fake's full speed (~15k
            # tokens/s here), then its output stops growing faster than the readers read.
            last, t0 = fake.tokens_sent, time.monotonic()
            while True:
                await asyncio.sleep(1.0)
                now = fake.tokens_sent
                if now - last < 1_000:
                    break
                last = now
                assert time.monotonic() - t0 < 20, f"the upstream kept writing at full speed: {now} tokens"
            before = fake.tokens_sent
            await asyncio.sleep(2.0)
            # 5 readers x 1 KiB/s x 2 s is ~10 KiB: ~70 tokens of ~150 bytes. Unpaused: ~30,000.
            assert fake.tokens_sent - before < 1_000
            assert fake.tokens_sent < 5 * 100_000 / 2  # most of each answer was never produced
            assert 0 < peak.value <= 256 * KIB, peak.value  # backpressure reached the gateway, which held it there
        finally:
            readers.cancel()
            await asyncio.gather(readers, return_exceptions=True)


async def test_a_client_that_stops_reading_is_let_go_and_metered(tmp_path):
    async with streams_open(tmp_path, 2, stream_stall_s=4.0) as (fake, gw, key, streams):
        (stalled, _, rid), (slow, _, _) = streams
        t0 = time.monotonic()
        reading = asyncio.ensure_future(read_slowly(slow, 10.0, per_s=4))  # meanwhile: slow, never stalled
        await asyncio.wait_for(fake.disconnected.wait(), 20)  # the stalled stream's upstream, closed
        took = time.monotonic() - t0
        assert 4.0 <= took <= 14.0, took  # stall_s, the ticks, and the buffers filling first (slower when loaded)
        assert gw.rt.bridge[BRIDGE].stalls.aborted == 1
        rows = {r.request_id: r for r in await gw.ledger()}
        assert rows[rid].status == "client_cancelled" and rows[rid].completion_tokens > 0
        # The stalled socket is closed: what it could still read ends, rather than blocking.
        assert await asyncio.wait_for(read_all(stalled), 10) is not None
        assert await reading >= 20 * KIB  # the slow reader was served throughout
        assert fake.disconnects == 1
        r = await gw.http.post(CHAT, json=chat_body("tokens-2"), headers=bearer(key))
        assert r.status_code == 200


async def read_all(reader: asyncio.StreamReader) -> bytes:
    out = b""
    try:
        while chunk := await reader.read(64 * KIB):
            out += chunk
    except ConnectionResetError:
        pass
    return out
