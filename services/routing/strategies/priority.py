"""The `priority` strategy, and the priority ordering every other strategy fails over along.

Levels run lowest `priority` first; within a level the order is shuffled, which spreads load
over equal keys while failover still walks down the levels (seed 002's priority failover).
"""

from __future__ import annotations

import random
from itertools import chain, groupby

from services.routing.strategies.base import CandidateView, Order, PerList, shuffled


def by_priority(candidates: list[CandidateView]) -> list[CandidateView]:
    """Stable sort by (priority, declaration order): sorted() keeps equal items in input order."""
    return sorted(candidates, key=_priority)


def split_top(candidates: list[CandidateView]) -> tuple[list[CandidateView], list[CandidateView]]:
    """(the top level in declaration order, every other level in priority order)."""
    ordered = by_priority(candidates)
    if not ordered:
        return [], []
    top = ordered[0].priority
    cut = next((i for i, c in enumerate(ordered) if c.priority != top), len(ordered))
    return ordered[:cut], ordered[cut:]


def _priority(c: CandidateView) -> int:
    return c.priority


def levels(candidates: list[CandidateView]) -> list[list[CandidateView]]:
    """The priority levels, lowest first, each in declaration order."""
    return [list(level) for _, level in groupby(by_priority(candidates), key=_priority)]


class PriorityStrategy:
    """Priority levels in order; ties within a level shuffled with the injected rng, drawn as the
    router reads them (a request with a thousand candidates tries a few: base.Order)."""

    name = "priority"

    __slots__ = ("_levels",)

    def __init__(self) -> None:
        self._levels: PerList[list[list[CandidateView]]] = PerList(levels)

    def order(self, candidates: list[CandidateView], rng: random.Random) -> Order:
        return Order((), chain.from_iterable(shuffled(level, rng) for level in self._levels.get(candidates)))
