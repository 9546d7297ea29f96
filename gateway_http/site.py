"""ListeningSite: aiohttp's TCPSite, but every pending connection is accepted on each wake-up.

uvloop's server accepts one connection per event-loop iteration (libuv's uv__server_io takes
one per readiness event since libuv 1.49). On a gateway relaying 1,000 streams an iteration
takes ~20 ms, so new connections were accepted at ~50 a second: in bench/streams.py's ramp a
quarter of the clients arriving during it waited 7 s for their first byte, queued in the kernel's
accept queue (`ss -ltn` Recv-Q) while the process had CPU to spare (bench/README.md, issue 20).
Here the listening socket is watched with add_reader and drained (up to MAX_PER_WAKE) each time
it is readable, as asyncio's own selector loop does; each connection is handed to the loop with
connect_accepted_socket, so transports, protocols and aiohttp's shutdown are unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from aiohttp import web

log = logging.getLogger("tollgate.http")

MAX_PER_WAKE = 512  # connections accepted per wake-up before the loop's other work gets a turn
# Out of descriptors or memory: stop accepting for a while instead of spinning on a readable socket
# (asyncio's ACCEPT_RETRY_DELAY); connections wait in the kernel's queue meanwhile.
RETRY_S = 1.0
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _Listening:
    """What aiohttp's runner reads of a site's server: its sockets (runner.addresses) and close()."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self.sockets = sockets

    def close(self) -> None:
        loop = asyncio.get_event_loop()
        for s in self.sockets:
            if s.fileno() != -1:
                loop.remove_reader(s.fileno())
                s.close()


def bind(host: str | None, port: int, *, backlog: int, reuse_port: bool | None) -> list[socket.socket]:
    """Listening sockets for `host` (every address it resolves to, as create_server binds them);
    with port 0 the first address's port is used for the rest, so one port serves them all."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: set[tuple[int, Any]] = set()
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            s = socket.socket(family, type_, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as create_server: v4 has its own
            if port == 0 and len(socks) > 1:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            s.bind(addr)
            s.listen(backlog)
            s.setblocking(False)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


class ListeningSite(web.BaseSite):
    """A TCP site (see the module docstring): host, port, backlog and reuse_port as TCPSite's."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, *, backlog: int = 1024,
                 reuse_port: bool | None = None) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._pending: set[asyncio.Task] = set()  # connections being handed over (a reference each)

    @property
    def name(self) -> str:
        return f"http://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        socks = bind(self._host, self._port, backlog=self._backlog, reuse_port=self._reuse_port)
        self._server = _Listening(socks)  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        for s in socks:
            loop.add_reader(s.fileno(), self._accept, loop, s)

    def _accept(self, loop: asyncio.AbstractEventLoop, lsock: socket.socket) -> None:
        factory = self._runner.server
        if factory is None:  # the runner is cleaning up
            return
        for _ in range(MAX_PER_WAKE):
            try:
                conn, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                log.error("http: cannot accept connections (%s); retrying in %.0f s", exc.strerror, RETRY_S)
                loop.remove_reader(lsock.fileno())
                loop.call_later(RETRY_S, self._resume, loop, lsock)
                return
            conn.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(factory, conn))
            self._pending.add(task)
            task.add_done_callback(self._handed_over)

    def _resume(self, loop: asyncio.AbstractEventLoop, lsock: socket.socket) -> None:
        if lsock.fileno() != -1:
            loop.add_reader(lsock.fileno(), self._accept, loop, lsock)

    def _handed_over(self, task: asyncio.Task) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The transport could not be made (the peer reset it first): nothing was served yet.
            log.debug("http: dropped a connection at accept: %s", type(task.exception()).__name__)

    async def stop(self) -> None:
        await super().stop()
        for task in list(self._pending):
            task.cancel()
