"""`balanced` (seed 000's default): power of two choices over the top level."""

from __future__ import annotations

import random

from services.routing.strategies.balanced import BalancedStrategy
from tests.services.routing.strategies.cands import cand, first_counts, ids


def test_unmeasured_equal_keys_share_first_place() -> None:
    s, rng = BalancedStrategy(), random.Random(9)
    cs = [cand("a"), cand("b"), cand("c"), cand("backup", priority=1)]
    counts = first_counts(lambda: s.order(cs, rng), 3000)
    assert set(counts) == {"a", "b", "c"}
    for key in "abc":
        assert abs(counts[key] / 3000 - 1 / 3) < 0.05


def test_two_choices_favour_the_faster() -> None:
    # Of 3 keys a random pair holds the fastest 2/3 of the time, and the fastest then wins;
    # the middle one wins only the (middle, slowest) pair, 1/3; the slowest never wins.
    s, rng = BalancedStrategy(), random.Random(9)
    cs = [cand("slow", latency=300.0), cand("fast", latency=100.0), cand("mid", latency=200.0)]
    counts = first_counts(lambda: s.order(cs, rng), 3000)
    assert counts["slow"] == 0
    assert abs(counts["fast"] / 3000 - 2 / 3) < 0.05
    assert abs(counts["mid"] / 3000 - 1 / 3) < 0.05


def test_latency_is_divided_by_weight() -> None:
    # 400 ms at weight 4 is 100 per unit, beating 150 ms at weight 1.
    cs = [cand("light", latency=150.0, weight=1), cand("heavy", latency=400.0, weight=4)]
    s, rng = BalancedStrategy(), random.Random(9)
    assert first_counts(lambda: s.order(cs, rng), 100) == {"heavy": 100}


def test_unmeasured_key_gets_tried() -> None:
    cs = [cand("measured", latency=50.0), cand("new")]
    s, rng = BalancedStrategy(), random.Random(9)
    assert first_counts(lambda: s.order(cs, rng), 50) == {"new": 50}


def test_rest_of_top_then_lower_levels_in_priority_order() -> None:
    s, rng = BalancedStrategy(), random.Random(9)
    cs = [cand("z", priority=2), cand("a"), cand("b"), cand("y", priority=1), cand("c")]
    for _ in range(30):
        out = ids(s.order(cs, rng))
        assert sorted(out[:3]) == ["a", "b", "c"] and out[3:] == ["y", "z"]


def test_single_top_key_goes_first() -> None:
    cs = [cand("backup", priority=1, latency=1.0), cand("only", latency=900.0)]
    assert ids(BalancedStrategy().order(cs, random.Random(9))) == ["only", "backup"]
