"""The usage ledger's writer: one row per request, written off the hot path, never lost.

Rows go into an in-memory buffer and a background task flushes them in batches (every
`flush_s`, or at once when `batch_size` are waiting). Inserts are idempotent by request id,
so a retried batch can't double-count. A failed flush keeps the rows and tries again with
backoff; the buffer is bounded (RELIABILITY D6: 10,000 rows, then callers get 503).
On clean shutdown `close()` flushes everything that is left.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from services.store.records import UsageRecord

log = logging.getLogger("tollgate.ledger")


class Ledger:
    def __init__(
        self,
        insert: Callable[[list[UsageRecord]], Awaitable[int]],
        flush_s: float = 0.5,
        batch_size: int = 500,
        max_buffer: int = 10_000,
    ) -> None:
        self._insert = insert
        self._flush_s = flush_s
        self._batch_size = batch_size
        self.max_buffer = max_buffer
        self._buf: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self.written = 0
        self.failures = 0
        self._listeners: list[Callable[[UsageRecord], None]] = []

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-flush")

    @property
    def pending(self) -> int:
        return len(self._buf)

    @property
    def full(self) -> bool:
        return len(self._buf) >= self.max_buffer

    def on_row(self, fn: Callable[[UsageRecord], None]) -> None:
        """Called for every row as it is recorded (metrics, in-memory stats)."""
        self._listeners.append(fn)

    def record(self, row: UsageRecord) -> None:
        """Never blocks and never raises: the request is already answered."""
        self._buf.append(row)
        for fn in self._listeners:
            try:
                fn(row)
            except Exception:  # a listener's bug must not lose the row
                log.exception("ledger listener failed")
        if len(self._buf) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        while self._buf:
            batch = self._buf[: self._batch_size]
            await self._insert(batch)
            del self._buf[: len(batch)]
            self.written += len(batch)

    async def _run(self) -> None:
        backoff = self._flush_s
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._flush_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                backoff = self._flush_s
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                log.warning("ledger flush failed, %d rows kept for retry: %s", len(self._buf), type(e).__name__)
                backoff = min(backoff * 2, 5.0)
                await asyncio.sleep(backoff)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for attempt in range(5):
            try:
                await self.flush()
                return
            except Exception as e:
                log.warning("final ledger flush failed (%s), retrying", type(e).__name__)
                await asyncio.sleep(0.2 * (attempt + 1))
        log.error("ledger: %d rows could not be written at shutdown", len(self._buf))
