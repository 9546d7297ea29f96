"""The circuit breaker (RELIABILITY A1, A2, A8) on a fake clock, and against a reference model."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from services.clock import FakeClock
from services.routing.breaker import Breaker

KEY = "pk_primary"


def fail(b: Breaker, n: int, key: str = KEY) -> None:
    for _ in range(n):
        b.record_failure(key)


def test_unknown_key_is_closed() -> None:
    b = Breaker(FakeClock())
    assert b.state("nobody") == "closed"
    assert b.allow("nobody")
    assert b.open_until("nobody") is None
    assert b.snapshot() == {}


def test_five_failures_open_it_for_thirty_seconds() -> None:
    clock = FakeClock()
    b = Breaker(clock)
    fail(b, 4)
    assert b.state(KEY) == "closed" and b.allow(KEY)
    fail(b, 1)
    assert b.state(KEY) == "open"
    assert b.open_until(KEY) == clock.monotonic() + 30.0
    assert not b.allow(KEY)


def test_closed_during_the_whole_cooldown() -> None:
    clock = FakeClock()
    b = Breaker(clock)
    fail(b, 5)
    for _ in range(299):
        clock.advance(0.1)
        assert not b.allow(KEY)
    assert b.state(KEY) == "open"


def test_after_cooldown_exactly_one_probe() -> None:
    clock = FakeClock()
    b = Breaker(clock)
    fail(b, 5)
    clock.advance(30.0)
    assert b.state(KEY) == "half_open"
    assert b.open_until(KEY) is None
    assert b.allow(KEY)
    assert [b.allow(KEY) for _ in range(10)] == [False] * 10  # RELIABILITY A2: ≤ 1 probe


def test_probe_success_closes_and_resets_the_count() -> None:
    clock = FakeClock()
    b = Breaker(clock)
    fail(b, 5)
    clock.advance(30.0)
    assert b.allow(KEY)
    b.record_success(KEY)
    assert b.state(KEY) == "closed"
    assert all(b.allow(KEY) for _ in range(10))
    fail(b, 4)  # the count started over: four more do not re-open it
    assert b.state(KEY) == "closed"


def test_probe_failure_reopens_with_a_longer_cooldown() -> None:
    clock = FakeClock()
    b = Breaker(clock)
    fail(b, 5)
    first = b.open_until(KEY) - clock.monotonic()
    clock.advance(first)
    assert b.allow(KEY)
    b.record_failure(KEY)
    assert b.state(KEY) == "open"
    second = b.open_until(KEY) - clock.monotonic()
    assert second > first
    clock.advance(first)
    assert not b.allow(KEY)  # the old, shorter cool-down would have let a probe through here


def test_cooldown_grows_per_ejection_up_to_the_cap() -> None:
    clock = FakeClock()
    b = Breaker(clock, base_cooldown_s=30.0, max_cooldown_s=100.0)
    fail(b, 5)
    cooldowns = []
    for _ in range(5):
        cooldowns.append(b.open_until(KEY) - clock.monotonic())
        clock.advance(cooldowns[-1])
        assert b.allow(KEY)
        b.record_failure(KEY)
    assert cooldowns == [30.0, 60.0, 90.0, 100.0, 100.0]


def test_failure_success_failures_stays_closed() -> None:
    b = Breaker(FakeClock())
    b.record_failure(KEY)  # 500
    b.record_success(KEY)  # 200
    fail(b, 4)  # 4 × 500
    assert b.state(KEY) == "closed"
    assert b.allow(KEY)


def test_release_probe_lets_the_next_probe_go() -> None:
    clock = FakeClock()
    b = Breaker(clock)
    fail(b, 5)
    clock.advance(30.0)
    assert b.allow(KEY)
    assert not b.allow(KEY)
    b.release_probe(KEY)  # the caller cancelled: no verdict on the upstream
    assert b.state(KEY) == "half_open"
    assert b.allow(KEY)
    assert not b.allow(KEY)


def test_release_probe_when_closed_does_nothing() -> None:
    b = Breaker(FakeClock())
    b.release_probe(KEY)
    fail(b, 3)
    b.release_probe(KEY)
    assert b.state(KEY) == "closed"
    assert b.snapshot()[KEY]["consecutive_failures"] == 3


def test_late_success_does_not_cut_the_cooldown_short() -> None:
    clock = FakeClock()
    b = Breaker(clock)
    fail(b, 5)
    until = b.open_until(KEY)
    b.record_success(KEY)  # a request sent before it opened, answering late
    assert b.state(KEY) == "open"
    assert b.open_until(KEY) == until


def test_keys_are_independent() -> None:
    # RELIABILITY A8: a failing key leaves its sibling in use.
    b = Breaker(FakeClock())
    fail(b, 5, "pk_a")
    assert b.state("pk_a") == "open"
    assert b.state("pk_b") == "closed"
    assert b.allow("pk_b")


def test_ejections_are_forgotten_after_staying_closed_for_max_cooldown() -> None:
    clock = FakeClock()
    b = Breaker(clock, base_cooldown_s=30.0, max_cooldown_s=300.0)
    for healthy_for, expected in [(299.0, 60.0), (300.0, 30.0)]:
        fail(b, 5, key := f"pk_{healthy_for}")
        clock.advance(30.0)
        assert b.allow(key)
        b.record_success(key)
        clock.advance(healthy_for)
        fail(b, 5, key)
        assert b.open_until(key) - clock.monotonic() == expected


def test_snapshot_shows_each_circuit() -> None:
    clock = FakeClock()
    b = Breaker(clock)
    fail(b, 5, "pk_a")
    fail(b, 2, "pk_b")
    snap = b.snapshot()
    assert snap["pk_a"] == {
        "state": "open",
        "consecutive_failures": 5,
        "ejections": 1,
        "open_until": clock.monotonic() + 30.0,
    }
    assert snap["pk_b"] == {"state": "closed", "consecutive_failures": 2, "ejections": 0, "open_until": None}
    b.record_success("pk_b")
    assert "pk_b" not in b.snapshot()  # a clean circuit is not kept


@pytest.mark.parametrize(
    "kwargs",
    [{"failure_threshold": 0}, {"base_cooldown_s": 0.0}, {"base_cooldown_s": 60.0, "max_cooldown_s": 30.0}],
)
def test_rejects_nonsense_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Breaker(FakeClock(), **kwargs)


class _Model:
    """The breaker as the brief states it, one dict per key, written without looking at breaker.py."""

    def __init__(self, clock: FakeClock, threshold: int, base: float, cap: float) -> None:
        self.clock, self.threshold, self.base, self.cap = clock, threshold, base, cap
        self.keys: dict[str, dict] = {}

    def _k(self, key: str) -> dict:
        return self.keys.setdefault(
            key, {"fails": 0, "ejections": 0, "until": None, "probing": False, "closed_at": 0.0}
        )

    def state(self, key: str) -> str:
        k = self._k(key)
        if k["until"] is None:
            return "closed"
        return "open" if self.clock.monotonic() < k["until"] else "half_open"

    def ejections(self, key: str) -> int:
        k = self._k(key)
        forgiven = self.state(key) == "closed" and self.clock.monotonic() - k["closed_at"] >= self.cap
        return 0 if forgiven else k["ejections"]

    def allow(self, key: str) -> bool:
        k, s = self._k(key), self.state(key)
        if s == "closed":
            return True
        if s == "open" or k["probing"]:
            return False
        k["probing"] = True
        return True

    def success(self, key: str) -> None:
        k, s = self._k(key), self.state(key)
        if s == "closed":
            k["fails"] = 0
        elif s == "half_open":
            k.update(fails=0, until=None, probing=False, closed_at=self.clock.monotonic())

    def failure(self, key: str) -> None:
        k, s = self._k(key), self.state(key)
        k["ejections"] = self.ejections(key)
        k["fails"] += 1
        if s == "half_open" or (s == "closed" and k["fails"] >= self.threshold):
            k["ejections"] += 1
            k["until"] = self.clock.monotonic() + min(self.base * k["ejections"], self.cap)
            k["probing"] = False

    def release(self, key: str) -> None:
        if self.state(key) == "half_open":
            self._k(key)["probing"] = False

    def snapshot(self) -> dict[str, dict]:
        out = {}
        for key, k in self.keys.items():
            s, ej = self.state(key), self.ejections(key)
            if s == "closed" and k["fails"] == 0 and ej == 0:
                continue
            out[key] = {
                "state": s,
                "consecutive_failures": k["fails"],
                "ejections": ej,
                "open_until": k["until"] if s == "open" else None,
            }
        return out


_KEYS = st.sampled_from(["pk_a", "pk_b"])


class BreakerVsModel(RuleBasedStateMachine):
    """Random interleavings of calls and clock moves; the breaker must agree with the model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        # Small numbers so short runs reach the cap and the forgetting of ejections.
        self.breaker = Breaker(self.clock, failure_threshold=3, base_cooldown_s=10.0, max_cooldown_s=40.0)
        self.model = _Model(self.clock, threshold=3, base=10.0, cap=40.0)
        self.outstanding_probes = {"pk_a": 0, "pk_b": 0}

    @rule(key=_KEYS)
    def allow(self, key: str) -> None:
        half_open = self.model.state(key) == "half_open"
        got = self.breaker.allow(key)
        assert got == self.model.allow(key)
        if got and half_open:
            self.outstanding_probes[key] += 1

    @rule(key=_KEYS)
    def success(self, key: str) -> None:
        self.breaker.record_success(key)
        self.model.success(key)
        self.outstanding_probes[key] = 0

    @rule(key=_KEYS)
    def failure(self, key: str) -> None:
        self.breaker.record_failure(key)
        self.model.failure(key)
        self.outstanding_probes[key] = 0

    @rule(key=_KEYS)
    def release(self, key: str) -> None:
        self.breaker.release_probe(key)
        self.model.release(key)
        self.outstanding_probes[key] = 0

    @rule(dt=st.sampled_from([0.5, 5.0, 9.99, 10.0, 20.0, 40.0]) | st.floats(0.0, 100.0))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @invariant()
    def agrees_with_model(self) -> None:
        for key in ("pk_a", "pk_b"):
            assert self.breaker.state(key) == self.model.state(key)
            assert self.breaker.open_until(key) == (
                self.model.keys.get(key, {}).get("until") if self.model.state(key) == "open" else None
            )
        assert self.breaker.snapshot() == self.model.snapshot()

    @invariant()
    def at_most_one_probe(self) -> None:
        assert all(n <= 1 for n in self.outstanding_probes.values())


TestBreakerVsModel = BreakerVsModel.TestCase
TestBreakerVsModel.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
