"""The usage ledger's writer: one row per request, written off the hot path, never lost.

Rows go into an in-memory buffer and a background task flushes them in batches (every
`flush_s`, or at once when `batch_size` are waiting). Writes are idempotent by request id,
so a retried batch can't double-count. A failed flush keeps the rows and tries again with
backoff; the buffer is bounded (RELIABILITY D6: 10,000 rows, then callers get 503).
On clean shutdown `close()` flushes everything that is left.

Write-ahead markers (RELIABILITY B7): the pipeline `open()`s a request when it starts. A request
still open at a flush, and older than `open_after_s`, gets a placeholder row (status
`in_flight`, `error` naming this gateway's owner tag) written with that batch; its final row
later replaces the placeholder (an upsert that only ever upgrades placeholders). Requests that
end sooner never cost a write of their own: most requests pay nothing. When a gateway starts,
the placeholders its earlier life left (same owner tag: same data directory) become
`interrupted`, and every placeholder older than the longest possible request is swept to
`interrupted` by whichever replica sees it, so a SIGKILLed request still has exactly one row.

History (RELIABILITY C5): `tokens_since()` / `requests_since()` read the ledger as written plus
the rows still buffered, for rebuilding limiter counters that Redis lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from typing import Any, Awaitable, Callable

from services.store.records import UsageFilter, UsageRecord

log = logging.getLogger("tollgate.ledger")

IN_FLIGHT = "in_flight"
SWEEP_EVERY_S = 60.0


def owner_tag(data_dir: str) -> str:
    """What a gateway writes into its placeholders' `error`: stable across restarts on one data dir."""
    digest = hashlib.sha256(os.path.abspath(data_dir or ".").encode()).hexdigest()[:16]
    return f"{IN_FLIGHT}:{digest}"


