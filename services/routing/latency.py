"""Latency tracking: an exponentially weighted moving average per routing target, in ms.

Feeds CandidateView.latency_ewma_ms for the least-latency and balanced strategies. An EWMA
follows a key that slows down within a few requests (alpha 0.3: the newest sample is 30% of
the estimate) without one slow outlier swinging the ordering for long.

It also keeps a short log of which keys changed, so a strategy that keeps its candidates sorted
by latency (least_latency.py) updates only what moved since it last looked instead of reading
every key per request.
"""

from __future__ import annotations

import math


class LatencyTracker:
    """EWMA of observed latencies, per target key (a string the router chooses)."""

    __slots__ = ("_alpha", "_ewma", "_log", "_base", "_log_max")

    def __init__(self, alpha: float = 0.3, log_max: int = 4096) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self._alpha = alpha
        self._ewma: dict[str, float] = {}
        # Keys in the order their estimate changed; _base = how many were dropped from the front.
        self._log: list[str] = []
        self._base = 0
        self._log_max = log_max

    def observe(self, key: str, ms: float) -> None:
        # A negative or non-finite duration is a measuring bug; it must not poison the average.
        # (Comparisons, not math.isfinite(): NaN fails both, and this runs on every answer.)
        if not 0.0 <= ms < math.inf:
            return
        prev = self._ewma.get(key)
        # The first sample is the estimate: starting from 0 would make a new key look fastest.
        self._ewma[key] = ms if prev is None else prev + self._alpha * (ms - prev)
        log = self._log
        log.append(key)
        if len(log) > self._log_max:  # bounded: a reader this far behind re-reads every key
            half = len(log) // 2
            del log[:half]
            self._base += half

    @property
    def position(self) -> int:
        """How many changes were ever logged: pass it to changed_since() later."""
        return self._base + len(self._log)

    def changed_since(self, position: int) -> list[str] | None:
        """The keys whose estimate changed since `position` (repeats possible, oldest first), or
        None when the log no longer reaches back that far."""
        if position < self._base:
            return None
        return self._log[position - self._base:]

    def get(self, key: str) -> float | None:
        return self._ewma.get(key)

    def snapshot(self) -> dict[str, float]:
        return dict(self._ewma)
