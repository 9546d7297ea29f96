"""Latency tracking: an exponentially weighted moving average per routing target, in ms.

Feeds CandidateView.latency_ewma_ms for the least-latency and balanced strategies. An EWMA
follows a key that slows down within a few requests (alpha 0.3: the newest sample is 30% of
the estimate) without one slow outlier swinging the ordering for long.
"""

from __future__ import annotations

import math


class LatencyTracker:
    """EWMA of observed latencies, per target key (a string the router chooses)."""

    __slots__ = ("_alpha", "_ewma")

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self._alpha = alpha
        self._ewma: dict[str, float] = {}

    def observe(self, key: str, ms: float) -> None:
        # A negative or non-finite duration is a measuring bug; it must not poison the average.
        if not math.isfinite(ms) or ms < 0.0:
            return
        prev = self._ewma.get(key)
        # The first sample is the estimate: starting from 0 would make a new key look fastest.
        self._ewma[key] = ms if prev is None else prev + self._alpha * (ms - prev)

    def get(self, key: str) -> float | None:
        return self._ewma.get(key)

    def snapshot(self) -> dict[str, float]:
        return dict(self._ewma)
