"""strategies/__init__.py: names, aliases, the default, and what every strategy promises."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.routing.strategies import DEFAULT, NAMES, make_strategy
from tests.services.routing.strategies.cands import cand

# Strategies that fail over along priority levels (cost and least-latency order across them).
_BY_LEVEL = {"priority", "exhaust-first", "round-robin", "weighted", "balanced"}


def test_seven_hyphenated_names() -> None:
    assert set(NAMES) == {
        "priority", "exhaust-first", "round-robin", "weighted", "least-latency", "cost", "balanced",
    }
    assert _BY_LEVEL < set(NAMES)


def test_default_is_balanced() -> None:
    assert DEFAULT == "balanced"
    assert make_strategy(DEFAULT).name == "balanced"


@pytest.mark.parametrize("name", NAMES)
def test_each_name_makes_its_strategy(name: str) -> None:
    assert make_strategy(name).name == name


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("least_latency", "least-latency"),
        ("exhaust_first", "exhaust-first"),
        ("ROUND_ROBIN", "round-robin"),
        (" Weighted ", "weighted"),
    ],
)
def test_aliases(alias: str, name: str) -> None:
    assert make_strategy(alias).name == name


@pytest.mark.parametrize("bad", ["", "fastest", "round robin", "random"])
def test_unknown_name_lists_the_choices(bad: str) -> None:
    with pytest.raises(ValueError) as err:
        make_strategy(bad)
    assert all(name in str(err.value) for name in NAMES)


def test_each_call_is_a_new_instance() -> None:
    # Round-robin state lives on the instance: two gateways' strategies must not share it.
    a, b = make_strategy("round-robin"), make_strategy("round-robin")
    assert a is not b


_CANDIDATES = st.lists(
    st.builds(
        cand,
        key_id=st.text("abcdefgh", min_size=1, max_size=3),
        priority=st.integers(0, 3),
        weight=st.sampled_from([0.0, 0.5, 1.0, 3.0, -1.0]),
        latency=st.none() | st.floats(0.0, 5000.0),
        price_in=st.floats(0.0, 100.0),
        price_out=st.floats(0.0, 100.0),
    ),
    max_size=8,
)


@given(name=st.sampled_from(NAMES), candidates=_CANDIDATES, seed=st.integers(0, 2**32), calls=st.integers(1, 4))
def test_every_strategy_returns_every_candidate_once(
    name: str, candidates: list, seed: int, calls: int
) -> None:
    strategy, rng = make_strategy(name), random.Random(seed)
    before = list(candidates)
    for _ in range(calls):  # later calls exercise round-robin / weighted state
        out = strategy.order(candidates, rng)
        assert sorted(map(id, out)) == sorted(map(id, candidates))
        assert candidates == before  # the input list is left alone
        if name in _BY_LEVEL:
            assert [c.priority for c in out] == sorted(c.priority for c in candidates)
