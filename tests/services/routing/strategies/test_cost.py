"""`cost`: cheapest blended price (3 input : 1 output tokens) first."""

from __future__ import annotations

import random

from services.routing.strategies.cost import CostStrategy, blended_price
from tests.services.routing.strategies.cands import cand, ids


def test_cheapest_first() -> None:
    cs = [cand("pricey", price_in=10, price_out=30), cand("cheap", price_in=0.1, price_out=0.4)]
    assert ids(CostStrategy().order(cs, random.Random(1))) == ["cheap", "pricey"]


def test_input_price_weighs_three_times_output() -> None:
    # Per million tokens, 3M in + 1M out: "in_heavy" costs 3×3 + 3 = 12, "out_heavy" 3×0 + 8 = 8.
    # A plain in + out sum (6 vs 8) would put them the other way round.
    cs = [cand("in_heavy", price_in=3, price_out=3), cand("out_heavy", price_in=0, price_out=8)]
    assert ids(CostStrategy().order(cs, random.Random(1))) == ["out_heavy", "in_heavy"]
    assert blended_price(cs[0]) == 12 / 4


def test_ties_by_priority_then_declaration() -> None:
    cs = [cand("c", priority=1, price_in=1), cand("a", price_in=1), cand("b", price_in=1)]
    assert ids(CostStrategy().order(cs, random.Random(1))) == ["a", "b", "c"]


def test_free_local_models_first() -> None:
    cs = [cand("openai", price_in=2.5, price_out=10), cand("ollama")]
    assert ids(CostStrategy().order(cs, random.Random(1)))[0] == "ollama"