class Ledger:
    def __init__(
        self,
        insert: Callable[[list[UsageRecord]], Awaitable[int]],
        flush_s: float = 0.5,
        batch_size: int = 500,
        max_buffer: int = 10_000,
        *,
        store: Any = None,
        owner: str = "",
        open_after_s: float = 1.0,
        now: Callable[[], float] = time.time,
        max_request_s: float = 600.0,
    ) -> None:
        """`store` (App passes the one behind `insert`) gives upserts for placeholders, the B7
        recovery and the history reads; with a bare insert function and no store, none of those.
        `now`: the injected clock's wall time; `max_request_s`: the request timeout, past which a
        placeholder is dead."""
        self._insert = insert
        self._store = store
        self.owner = owner or (owner_tag(getattr(store, "_data_dir", "")) if store is not None else "")
        self._flush_s = flush_s
        self._batch_size = batch_size
        self.max_buffer = max_buffer
        self.open_after_s = open_after_s
        self.max_request_s = max_request_s
        self.now = now
        # request_id -> final row, in arrival order; a replayed id keeps its place.
        self._buf: dict[str, UsageRecord] = {}
        # request_id -> (key id, user id, surface, model, created_at, monotonic time opened): what
        # its placeholder is built from, only once it is due (most requests end long before);
        # `_marked` holds the ones written.
        self._open: dict[str, tuple[str, str, str, str, float, float]] = {}
        self._marked: set[str] = set()
        self._upgrading: set[str] = set()  # final rows buffered whose placeholder is in the store
        self._lock = asyncio.Lock()  # one writer at a time: a batch is removed only once written
        self._wake = asyncio.Event()
        # Nothing buffered or open at the last flush: the task sleeps until the next sweep is due,
        # and the first open()/record() after that puts the flush_s timer back (issue 20.5: an
        # idle gateway's event loop no longer wakes twice a second for an empty flush).
        self._sleeping: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._started_at = 0.0
        self._recovered = False
        self._last_sweep = 0.0
        self.written = 0
        self.failures = 0
        self.interrupted = 0  # placeholders turned `interrupted` by this gateway
        self._listeners: list[Callable[[UsageRecord], None]] = []

    def start(self) -> None:
        self._started_at = self.now()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-flush")

    @property
    def pending(self) -> int:
        return len(self._buf)

    @property
    def full(self) -> bool:
        return len(self._buf) >= self.max_buffer

    @property
    def tracks_open(self) -> bool:
        """Whether placeholders are written (a store with upserts is behind the ledger)."""
        return self._store is not None

    def on_row(self, fn: Callable[[UsageRecord], None]) -> None:
        """Called for every row as it is recorded (metrics, in-memory stats)."""
        self._listeners.append(fn)

    def open(self, row: UsageRecord) -> None:
        """A request has started: its placeholder, written only if it is still open at a flush
        `open_after_s` later. Never blocks, never raises; listeners are not told (not a row yet)."""
        self.begin(row.request_id, row.key_id, row.user_id, row.surface, row.model, row.created_at)

    def begin(self, request_id: str, key_id: str, user_id: str, surface: str, model: str, created_at: float) -> None:
        """open() from the row's fields, as the pipeline has them: no row is built for a request
        that ends before its placeholder is due (nearly every one)."""
        if self._store is None or self._closing:
            return
        self._open[request_id] = (key_id, user_id, surface, model, created_at, time.monotonic())
        if self._sleeping is not None:
            self._rearm()

    def _placeholder(self, request_id: str, key_id: str, user_id: str, surface: str, model: str,
                     created_at: float) -> UsageRecord:
        """An open request's row: `in_flight`, naming this gateway's owner tag, until its final row."""
        return UsageRecord(request_id, key_id, user_id, surface, "", "", model, IN_FLIGHT, 0, 0, True, 0.0, 0.0, 0,
                           created_at, self.owner)

    def record(self, row: UsageRecord) -> None:
        """The request's one final row. Never blocks and never raises: the request is already answered."""
        self._open.pop(row.request_id, None)
        if row.request_id in self._marked:
            self._marked.discard(row.request_id)
            self._upgrading.add(row.request_id)
        self._buf[row.request_id] = row
        for fn in self._listeners:
            try:
                fn(row)
            except Exception:  # a listener's bug must not lose the row
                log.exception("ledger listener failed")
        if len(self._buf) >= self._batch_size:
            self._wake.set()
        elif self._sleeping is not None:
            self._rearm()

    def _rearm(self) -> None:
        """Back from idleness: the next flush in flush_s, as if the task had never slept."""
        self._sleeping.cancel()  # type: ignore[union-attr]
        self._sleeping = None  # (_run's finally cancels whichever timer is current)
        self._timer = asyncio.get_running_loop().call_later(self._flush_s, self._wake.set)

    async def flush(self) -> None:
        """Writes every buffered row (and the placeholders that are due). Raises on a failed write,
        keeping what was not written."""
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        markers = self._due_markers()
        # Only what is buffered now: rows recorded while a batch is being written wait for the
        # next flush. Chasing them kept a steady load in a write per couple of requests (a
        # thread hop and a transaction each, contending for the GIL with every request).
        pending = list(self._buf.items())
        while pending or markers:
            batch, pending = pending[: self._batch_size], pending[self._batch_size :]
            rows = [r for _, r in batch]
            room = self._batch_size - len(rows)
            marks, markers = markers[:room], markers[room:]
            await self._write(rows + [m for _, m in marks])
            for rid, row in batch:
                if self._buf.get(rid) is row:  # a row replaced meanwhile is still to be written
                    del self._buf[rid]
                    self._upgrading.discard(rid)
            for rid, _ in marks:
                if rid in self._open:
                    self._marked.add(rid)
            self.written += len(rows)

    def _due_markers(self) -> list[tuple[str, UsageRecord]]:
        if not self._open:
            return []
        cutoff = time.monotonic() - self.open_after_s
        return [(rid, self._placeholder(rid, *o[:5])) for rid, o in self._open.items()
                if o[5] <= cutoff and rid not in self._marked]

    async def _write(self, rows: list[UsageRecord]) -> int:
        if not rows:
            return 0
        if self._store is not None:
            return await self._store.upsert_usage(rows)
        return await self._insert(rows)

    # -- history (RELIABILITY C5) ------------------------------------------------------------------

    @property
    def has_history(self) -> bool:
        return self._store is not None

    async def tokens_since(self, key_id: str, since: float, until: float | None = None, by_user: bool = False) -> int:
        """Prompt + completion tokens of `key_id`'s requests started in [since, until): the store's
        sum plus rows not yet written. `by_user`: `key_id` is a user id (a plan shared by its tokens)."""
        async with self._lock:  # no batch is half-written while we add the two up
            totals = await self._store.usage_totals(_who(key_id, by_user, since, until))
            total = int(totals["prompt_tokens"]) + int(totals["completion_tokens"])
            total += sum(r.prompt_tokens + r.completion_tokens for r in self._buffered(key_id, since, until, by_user))
        return total

    async def requests_since(self, key_id: str, since: float, until: float | None = None, by_user: bool = False) -> int:
        """`key_id`'s requests started in [since, until) that counted against its request quota
        (refused ones did not), written or buffered; a placeholder counts as its request."""
        async with self._lock:
            totals = await self._store.usage_totals(_who(key_id, by_user, since, until))
            n = int(totals["requests"]) - int(totals["by_status"].get("rate_limited", 0))
            # A buffered final row whose placeholder is already in the store was counted there.
            n += sum(1 for r in self._buffered(key_id, since, until, by_user)
                     if r.status != "rate_limited" and r.request_id not in self._upgrading)
        return n

    async def cost_since(self, key_id: str, since: float, until: float | None = None, by_user: bool = False) -> float:
        """The catalogue cost (USD) of `key_id`'s requests started in [since, until), written or
        buffered: what $ budget counters are rebuilt from (issue 16)."""
        async with self._lock:
            totals = await self._store.usage_totals(_who(key_id, by_user, since, until))
            cost = float(totals["cost_usd"])
            # A buffered final row whose placeholder is already in the store: the placeholder costs 0.
            cost += sum(r.cost_usd for r in self._buffered(key_id, since, until, by_user))
        return cost

    def _buffered(self, key_id: str, since: float, until: float | None, by_user: bool = False) -> list[UsageRecord]:
        return [r for r in self._buf.values()
                if (r.user_id if by_user else r.key_id) == key_id and r.created_at >= since
                and (until is None or r.created_at < until)]

    # -- the background task -----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._flush_s
        loop = asyncio.get_running_loop()
        while True:
            # Woken by a full batch (record()) or after flush_s: a timer that sets the event, not
            # wait_for()'s task and timeout per period (this runs every half second, idle or not).
            wait_s = self._flush_s
            if not self._buf and not self._open and (self._recovered or self._store is None):
                # idle: only the sweep is due (none without a store)
                due = self._last_sweep + SWEEP_EVERY_S - self.now() if self._store is not None else SWEEP_EVERY_S
                wait_s = max(wait_s, due)
            self._timer = loop.call_later(wait_s, self._wake.set)
            self._sleeping = self._timer if wait_s > self._flush_s else None
            try:
                await self._wake.wait()
            finally:
                self._timer.cancel()
                self._sleeping = None
            self._wake.clear()
            try:
                await self._housekeeping()
                await self.flush()
                backoff = self._flush_s
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                log.warning("ledger flush failed, %d rows kept for retry: %s", len(self._buf), type(e).__name__)
                backoff = min(backoff * 2, 5.0)
                await asyncio.sleep(backoff)

    async def _housekeeping(self) -> None:
        """B7: before this gateway writes anything, its earlier life's placeholders become
        `interrupted`; then, once a minute, anybody's placeholder past the longest request."""
        if self._store is None:
            return
        now = self.now()
        if self._recovered and now - self._last_sweep < SWEEP_EVERY_S:
            return
        stale_before = now - self.max_request_s - SWEEP_EVERY_S
        started = self._started_at if not self._recovered else float("-inf")
        n = await self._store.interrupt_in_flight(self.owner, started, stale_before)
        if n:
            log.warning("ledger: %d requests left in flight by a stopped gateway recorded as interrupted", n)
            self.interrupted += n
        self._recovered = True
        self._last_sweep = now

    async def close(self) -> None:
        self._closing = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for attempt in range(5):
            try:
                await self.flush()
                for _ in range(100):  # rows recorded while that flush ran (a flush takes only what it found)
                    if not self._buf:
                        break
                    await self.flush()
                return
            except Exception as e:
                log.warning("final ledger flush failed (%s), retrying", type(e).__name__)
                await asyncio.sleep(0.2 * (attempt + 1))
        log.error("ledger: %d rows could not be written at shutdown", len(self._buf))


def _who(key_id: str, by_user: bool, since: float, until: float | None) -> UsageFilter:
    if by_user:
        return UsageFilter(user_id=key_id, since=since, until=until)
    return UsageFilter(key_id=key_id, since=since, until=until)
