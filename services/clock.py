"""Time, injected: the real clock, and a fake one tests and test hooks can move."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (for resets at midnight, row timestamps)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for windows, breakers, latencies)."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    # The C functions themselves, not methods that call them: a dozen readings per request, each
    # a Python frame less (bench/gate.py).
    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told; `sleep` advances it at once."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 1000.0

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


class OffsetClock(SystemClock):
    """The real clock plus an offset a test hook can move (RELIABILITY: one injectable clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset
