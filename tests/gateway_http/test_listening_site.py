"""ListeningSite (gateway_http/site.py): a burst of connections queued while the loop was busy is
accepted in a few loop iterations, not one per iteration (uvloop's own server, issue 20's ramp),
on uvloop as the gateway runs; the port is shared with SO_REUSEPORT and closed by stop()."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
import uvloop
from aiohttp import web

from gateway_http.site import ListeningSite

BURST = 300


async def _started(reuse_port: bool | None = None, port: int = 0) -> tuple[web.AppRunner, ListeningSite, int]:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = ListeningSite(runner, "127.0.0.1", port, backlog=1024, reuse_port=reuse_port)
    await site.start()
    return runner, site, runner.addresses[0][1]


async def _iterations_until(cond, limit: int = 10_000) -> int:
    """Loop iterations (one call_soon hop each) until `cond()` holds."""
    n = 0
    while not cond() and n < limit:
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, None)
        await fut
        n += 1
    return n


def test_a_queued_burst_is_accepted_in_a_few_iterations_on_uvloop() -> None:
    async def main() -> tuple[int, list[bytes]]:
        runner, site, port = await _started()
        try:
            # Blocking connects from the loop's own thread: the kernel completes every handshake
            # and queues the connections (backlog 1024) while the loop cannot accept any.
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]
            server = runner.server
            assert server is not None
            spins = await _iterations_until(lambda: len(server.connections) >= BURST)
            assert len(server.connections) == BURST
            # Every one of them is served.
            for c in clients:
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            replies = []
            for c in clients:
                c.setblocking(False)
                data = b""
                while b"hello" not in data:
                    try:
                        chunk = c.recv(4096)
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
                        continue
                    if not chunk:
                        break
                    data += chunk
                replies.append(data)
                c.close()
            return spins, replies
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        spins, replies = r.run(main())
    assert spins <= 5, f"{BURST} queued connections took {spins} loop iterations to accept"
    assert all(x.startswith(b"HTTP/1.1 200") and x.endswith(b"hello") for x in replies)


def test_port_shared_with_reuse_port_and_closed_by_stop() -> None:
    async def main() -> None:
        r1, s1, port = await _started(reuse_port=True)
        r2, s2, port2 = await _started(reuse_port=True, port=port)
        assert port2 == port
        with pytest.raises(OSError) as e:
            await _started(port=port)  # without SO_REUSEPORT the port is taken
        assert e.value.errno == errno.EADDRINUSE
        await r1.cleanup()
        await r2.cleanup()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(main())
