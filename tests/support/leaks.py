"""What a test reads to prove nothing leaked or ballooned: tasks, fds, RSS (now and peak), upstream pools.

The gateway runs in the test's own process, so /proc/self is the gateway's: VmRSS is resident
memory now, VmHWM its peak since the last reset (writing 5 to /proc/self/clear_refs resets it).
Where that reset is refused, `Peak` falls back to sampling VmRSS from a thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

MB = 1024 * 1024


def _status_kb(name: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{name}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) if m else 0


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tasks() -> int:
    return len(asyncio.all_tasks())


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Peak:
    """`with Peak() as p: ...` then `p.growth` = peak RSS during the block minus RSS at its start (bytes)."""

    def __init__(self, every_s: float = 0.002) -> None:
        self.every_s = every_s
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> "Peak":
        self.start = rss_bytes()
        self._hwm = _reset_peak()
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True, name="rss-peak")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        if self._hwm:
            self.peak = max(self.peak, _status_kb("VmHWM") * 1024)

    @property
    def growth(self) -> int:
        return self.peak - self.start


@dataclass(frozen=True)
class PoolState:
    sessions: int
    in_use: int  # connections checked out of a pool right now (a leak if it stays > 0 when idle)
    idle: int  # kept-alive connections waiting for reuse
    limit_per_host: int


def pools(app: Any) -> PoolState:
    """The upstream sessions' connection pools (aiohttp's TCPConnector internals, read only)."""
    in_use = idle = limit = 0
    sessions = list(getattr(app.upstreams, "_sessions", {}).values())
    for s in sessions:
        c = s.connector
        if c is None:
            continue
        in_use += len(getattr(c, "_acquired", ()))
        idle += sum(len(v) for v in getattr(c, "_conns", {}).values())
        limit = max(limit, c.limit_per_host or c.limit or 0)
    return PoolState(len(sessions), in_use, idle, limit)


async def settle(ok: Callable[[], bool], timeout_s: float = 2.0, every_s: float = 0.02) -> bool:
    """Polls `ok` until it holds or `timeout_s` passes; its last answer."""
    end = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() >= end:
            return ok()
        await asyncio.sleep(every_s)
    return True
