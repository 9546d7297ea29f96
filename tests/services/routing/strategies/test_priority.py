"""`priority`: levels in order, equal keys shuffled to spread load."""

from __future__ import annotations

import random

from services.routing.strategies.priority import PriorityStrategy, by_priority, split_top
from tests.services.routing.strategies.cands import cand, first_counts, ids


def test_levels_run_lowest_priority_first() -> None:
    cs = [cand("c", priority=2), cand("a", priority=0), cand("b", priority=1)]
    assert ids(PriorityStrategy().order(cs, random.Random(1))) == ["a", "b", "c"]


def test_equal_priority_keys_share_first_place() -> None:
    s, rng = PriorityStrategy(), random.Random(7)
    cs = [cand("a"), cand("b"), cand("c"), cand("backup", priority=1)]
    counts = first_counts(lambda: s.order(cs, rng), 3000)
    assert set(counts) == {"a", "b", "c"}  # the backup level is never first
    for key in "abc":
        assert abs(counts[key] / 3000 - 1 / 3) < 0.05


def test_failover_still_walks_down_the_levels() -> None:
    s, rng = PriorityStrategy(), random.Random(3)
    cs = [cand("low", priority=5), cand("a"), cand("b"), cand("mid1", priority=1), cand("mid2", priority=1)]
    for _ in range(50):
        out = s.order(cs, rng)
        assert [c.priority for c in out] == [0, 0, 1, 1, 5]
        assert set(ids(out[2:4])) == {"mid1", "mid2"}


def test_same_seed_same_order() -> None:
    cs = [cand(k) for k in "abcdef"]
    s = PriorityStrategy()
    assert ids(s.order(cs, random.Random(42))) == ids(s.order(cs, random.Random(42)))


def test_helpers_keep_declaration_order_within_a_level() -> None:
    cs = [cand("x", 1), cand("a", 0), cand("y", 1), cand("b", 0)]
    assert ids(by_priority(cs)) == ["a", "b", "x", "y"]
    top, rest = split_top(cs)
    assert (ids(top), ids(rest)) == (["a", "b"], ["x", "y"])
    assert split_top([]) == ([], [])
