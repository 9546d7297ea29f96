"""Poller: one background task that re-reads something from the store every few seconds.

What every replica watches in the shared store (loaded models, model aliases, plans, whether
run-time gateway keys exist) is re-read on a period by one of these: `read` is awaited every
`every_s` seconds until `close()`. A read that fails (the store down) is logged at debug level by
name only and the next period tries again, so the replica keeps serving what it has.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable


class Poller:
    def __init__(self, name: str, read: Callable[[], Awaitable[None]], every_s: float, log: logging.Logger,
                 *, at_once: bool = False) -> None:
        self.name = name  # the task's name, and what a failed read's log line says was not re-read
        self.read = read
        self.every_s = every_s
        self.log = log
        self.at_once = at_once  # the first read as soon as started, else after one period
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
        while True:
            try:
                await self.read()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the store is down: keep what we have
                self.log.debug("%s not re-read: %s", self.name, type(e).__name__)
            await asyncio.sleep(self.every_s)
