"""The `exhaust-first` strategy: the first key takes all traffic until it runs out.

Seed 001: "use keys until quota is exhausted before moving to next". The order is fixed
(priority, then declaration order); a key leaves the front only when routing/candidates.py
filters it out as exhausted, or a failed try fails over to the next one.
"""

from __future__ import annotations

import random

from services.routing.strategies.base import CandidateView, Order, PerList
from services.routing.strategies.priority import by_priority


class ExhaustFirstStrategy:
    name = "exhaust-first"

    __slots__ = ("_sorted",)

    def __init__(self) -> None:
        self._sorted: PerList[list[CandidateView]] = PerList(by_priority)  # the order is fixed: sorted once

    def order(self, candidates: list[CandidateView], rng: random.Random) -> Order:
        # No shuffle on purpose: spreading load is exactly what this strategy must not do.
        return Order.fixed(self._sorted.get(candidates))
