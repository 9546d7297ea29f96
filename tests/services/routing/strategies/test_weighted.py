"""`weighted`: smooth weighted round-robin (nginx) over the top level."""

from __future__ import annotations

import random
from collections import Counter

from services.routing.strategies.weighted import WeightedStrategy
from tests.services.routing.strategies.cands import cand, first_counts, ids


def test_thousand_requests_follow_the_weights() -> None:
    s, rng = WeightedStrategy(), random.Random(2)
    cs = [cand("a", weight=5), cand("b", weight=3), cand("c", weight=2), cand("backup", priority=1)]
    counts = first_counts(lambda: s.order(cs, rng), 1000)
    for key, share in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
        assert abs(counts[key] / 1000 - share) <= 0.03
    assert counts["backup"] == 0


def test_every_window_of_sum_weights_is_exact() -> None:
    s, rng = WeightedStrategy(), random.Random(2)
    cs = [cand("a", weight=5), cand("b", weight=3), cand("c", weight=2)]
    firsts = [s.order(cs, rng)[0].target.key_id for _ in range(100)]
    for i in range(0, 100, 10):
        assert Counter(firsts[i : i + 10]) == {"a": 5, "b": 3, "c": 2}


def test_smooth_not_bursty() -> None:
    # Plain WRR would send a five times in a row; smooth WRR never sends it more than twice.
    s, rng = WeightedStrategy(), random.Random(2)
    cs = [cand("a", weight=5), cand("b", weight=3), cand("c", weight=2)]
    firsts = "".join(s.order(cs, rng)[0].target.key_id for _ in range(50))
    assert "aaa" not in firsts


def test_zero_weight_is_never_first_but_still_a_fallback() -> None:
    s, rng = WeightedStrategy(), random.Random(2)
    cs = [cand("a", weight=1), cand("off", weight=0), cand("neg", weight=-1), cand("b", weight=1)]
    for _ in range(100):
        out = ids(s.order(cs, rng))
        assert out[0] in {"a", "b"}
        assert sorted(out) == ["a", "b", "neg", "off"]


def test_all_zero_weights_still_returns_everyone() -> None:
    cs = [cand("a", weight=0), cand("b", weight=0), cand("c", priority=1)]
    assert ids(WeightedStrategy().order(cs, random.Random(2))) == ["a", "b", "c"]


def test_lower_levels_follow_in_priority_order() -> None:
    s, rng = WeightedStrategy(), random.Random(2)
    cs = [cand("z", priority=2, weight=100), cand("a", weight=2), cand("y", priority=1), cand("b", weight=1)]
    for _ in range(6):
        out = ids(s.order(cs, rng))
        assert sorted(out[:2]) == ["a", "b"] and out[2:] == ["y", "z"]


def test_fractional_weights() -> None:
    s, rng = WeightedStrategy(), random.Random(2)
    cs = [cand("a", weight=0.75), cand("b", weight=0.25)]
    counts = first_counts(lambda: s.order(cs, rng), 1000)
    assert abs(counts["a"] / 1000 - 0.75) <= 0.03
