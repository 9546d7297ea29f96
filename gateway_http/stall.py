"""RELIABILITY E7: a client that stops reading a stream ends it, instead of holding it forever.

Slow readers are served as fast as they read: aiohttp waits for the socket to drain before the
bridge asks the core for more, the core then stops reading the upstream, and each connection
holds at most its write buffer (~2 x 64 KiB) in the gateway. What backpressure alone never does
is end a stream whose client reads nothing: the bridge would wait on the drain, the request's
deadline never fires while nobody waits on the core, and the upstream connection stays open.

One timer per app, ticking only while streams are watched, looks at each streaming connection:
the bytes not yet taken by the client, in the transport's buffer and in the kernel's send queue
(SIOCOUTQ: sent but unacknowledged, or not yet sent). Any read by the client moves that number
(the kernel acknowledges what lands in the client's window, and the window reopens as it reads);
some bytes waiting and the number unmoved for `stall_s` means the client has stopped. The
connection is aborted, so the handler's pending write fails, the call is cancelled (the upstream
closed, the ledger row `client_cancelled`) and the socket is freed. The transport's buffer alone
would not do: behind a kernel send buffer of megabytes it moves only after the client has read
them all, minutes for a slow reader.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import termios
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


class StallGuard:
    TICK_S = 1.0

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        # protocol -> (bytes waiting for the client at the last tick, since when that has not moved)
        self._seen: dict[Any, tuple[int, float | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.aborted = 0

    def watch(self, request: web.Request) -> None:
        """Watches the connection `request` streams on until it closes (keep-alive included)."""
        if self.stall_s <= 0 or request.transport is None:
            return
        self._seen.setdefault(request.protocol, (-1, None))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.TICK_S, self._check)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for proto, (last, since) in list(self._seen.items()):
            transport = proto.transport
            if transport is None or transport.is_closing():
                del self._seen[proto]
                continue
            waiting = transport.get_write_buffer_size() + _unacked(transport)
            if waiting == 0 or waiting != last:
                self._seen[proto] = (waiting, None)
            elif since is None:
                self._seen[proto] = (waiting, now)
            elif now - since >= self.stall_s:
                del self._seen[proto]
                self.aborted += 1
                log.info("a stream's client read nothing for %.0f s: connection closed", now - since + self.TICK_S)
                transport.abort()
        self._timer = loop.call_later(self.TICK_S, self._check) if self._seen else None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._seen.clear()


def _unacked(transport: Any) -> int:
    """The kernel send queue of the transport's TCP socket, in bytes (0 when it cannot be read)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0
