"""`exhaust-first` (seed 001): the first key takes every request until it drops out upstream."""

from __future__ import annotations

import random

from services.routing.strategies.exhaust_first import ExhaustFirstStrategy
from tests.services.routing.strategies.cands import cand, first_counts, ids


def test_first_key_takes_all_traffic() -> None:
    s, rng = ExhaustFirstStrategy(), random.Random(1)
    cs = [cand("a"), cand("b"), cand("c")]
    assert first_counts(lambda: s.order(cs, rng), 500) == {"a": 500}


def test_next_key_takes_over_once_the_first_is_filtered_out() -> None:
    s, rng = ExhaustFirstStrategy(), random.Random(1)
    # candidates.py drops an exhausted key before the strategy sees the list.
    assert ids(s.order([cand("b"), cand("c")], rng)) == ["b", "c"]


def test_priority_before_declaration_order() -> None:
    cs = [cand("spare", priority=1), cand("main", priority=0), cand("main2", priority=0)]
    assert ids(ExhaustFirstStrategy().order(cs, random.Random(1))) == ["main", "main2", "spare"]


def test_rng_does_not_matter() -> None:
    cs = [cand(k) for k in "abcdef"]
    s = ExhaustFirstStrategy()
    assert {tuple(ids(s.order(cs, random.Random(seed)))) for seed in range(20)} == {tuple("abcdef")}
