"""The `cost` strategy: cheapest key first, by a blended per-token price.

Prompts usually outweigh completions; assuming 3 input tokens per output token,
the blended price per million tokens is (3 × input + output) / 4 (the ratio Artificial
Analysis uses for its blended prices). Ties fall back to priority, then declaration order.
"""

from __future__ import annotations

import random

from services.routing.strategies.base import CandidateView, Order, PerList


def blended_price(c: CandidateView) -> float:
    """USD per million tokens at a 3:1 input:output ratio."""
    return (3.0 * c.price_in_per_mtok + c.price_out_per_mtok) / 4.0


def by_price(candidates: list[CandidateView]) -> list[CandidateView]:
    return sorted(candidates, key=lambda c: (blended_price(c), c.priority))


class CostStrategy:
    name = "cost"

    __slots__ = ("_sorted",)

    def __init__(self) -> None:
        self._sorted: PerList[list[CandidateView]] = PerList(by_price)  # prices are the config's: sorted once

    def order(self, candidates: list[CandidateView], rng: random.Random) -> Order:
        return Order.fixed(self._sorted.get(candidates))
