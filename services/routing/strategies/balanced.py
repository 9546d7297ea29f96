"""The `balanced` strategy (seed 000's default): power of two choices over the top level.

Two distinct top-level keys are drawn at random and the one with the lower latency per unit
of weight goes first. Random pairs spread load like random choice, and picking the better
of two keeps traffic off a slow key without the herd effect of always picking the best
(Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"). The rest of the top
level follows shuffled, then the other levels in priority order.
"""

from __future__ import annotations

import random

from services.routing.strategies.base import CandidateView
from services.routing.strategies.priority import split_top


def load_score(c: CandidateView) -> float:
    """Latency per unit weight; an unmeasured key scores 0 so it gets tried and measured."""
    return (c.latency_ewma_ms or 0.0) / max(c.weight, 1e-9)


class BalancedStrategy:
    name = "balanced"

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView]:
        top, rest = split_top(candidates)
        if len(top) < 2:
            return top + rest
        a, b = rng.sample(range(len(top)), 2)
        # On a tie the first draw wins; it was random, so ties stay evenly spread.
        first = b if load_score(top[b]) < load_score(top[a]) else a
        others = top[:first] + top[first + 1 :]
        rng.shuffle(others)
        return [top[first]] + others + rest
