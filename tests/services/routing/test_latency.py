"""The per-target latency EWMA that least-latency and balanced order by."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.routing.latency import LatencyTracker


def test_no_sample_is_none() -> None:
    assert LatencyTracker().get("pk_a") is None
    assert LatencyTracker().snapshot() == {}


def test_first_sample_is_the_estimate() -> None:
    t = LatencyTracker()
    t.observe("pk_a", 250.0)
    assert t.get("pk_a") == 250.0


def test_moves_a_fraction_alpha_towards_each_sample() -> None:
    t = LatencyTracker(alpha=0.3)
    t.observe("pk_a", 100.0)
    t.observe("pk_a", 200.0)
    # EWMA definition: new = old + alpha × (sample − old) = 100 + 0.3 × 100.
    assert t.get("pk_a") == pytest.approx(130.0)


def test_follows_a_step_change_within_a_few_samples() -> None:
    t = LatencyTracker(alpha=0.3)
    for _ in range(20):
        t.observe("pk_a", 100.0)
    for _ in range(15):
        t.observe("pk_a", 1000.0)
    assert 990.0 < t.get("pk_a") < 1000.0


def test_keys_are_independent_and_snapshot_is_a_copy() -> None:
    t = LatencyTracker()
    t.observe("pk_a", 10.0)
    t.observe("pk_b", 20.0)
    snap = t.snapshot()
    assert snap == {"pk_a": 10.0, "pk_b": 20.0}
    snap["pk_a"] = 0.0
    assert t.get("pk_a") == 10.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_samples_are_ignored(bad: float) -> None:
    t = LatencyTracker()
    t.observe("pk_a", 50.0)
    t.observe("pk_a", bad)
    assert t.get("pk_a") == 50.0


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_rejects_alpha_outside_0_1(alpha: float) -> None:
    with pytest.raises(ValueError):
        LatencyTracker(alpha=alpha)


@given(st.lists(st.floats(0.0, 1e6), min_size=1, max_size=50), st.floats(0.01, 1.0))
def test_estimate_stays_within_the_samples(samples: list[float], alpha: float) -> None:
    t = LatencyTracker(alpha=alpha)
    for ms in samples:
        t.observe("k", ms)
    est = t.get("k")
    assert est is not None
    assert min(samples) - 1e-6 <= est <= max(samples) + 1e-6
