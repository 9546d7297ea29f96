"""Alerts (issue 16): budget thresholds, plan quotas at 80/100 %, a provider key disabled, a breaker
open. Listed in the API; sent to configured webhooks as a JSON POST whose body is signed
(`X-Tollgate-Signature: sha256=<HMAC-SHA256(secret, body) hex>`), retried with back-off.

Never on a request's path: `emit()` only checks an in-memory set and puts the alert on a
bounded queue; the one worker task (owned here, started and cancelled by App) writes the row —
once per period, by a unique dedupe key, so N replicas make one row — and delivers it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from typing import Any

import aiohttp

from services.store.records import AlertRecord
from services.store.repos.ids import new_id

log = logging.getLogger("tollgate.alerts")
QUEUE_MAX = 10_000
SEEN_MAX = 100_000
RETRIES = 5
BACKOFF_S = 0.5  # 0.5, 1, 2, 4, 8 s


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Alerts:
    def __init__(self, store, clock, webhooks: tuple[str, ...] = (), secret: bytes = b"", *,
                 pct: float = 80.0, backoff_s: float = BACKOFF_S) -> None:
        self.store = store
        self.clock = clock
        self.webhooks = webhooks
        self.secret = secret
        self.pct = pct
        self.backoff_s = backoff_s
        self._queue: asyncio.Queue[tuple[AlertRecord, str | None]] = asyncio.Queue(QUEUE_MAX)
        self._seen: set[str] = set()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alerts")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()

    # -- the request side: cheap, synchronous, never raises ------------------------------------

    def emit(self, kind: str, subject: str, message: str, dedupe: str | None = None) -> None:
        if dedupe is not None:
            if dedupe in self._seen:
                return
            if len(self._seen) >= SEEN_MAX:
                self._seen.clear()
            self._seen.add(dedupe)
        try:
            self._queue.put_nowait((AlertRecord(new_id("alr_"), kind, subject, message, self.clock.now()), dedupe))
        except asyncio.QueueFull:
            self.dropped += 1

    def check_quota(self, subject: str, d: Any) -> None:
        """A plan quota (day/month counters) at 80 % and at 100 %: once per period each."""
        if d is None or d.limit <= 0 or d.rule in ("rpm",) or d.rule.endswith(".rpm"):
            return
        used = d.used / d.limit * 100
        if used >= 100:
            self.emit("quota_100", subject, f"{d.rule} quota is used up ({d.used} of {d.limit})",
                      f"quota_100:{subject}:{d.rule}:{int(d.reset_at)}")
        elif used >= 80:
            self.emit("quota_80", subject, f"{d.rule} quota at {used:.0f} % ({d.used} of {d.limit})",
                      f"quota_80:{subject}:{d.rule}:{int(d.reset_at)}")

    def check_budget(self, subject: str, d: Any) -> None:
        """A $ budget past its soft threshold (budget_alert_pct): once per period."""
        if d is None or d.limit <= 0:
            return
        used = d.used / d.limit * 100
        if used >= self.pct:
            self.emit("budget_threshold", subject,
                      f"{d.rule} at {used:.0f} % (${d.used / 1e6:.4f} of ${d.limit / 1e6:.2f})",
                      f"budget:{subject}:{d.rule}:{int(d.reset_at)}")

    # -- the worker -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            rec, dedupe = await self._queue.get()
            try:
                if not await self.store.insert_alert(rec, dedupe):
                    continue  # another replica (or an earlier run) raised it this period
                if self.webhooks and await self._deliver(rec):
                    await self.store.mark_alert_delivered(rec.id)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("alert %s not recorded or delivered: %s", rec.kind, type(e).__name__)

    async def _deliver(self, rec: AlertRecord) -> bool:
        body = json.dumps({"id": rec.id, "kind": rec.kind, "subject": rec.subject, "message": rec.message,
                           "created_at": rec.created_at}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "X-Tollgate-Signature": signature(self.secret, body),
                   "X-Tollgate-Alert": rec.kind}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        ok = True
        for url in self.webhooks:
            delay = self.backoff_s
            for attempt in range(RETRIES):
                try:
                    async with self._session.post(url, data=body, headers=headers) as r:
                        if r.status < 300:
                            break
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                if attempt == RETRIES - 1:
                    ok = False
                    log.warning("alert %s: webhook gave up after %d tries", rec.kind, RETRIES)
                    break
                await asyncio.sleep(delay)
                delay *= 2
        return ok
