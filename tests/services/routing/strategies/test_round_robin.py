"""`round-robin` (seed 001): even rotation over the top level, failover down the levels."""

from __future__ import annotations

import random

from services.routing.strategies.round_robin import LruState, RoundRobinStrategy
from tests.services.routing.strategies.cands import cand, first_counts, ids


def test_thousand_requests_spread_evenly() -> None:
    s, rng = RoundRobinStrategy(), random.Random(11)
    cs = [cand("a"), cand("b"), cand("c"), cand("backup", priority=1)]
    counts = first_counts(lambda: s.order(cs, rng), 1000)
    assert set(counts) == {"a", "b", "c"}
    for key in "abc":
        assert abs(counts[key] / 1000 - 1 / 3) <= 0.03


def test_consecutive_requests_rotate() -> None:
    s, rng = RoundRobinStrategy(), random.Random(5)
    cs = [cand("a"), cand("b"), cand("c")]
    firsts = [s.order(cs, rng)[0].target.key_id for _ in range(9)]
    assert all(x != y for x, y in zip(firsts, firsts[1:]))
    assert all(sorted(firsts[i : i + 3]) == ["a", "b", "c"] for i in range(0, 9, 3))


def test_lower_levels_follow_in_priority_order() -> None:
    s, rng = RoundRobinStrategy(), random.Random(5)
    cs = [cand("z", priority=2), cand("a"), cand("y", priority=1), cand("b")]
    for _ in range(4):
        out = ids(s.order(cs, rng))
        assert sorted(out[:2]) == ["a", "b"]
        assert out[2:] == ["y", "z"]


def test_each_candidate_set_rotates_on_its_own() -> None:
    s, rng = RoundRobinStrategy(), random.Random(5)
    ab, cd = [cand("a"), cand("b")], [cand("c"), cand("d")]
    seen_ab, seen_cd = [], []
    for _ in range(6):
        seen_ab.append(s.order(ab, rng)[0].target.key_id)
        seen_cd.append(s.order(cd, rng)[0].target.key_id)
    # Interleaving another model's requests does not skip anyone in this one.
    assert sorted(seen_ab) == ["a"] * 3 + ["b"] * 3
    assert sorted(seen_cd) == ["c"] * 3 + ["d"] * 3


def test_state_is_bounded() -> None:
    s, rng = RoundRobinStrategy(capacity=8), random.Random(5)
    for i in range(100):
        out = s.order([cand(f"a{i}"), cand(f"b{i}")], rng)
        assert sorted(ids(out)) == [f"a{i}", f"b{i}"]
    assert len(s._counters) == 8


def test_lru_evicts_the_least_recently_used() -> None:
    lru: LruState[list[int]] = LruState(capacity=2)
    lru.get("x", lambda: [1])
    lru.get("y", lambda: [2])
    lru.get("x", lambda: [0])  # touch x: y is now the oldest
    lru.get("z", lambda: [3])
    assert lru.get("x", lambda: [-1]) == [1]
    assert lru.get("y", lambda: [-1]) == [-1]  # y was evicted and made afresh


def test_the_same_set_from_another_list_goes_on_rotating() -> None:
    # A reloaded config builds new candidate lists; equal sets keep their place in the rotation,
    # whichever list object asks, in any interleaving.
    s, rng = RoundRobinStrategy(), random.Random(5)
    old = [cand("a"), cand("b"), cand("c")]
    new = [cand("a"), cand("b"), cand("c")]
    firsts = [s.order(old if i % 3 else new, rng)[0].target.key_id for i in range(12)]
    assert all(sorted(firsts[i : i + 3]) == ["a", "b", "c"] for i in range(0, 12, 3))
    assert len(s._counters) == 1
