"""`least-latency`: fastest EWMA first; unmeasured keys first so they get measured."""

from __future__ import annotations

import random

from services.routing.strategies.least_latency import LeastLatencyStrategy
from tests.services.routing.strategies.cands import cand, ids


def test_fastest_first() -> None:
    cs = [cand("slow", latency=900.0), cand("fast", latency=120.0), cand("mid", latency=400.0)]
    assert ids(LeastLatencyStrategy().order(cs, random.Random(1))) == ["fast", "mid", "slow"]


def test_latency_beats_priority() -> None:
    cs = [cand("primary", priority=0, latency=800.0), cand("backup", priority=1, latency=100.0)]
    assert ids(LeastLatencyStrategy().order(cs, random.Random(1))) == ["backup", "primary"]


def test_unmeasured_keys_come_first() -> None:
    cs = [cand("fast", latency=1.0), cand("new"), cand("slow", latency=50.0), cand("new2")]
    assert ids(LeastLatencyStrategy().order(cs, random.Random(1))) == ["new", "new2", "fast", "slow"]


def test_ties_by_priority_then_declaration() -> None:
    cs = [cand("c", priority=1, latency=100.0), cand("a", latency=100.0), cand("b", latency=100.0)]
    assert ids(LeastLatencyStrategy().order(cs, random.Random(1))) == ["a", "b", "c"]
    unmeasured = [cand("y", priority=1), cand("x", priority=0)]
    assert ids(LeastLatencyStrategy().order(unmeasured, random.Random(1))) == ["x", "y"]
