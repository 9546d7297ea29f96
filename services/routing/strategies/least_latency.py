"""The `least-latency` strategy: fastest observed key first (EWMA from routing/latency.py).

Keys with no sample yet go first so they get measured; otherwise a key that is never tried
could never prove it is fast. Ties fall back to priority, then declaration order.
"""

from __future__ import annotations

import random

from services.routing.strategies.base import CandidateView


class LeastLatencyStrategy:
    name = "least-latency"

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView]:
        return sorted(candidates, key=_key)  # stable: equal keys keep declaration order


def _key(c: CandidateView) -> tuple[bool, float, int]:
    measured = c.latency_ewma_ms is not None
    return (measured, c.latency_ewma_ms or 0.0, c.priority)
