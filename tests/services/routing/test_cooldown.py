"""Rate-limit cool-downs (RELIABILITY A3: `Retry-After: 30` → key idle 30 ± 1 s) on a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.clock import FakeClock
from services.routing.cooldown import Cooldowns


def test_unknown_key_is_ready() -> None:
    cd = Cooldowns(FakeClock())
    assert cd.ready("pk_a")
    assert cd.remaining("pk_a") == 0.0
    assert cd.snapshot() == {}


def test_idle_until_retry_after_then_ready() -> None:
    clock = FakeClock()
    cd = Cooldowns(clock)
    cd.set("pk_a", 30.0)
    assert not cd.ready("pk_a")
    assert cd.remaining("pk_a") == 30.0
    clock.advance(29.0)
    assert not cd.ready("pk_a")
    assert cd.remaining("pk_a") == pytest.approx(1.0)
    clock.advance(1.0)
    assert cd.ready("pk_a")
    assert cd.snapshot() == {}  # expired entries are gone


def test_keys_are_independent() -> None:
    clock = FakeClock()
    cd = Cooldowns(clock)
    cd.set("pk_a", 30.0)
    assert cd.ready("pk_b")
    assert cd.snapshot() == {"pk_a": 30.0}


def test_shorter_hint_does_not_cut_a_longer_one() -> None:
    clock = FakeClock()
    cd = Cooldowns(clock)
    cd.set("pk_a", 30.0)
    cd.set("pk_a", 2.0)
    clock.advance(5.0)
    assert not cd.ready("pk_a")
    cd.set("pk_a", 60.0)  # a longer one extends it
    assert cd.remaining("pk_a") == 60.0


@pytest.mark.parametrize("seconds", [0.0, -5.0, math.nan, math.inf])
def test_meaningless_durations_are_ignored(seconds: float) -> None:
    cd = Cooldowns(FakeClock())
    cd.set("pk_a", seconds)
    assert cd.ready("pk_a")


def test_many_expired_keys_are_swept() -> None:
    clock = FakeClock()
    cd = Cooldowns(clock)
    for i in range(3000):
        cd.set(f"pk_{i}", 1.0)
    clock.advance(2.0)
    for i in range(3000, 4100):
        cd.set(f"pk_{i}", 10.0)
    # Keys never asked about again do not stay: only the live ones remain.
    assert len(cd.snapshot()) == 1100
    assert all(cd.ready(f"pk_{i}") for i in range(3000))


_STEPS = st.lists(
    st.tuples(st.sampled_from(["pk_a", "pk_b"]), st.floats(0.0, 100.0), st.floats(0.0, 50.0)),
    max_size=30,
)


@given(_STEPS)
def test_remaining_is_the_latest_end_asked_for(steps: list[tuple[str, float, float]]) -> None:
    clock = FakeClock()
    cd = Cooldowns(clock)
    ends: dict[str, float] = {}
    for key, seconds, then_wait in steps:
        cd.set(key, seconds)
        if seconds > 0:
            ends[key] = max(ends.get(key, -math.inf), clock.monotonic() + seconds)
        clock.advance(then_wait)
        for k in ("pk_a", "pk_b"):
            expected = max(ends.get(k, -math.inf) - clock.monotonic(), 0.0)
            assert cd.remaining(k) == pytest.approx(expected)
            assert cd.ready(k) == (expected == 0.0)
