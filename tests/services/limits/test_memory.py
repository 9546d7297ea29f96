"""MemoryLimiter on a fake clock: exact window edges, Retry-After, pruning, and a model (RELIABILITY C1, E4)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from services.clock import FakeClock
from services.limits.base import Rule
from services.limits.memory import MemoryLimiter

T = TypeVar("T")
RPM = (Rule("rpm", 60, 60.0),)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a MemoryLimiter coroutine to its end; it must never really wait (atomic on the loop)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("MemoryLimiter awaited something: its decisions would not be atomic")


def admitted(limiter: MemoryLimiter, n: int, rules: tuple[Rule, ...] = RPM, subject: str = "k") -> int:
    return sum(run(limiter.hit(subject, rules)).allowed for _ in range(n))


def test_c1_60_at_59_9_s_and_60_at_60_1_s_admit_at_most_one_more() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    clock.advance(59.9)
    assert admitted(limiter, 60) == 60
    clock.advance(0.2)  # 60.1 s: a fixed minute would have reset here; a sliding one has not
    assert admitted(limiter, 60) <= 1
    clock.advance(59.8)  # 119.9 s: 60 s after the first burst, it has left the window
    assert admitted(limiter, 60) == 60


def test_an_entry_leaves_the_window_exactly_window_s_later() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    rule = (Rule("rpm", 1, 10.0),)
    assert admitted(limiter, 1, rule) == 1
    clock.advance(9.999)
    assert admitted(limiter, 1, rule) == 0
    clock.advance(0.001)
    assert admitted(limiter, 1, rule) == 1


def test_retry_after_is_when_the_oldest_needed_slot_frees() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    rule = (Rule("rpm", 3, 60.0),)
    for _ in range(3):
        assert run(limiter.hit("k", rule)).allowed
        clock.advance(10.0)
    clock.advance(-5.0)  # t = 25: hits at 0, 10, 20
    d = run(limiter.hit("k", rule))
    assert not d.allowed
    assert d.retry_after_s == 35.0
    assert d.reset_at == clock.now() + 35.0
    clock.advance(35.0)
    assert run(limiter.hit("k", rule)).allowed


def test_idle_subjects_are_pruned_so_memory_follows_activity() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    day = Rule("rpd", 5, period="day")
    for i in range(1000):
        run(limiter.hit(f"idle-{i}", (RPM[0], day)))
    assert run(limiter.snapshot())["windows"] == 1000
    assert run(limiter.snapshot())["counters"] == 1000
    clock.advance(2 * 86400)  # the windows are empty and the day is over
    for _ in range(600):
        run(limiter.hit("busy", RPM))
    snap = run(limiter.snapshot())
    assert snap["windows"] == 1 and snap["counters"] == 0
    assert list(snap["subjects"]) == ["busy"]


def test_reservations_and_their_tombstones_do_not_outlive_two_leases() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock, lease_s=10.0)
    tpd = (Rule("tpd", 100, period="day"),)
    held = [run(limiter.reserve(f"u{i}", tpd, 10))[1] for i in range(5)]
    assert all(r is not None and limiter.owns(r) for r in held)
    clock.advance(10.0)
    assert run(limiter.reap()) == 5
    assert run(limiter.snapshot())["reservations"] == 0
    assert all(limiter.owns(r) for r in held if r)  # still known: a late settle charges once
    clock.advance(10.0)
    run(limiter.reap())
    assert not any(limiter.owns(r) for r in held if r)


def test_a_token_entry_that_left_its_window_is_not_recounted_by_settle() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock, lease_s=600.0)
    tpm = (Rule("tpm", 1000, 60.0),)
    _, r = run(limiter.reserve("u", tpm, 800))
    assert r is not None
    clock.advance(61.0)  # a long stream: its estimate was counted while it was in the window
    run(limiter.settle(r, 5000))
    assert run(limiter.peek("u", tpm)).used == 0


# -- against a model (RELIABILITY E4) ----------------------------------------------------------

steps = st.lists(
    st.tuples(st.sampled_from([0.0, 0.001, 0.5, 1.0, 2.5, 7.0, 9.999, 10.0, 13.0]), st.integers(1, 4)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 6), plan=steps)
def test_sliding_window_matches_a_reference_model_and_never_over_admits(
    limit: int, plan: list[tuple[float, int]]
) -> None:
    window = 10.0
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    rule = (Rule("w", limit, window),)
    model: list[float] = []  # admitted times
    for dt, n in plan:
        clock.advance(dt)
        for _ in range(n):
            t = clock.monotonic()
            expect = sum(1 for a in model if a > t - window) < limit
            d = run(limiter.hit("k", rule))
            assert d.allowed == expect
            if expect:
                model.append(t)
            else:
                # Retry-After is when the slot this request needs frees, no earlier and no later.
                live = sorted(a for a in model if a > t - window)
                assert d.retry_after_s == live[len(live) - limit] + window - t
                assert 0 < d.retry_after_s <= window
    for a in model:  # any window of window_s holds at most `limit` admissions
        assert sum(1 for b in model if a <= b < a + window) <= limit


@settings(max_examples=200, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(["reserve", "settle", "release", "tick"]), st.integers(0, 400)),
        max_size=80,
    )
)
def test_reservations_never_over_admit_and_end_as_the_sum_of_what_was_settled(
    plan: list[tuple[str, int]]
) -> None:
    clock = FakeClock(1_700_006_400.0)  # a UTC midnight: the ticks stay within one day
    limiter = MemoryLimiter(clock, lease_s=1e9)
    rule = Rule("tpd", 1000, period="day")
    open_: list[Any] = []
    settled_total = 0
    for op, n in plan:
        if op == "reserve":
            before = run(limiter.peek("u", (rule,))).used
            d, r = run(limiter.reserve("u", (rule,), n))
            assert (r is not None) == (before + n <= 1000) == d.allowed
            if r is not None:
                open_.append(r)
        elif op in ("settle", "release") and open_:
            r = open_.pop(n % len(open_))
            actual = n if op == "settle" else 0
            run(limiter.settle(r, actual) if op == "settle" else limiter.release(r))
            settled_total += actual
        elif op == "tick":
            clock.advance(n)
        held = sum(r.amount for r in open_)
        assert run(limiter.peek("u", (rule,))).used == settled_total + held
    for r in open_:
        run(limiter.release(r))
    assert run(limiter.peek("u", (rule,))).used == settled_total


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.floats(0, 30), st.integers(0, 60)), max_size=40))
def test_admit_now_is_hit_then_reserve(steps: list[tuple[int, int, float, int]]) -> None:
    """The fused call quotas.py makes gives the same decisions, holds and later state as its two parts."""
    req = (Rule("rpm", 5, 60.0), Rule("rpd", 8, period="day"))
    tok = (Rule("tpd", 100, period="day"),)
    fused_clock, split_clock = FakeClock(), FakeClock()
    fused, split = MemoryLimiter(fused_clock), MemoryLimiter(split_clock)
    held: list[tuple[Any, Any]] = []
    for subject, amount, wait, used in steps:
        fused_clock.advance(wait)
        split_clock.advance(wait)
        d1, t1, r1 = fused.admit_now(f"k{subject}", req, tok, amount)
        d2 = run(split.hit(f"k{subject}", req))
        t2, r2 = run(split.reserve(f"k{subject}", tok, amount)) if d2.allowed else (None, None)
        assert (d1, t1) == (d2, t2)
        assert (r1 is None) == (r2 is None)
        if r1 is not None and r2 is not None:
            assert (r1.amount, r1.period_ids) == (r2.amount, r2.period_ids)
            held.append((r1, r2))
        if held and used % 3 == 0:  # settle the oldest: finish_now is settle / release
            a, b = held.pop(0)
            fused.finish_now(a, used)
            run(split.settle(b, used) if used > 0 else split.release(b))
    # Sweeping runs once per call, so the fused limiter may still list an idle (empty) entry the
    # other has already dropped: an empty entry counts nothing, so compare what is counted.
    def counted(limiter: MemoryLimiter) -> dict[str, dict[str, Any]]:
        return {s: {k: v for k, v in rules.items() if v["used"] or v.get("held")}
                for s, rules in run(limiter.snapshot())["subjects"].items()}

    assert {s: r for s, r in counted(fused).items() if r} == {s: r for s, r in counted(split).items() if r}


RULE_SETS = [
    ((Rule("rpm", 5, 60.0), Rule("rpd", 8, period="day")), (Rule("tpd", 100, period="day"),)),
    ((Rule("rpm", 3, 60.0),), (Rule("tpd", 90, period="day"), Rule("tpm_month", 200, period="month"))),
    ((Rule("rpm", 0, 60.0), Rule("rpd_ny", 4, period="day", tz="America/New_York")), (Rule("tpm", 50, 30.0),)),
    ((), (Rule("tpd", 0, period="day"),)),
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 40),
                          st.sampled_from([0.0, 0.5, 20.0, 61.0, 130.0, 9_000.0, 50_000.0]), st.integers(0, 60)),
                max_size=50))
def test_admit_now_through_a_plan_across_periods_sweeps_and_leases(steps: list[tuple[int, int, int, float, int]]) -> None:
    """admit_now() keeps each subject's targets between calls (a plan per rule pair): the same
    decisions, holds and state as hit + reserve when days and months turn, windows empty and are
    swept, leases run out, and one subject alternates rule pairs (a user's tokens)."""
    fused_clock, split_clock = FakeClock(), FakeClock()
    fused, split = MemoryLimiter(fused_clock), MemoryLimiter(split_clock)
    held: list[tuple[Any, Any]] = []
    for subject, which, amount, wait, used in steps:
        fused_clock.advance(wait)
        split_clock.advance(wait)
        req, tok = RULE_SETS[which]
        d1, t1, r1 = fused.admit_now(f"k{subject}", req, tok, amount)
        d2 = run(split.hit(f"k{subject}", req)) if req else None
        t2, r2 = run(split.reserve(f"k{subject}", tok, amount)) if d2 is None or d2.allowed else (None, None)
        assert (d1, t1) == (d2, t2)
        assert (r1 is None) == (r2 is None)
        if r1 is not None and r2 is not None:
            assert (r1.amount, r1.period_ids, r1.rules) == (r2.amount, r2.period_ids, r2.rules)
            held.append((r1, r2))
        if held and used % 3 == 0:
            a, b = held.pop(0)
            fused.finish_now(a, used)
            run(split.settle(b, used) if used > 0 else split.release(b))
        assert run(fused.reap()) == run(split.reap())

    # The fused call sweeps once where hit + reserve sweep twice, so either may still list a
    # period that has ended (counting nothing now) or an empty entry: compare what counts now.
    def counted(limiter: MemoryLimiter, clock: FakeClock) -> dict[str, dict[str, Any]]:
        return {s: {k: v for k, v in rules.items()
                    if (v["used"] or v.get("held")) and v.get("reset_at", float("inf")) > clock.now()}
                for s, rules in run(limiter.snapshot())["subjects"].items()}

    assert {s: r for s, r in counted(fused, fused_clock).items() if r} == \
        {s: r for s, r in counted(split, split_clock).items() if r}
