"""The `weighted` strategy: smooth weighted round-robin over the top priority level.

nginx's algorithm (ngx_http_upstream_get_peer): each pick adds every weight to its running
score, takes the highest score, and subtracts the total from it. Over any run of sum(weights)
picks each key is first exactly `weight` times, interleaved (5/3/2 gives A B C A A B A C B A,
not five As in a row). Weight ≤ 0 means never first. Other levels follow in priority order.
"""

from __future__ import annotations

import random

from services.routing.strategies.base import CandidateView
from services.routing.strategies.priority import split_top
from services.routing.strategies.round_robin import STATE_ENTRIES, LruState


class WeightedStrategy:
    name = "weighted"

    __slots__ = ("_scores",)

    def __init__(self, capacity: int = STATE_ENTRIES) -> None:
        self._scores: LruState[list[float]] = LruState(capacity)

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView]:
        top, rest = split_top(candidates)
        live = [i for i, c in enumerate(top) if c.weight > 0.0]
        if len(top) < 2 or not live:
            # No positive weight at the top: nothing to share out, keep declaration order.
            return top + rest
        dead = [top[i] for i in range(len(top)) if top[i].weight <= 0.0]
        # Weights are part of the key: a reloaded config with new weights starts fresh scores.
        set_key = tuple((top[i].target.key_id, top[i].weight) for i in live)
        scores = self._scores.get(set_key, lambda: [0.0] * len(live))
        total = 0.0
        for j, i in enumerate(live):
            scores[j] += top[i].weight
            total += top[i].weight
        best = max(range(len(live)), key=scores.__getitem__)  # ties: declaration order
        scores[best] -= total
        # Failover within the level goes to whoever smooth WRR would pick next.
        after = sorted((j for j in range(len(live)) if j != best), key=lambda j: -scores[j])
        return [top[live[best]]] + [top[live[j]] for j in after] + dead + rest
