"""Poller: one background task that re-reads something from the store every few seconds.

What every replica watches in the shared store (loaded models, model aliases, plans, whether
run-time gateway keys exist) is re-read on a period by one of these: `read` is awaited every
`every_s` seconds until `close()`. A read that fails (the store down) is logged at debug level by
name only and the next period tries again, so the replica keeps serving what it has.

With `changes` (a Changes over the store's change counter, issue 20 point 5), a poller re-reads
only when the counter moved since its last successful read, and at most every `every_s`: an idle
replica reads one small row a second on Changes' own thread instead of every watched table from
its event loop, and a change made anywhere reaches it within `Changes.every_s` + the read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Awaitable, Callable

_FAILED = object()  # a poller's last read failed: read again at its next period, changed or not


class Changes:
    """Reads `probe()` (the store's change counter: a blocking call) every `every_s` seconds on a
    thread of its own, and wakes the pollers waiting on it, through the event loop, only when the
    value moved: an idle replica's event loop does nothing for it. A failed probe (the store
    down) changes nothing: the pollers keep what they have and the next probe tries again."""

    def __init__(self, probe: Callable[[], object], every_s: float, log: logging.Logger) -> None:
        self.probe = probe
        self.every_s = every_s
        self.log = log
        self.version: object = object()  # not probed yet: unlike anything a poller has seen
        self._moved = asyncio.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tollgate-store-changes", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)

    async def moved_from(self, seen: object) -> object:
        """Waits until the counter differs from `seen`; returns its value then."""
        while self.version == seen:
            await self._moved.wait()
        return self.version

    def _run(self) -> None:
        last: object = object()
        while not self._stop.is_set() and not self._loop.is_closed():  # type: ignore[union-attr]
            try:
                value = self.probe()
            except Exception as e:  # the store is down (or closing): nobody re-reads until it answers
                self.log.debug("store change counter not read: %s", type(e).__name__)
            else:
                if value != last:
                    last = value
                    try:
                        self._loop.call_soon_threadsafe(self._moved_to, value)  # type: ignore[union-attr]
                    except RuntimeError:  # the loop is closed
                        return
            self._stop.wait(self.every_s)

    def _moved_to(self, value: object) -> None:
        self.version = value
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()


class Poller:
    def __init__(self, name: str, read: Callable[[], Awaitable[None]], every_s: float, log: logging.Logger,
                 *, at_once: bool = False, changes: Changes | None = None) -> None:
        self.name = name  # the task's name, and what a failed read's log line says was not re-read
        self.read = read
        self.every_s = every_s
        self.log = log
        self.at_once = at_once  # the first read as soon as started, else after one period
        self.changes = changes  # re-read only when the store's change counter moved (None: every period)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        if not self.at_once:
            await asyncio.sleep(self.every_s)
        seen: object = _FAILED
        while True:
            if self.changes is not None:
                # The counter's value before the read: a write after it moves it again.
                seen = await self.changes.moved_from(seen)
            try:
                await self.read()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the store is down: keep what we have
                self.log.debug("%s not re-read: %s", self.name, type(e).__name__)
                seen = _FAILED
            await asyncio.sleep(self.every_s)
