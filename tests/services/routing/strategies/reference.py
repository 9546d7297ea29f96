"""The simple implementations the fast strategies must agree with, kept as they were (main at
e74405b): least-latency sorts every candidate per request, weighted runs nginx's per-key loop.
Only the property tests (test_fast_equals_reference.py) use them."""

from __future__ import annotations

import random

from services.routing.strategies.base import CandidateView
from services.routing.strategies.priority import split_top
from services.routing.strategies.round_robin import STATE_ENTRIES, LruState


class ReferenceLeastLatency:
    name = "least-latency"

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView]:
        return sorted(candidates, key=_key)  # stable: equal keys keep declaration order


def _key(c: CandidateView) -> tuple[bool, float, int]:
    measured = c.latency_ewma_ms is not None
    return (measured, c.latency_ewma_ms or 0.0, c.priority)


class ReferenceWeighted:
    name = "weighted"

    def __init__(self, capacity: int = STATE_ENTRIES) -> None:
        self._scores: LruState[list[float]] = LruState(capacity)

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView]:
        top, rest = split_top(candidates)
        live = [i for i, c in enumerate(top) if c.weight > 0.0]
        if len(top) < 2 or not live:
            return top + rest
        dead = [top[i] for i in range(len(top)) if top[i].weight <= 0.0]
        set_key = tuple((top[i].target.key_id, top[i].weight) for i in live)
        scores = self._scores.get(set_key, lambda: [0.0] * len(live))
        total = 0.0
        for j, i in enumerate(live):
            scores[j] += top[i].weight
            total += top[i].weight
        best = max(range(len(live)), key=scores.__getitem__)  # ties: declaration order
        scores[best] -= total
        after = sorted((j for j in range(len(live)) if j != best), key=lambda j: -scores[j])
        return [top[live[best]]] + [top[live[j]] for j in after] + dead + rest


def reference_shuffled(items: list[CandidateView], rng: random.Random, skip: int = -1):
    """base.shuffled as it was: Fisher-Yates from the front in a copy of the list."""
    pool = list(items)
    n = len(pool)
    k0 = 0
    if skip >= 0:
        pool[0], pool[skip] = pool[skip], pool[0]
        k0 = 1
        yield pool[0]
    for k in range(k0, n - 1):
        j = rng.randrange(k, n)
        pool[k], pool[j] = pool[j], pool[k]
        yield pool[k]
    if n > k0:
        yield pool[n - 1]
