"""The `balanced` strategy (seed 000's default): power of two choices over the top level.

Two distinct top-level keys are drawn at random and the one with the lower latency per unit
of weight goes first. Random pairs spread load like random choice, and picking the better
of two keeps traffic off a slow key without the herd effect of always picking the best
(Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"). The rest of the top
level follows shuffled, then the other levels in priority order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import chain

from services.routing.strategies.base import CandidateView, Order, PerList, shuffled
from services.routing.strategies.priority import split_top


def load_score(c: CandidateView) -> float:
    """Latency per unit weight; an unmeasured key scores 0 so it gets tried and measured."""
    return (c.latency_ewma_ms or 0.0) / max(c.weight, 1e-9)


class BalancedStrategy:
    name = "balanced"

    __slots__ = ("_split", "latency")

    def __init__(self) -> None:
        self._split: PerList[tuple[list[CandidateView], list[CandidateView]]] = PerList(split_top)
        # Set by the router: a key's latency EWMA, read for the two drawn keys only (not filled
        # into every candidate first); without it the candidates' own latency_ewma_ms is used.
        self.latency: Callable[[str], float | None] | None = None

    def order(self, candidates: list[CandidateView], rng: random.Random) -> Order:
        top, rest = self._split.get(candidates)
        if len(top) < 2:
            return Order(top + rest)
        a, b = rng.sample(range(len(top)), 2)
        if self.latency is not None:
            for i in (a, b):
                top[i].latency_ewma_ms = self.latency(top[i].target.key_id)
        # On a tie the first draw wins; it was random, so ties stay evenly spread.
        first = b if load_score(top[b]) < load_score(top[a]) else a
        # Then the rest of the level shuffled (drawn as read), then the other levels.
        return Order((), chain(shuffled(top, rng, skip=first), rest))
