"""The fast least-latency and weighted strategies against the simple ones they replaced
(reference.py): the same order, candidate for candidate, on random candidate sets and random
histories of latency samples and requests."""

from __future__ import annotations

import random
from collections import Counter
from itertools import islice

from hypothesis import given, settings
from hypothesis import strategies as st

from services.routing.latency import LatencyTracker
from services.routing.strategies.base import SPARSE_DRAWS, CandidateView, shuffled
from services.routing.strategies.least_latency import SMALL, LeastLatencyStrategy
from services.routing.strategies.swrr import SmoothWrr
from services.routing.strategies.weighted import WeightedStrategy
from tests.services.routing.strategies.cands import cand, ids
from tests.services.routing.strategies.reference import ReferenceLeastLatency, ReferenceWeighted, reference_shuffled

# Weights whose sums and differences are exact in binary floating point, as integer weights
# (the usual kind) are: then nginx's running float scores and the grouped ones are the same numbers.
_WEIGHTS = [0.0, -1.0, 0.25, 0.5, 1.0, 1.0, 2.0, 3.0, 5.0, 7.5]


def _cands(rng: random.Random, n: int, n_keys: int, levels: int, weights: list[float]) -> list[CandidateView]:
    # Key ids drawn from a pool, so some repeat (an alias lists a key once per member model).
    return [cand(f"k{rng.randrange(n_keys)}", priority=rng.randrange(levels), weight=rng.choice(weights))
            for _ in range(n)]


# ---------------------------------------------------------------- least-latency


def _reference_order(cs: list[CandidateView], tracker: LatencyTracker) -> list[str]:
    """What the router did before: fill every candidate's EWMA from the tracker, then sort."""
    for c in cs:
        c.latency_ewma_ms = tracker.get(c.target.key_id)
    return ids(ReferenceLeastLatency().order(cs, random.Random(0)))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.sampled_from([2, 5, SMALL, SMALL + 1, 60, 200]),
       levels=st.integers(1, 4), steps=st.integers(1, 60), log_max=st.sampled_from([4, 64, 4096]))
def test_least_latency_equals_sorting_every_key(seed: int, n: int, levels: int, steps: int, log_max: int) -> None:
    rng = random.Random(seed)
    n_keys = max(1, n * 3 // 4)
    lists = [_cands(rng, n, n_keys, levels, [1.0]), _cands(rng, max(2, n // 2), n_keys, levels, [1.0])]
    tracker = LatencyTracker(log_max=log_max)
    fast = LeastLatencyStrategy()
    fast.tracker = tracker
    pending = []  # orders handed out and not read yet: they must keep the order of their time
    for _ in range(steps):
        op = rng.random()
        if op < 0.45:
            # Coarse latencies so that ties (equal EWMAs) happen; sometimes a key outside every list.
            key = f"k{rng.randrange(n_keys + 2)}"
            tracker.observe(key, float(rng.choice([10, 20, 20, 50, 300])) if rng.random() < 0.7 else rng.uniform(0, 900))
        else:
            cs = rng.choice(lists)
            pending.append((fast.order(cs, rng), _reference_order(cs, tracker)))
            if rng.random() < 0.5:
                out, want = pending.pop(rng.randrange(len(pending)))
                assert ids(out) == want
    for out, want in pending:
        assert ids(out) == want


def test_least_latency_unmeasured_first_then_fastest_with_a_tracker() -> None:
    tracker = LatencyTracker()
    s = LeastLatencyStrategy()
    s.tracker = tracker
    cs = [cand(f"k{i}", priority=i % 3) for i in range(100)]
    assert ids(s.order(cs, random.Random(1))[:3]) == ["k0", "k3", "k6"]  # all new: priority, then declaration
    for i in range(100):
        tracker.observe(f"k{i}", 500.0 - i)
    tracker.observe("k42", 1.0)  # 458 + 0.3 × (1 − 458) = 320.9: now the fastest (k99 is 401)
    out = ids(s.order(cs, random.Random(1)))
    assert out[:3] == ["k42", "k99", "k98"]
    assert sorted(out) == sorted(ids(cs))


# ---------------------------------------------------------------- weighted


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.sampled_from([1, 2, 3, 8, 30, 120]), levels=st.integers(1, 3),
       distinct=st.integers(1, len(_WEIGHTS)), requests=st.integers(1, 80), capacity=st.sampled_from([1, 2, 1024]))
def test_weighted_equals_nginx_per_key_loop(seed: int, n: int, levels: int, distinct: int, requests: int,
                                            capacity: int) -> None:
    rng = random.Random(seed)
    weights = rng.sample(_WEIGHTS, distinct)
    base = _cands(rng, n, n * 2, levels, weights)
    # Three lists: one, an equal copy (the same set from another list object, as after a reload:
    # it must share the state) and another set; with capacity 1 or 2 the state is evicted too.
    lists = [base, list(base), _cands(rng, n, n * 2, levels, weights)]
    fast, ref = WeightedStrategy(capacity), ReferenceWeighted(capacity)
    pending = []  # orders read after later picks (a request failing over while others start)
    for _ in range(requests):
        cs = rng.choice(lists)
        pending.append((fast.order(cs, rng), ids(ref.order(cs, rng))))
        if rng.random() < 0.5:
            out, want = pending.pop(rng.randrange(len(pending)))
            assert ids(out) == want
    for out, want in pending:
        assert ids(out) == want


def test_weighted_long_run_against_nginx_on_a_thousand_keys() -> None:
    rng = random.Random(5)
    cs = [cand(f"p{i // 10}-k{i % 10}", weight=float(1 + (i // 10) % 5)) for i in range(1000)]
    fast, ref = WeightedStrategy(), ReferenceWeighted()
    firsts = Counter()
    for _ in range(3000):  # one whole period (sum of weights = 3,000): every key first `weight` times
        out = fast.order(cs, rng)
        want = ref.order(cs, rng)
        assert ids(out[:8]) == ids(want[:8])
        firsts[out[0].target.key_id] += 1
    assert all(firsts[c.target.key_id] == c.weight for c in cs)
    assert ids(fast.order(cs, rng)) == ids(ref.order(cs, rng))  # and the whole order, once


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(2, 150), distinct=st.integers(2, 60),
       requests=st.integers(1, 400))
def test_weighted_many_distinct_weights(seed: int, n: int, distinct: int, requests: int) -> None:
    # Up to 60 weight groups: a deep tournament whose winners change under it as the lines cross.
    rng = random.Random(seed)
    weights = [float(w) for w in rng.sample(range(1, 200), distinct)] + [0.5, 0.25]
    cs = _cands(rng, n, n, 1, weights)
    fast, ref = WeightedStrategy(), ReferenceWeighted()
    for _ in range(requests):
        out, want = fast.order(cs, rng), ref.order(cs, rng)
        assert ids(out[:3]) == ids(want[:3])
    assert ids(out) == ids(want)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), distinct=st.integers(1, 12), restart=st.integers(1, 9),
       picks=st.integers(1, 200))
def test_smooth_wrr_restarting_its_clock_changes_nothing(seed: int, distinct: int, restart: int, picks: int) -> None:
    # SmoothWrr restarts t every 2^20 picks; here every few, against nginx's loop on the same keys.
    rng = random.Random(seed)
    weights = [float(w) for w in rng.sample(range(1, 30), distinct)]
    keyed = [rng.choice(weights) for _ in range(rng.randint(distinct, 3 * distinct))]
    cs = [cand(f"k{i}", weight=w) for i, w in enumerate(keyed)]
    groups: dict[float, list[int]] = {}
    for i, w in enumerate(keyed):
        groups.setdefault(w, []).append(i)
    wrr = SmoothWrr(list(groups.values()), list(groups), sum(keyed), restart=restart)
    ref = ReferenceWeighted()
    for _ in range(picks):
        want = ids(ref.order(cs, rng))
        best = wrr.pick()
        assert [f"k{i}" for i in [best, *wrr.after(best)]] == want


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.sampled_from([0, 1, 2, 3, SPARSE_DRAWS, SPARSE_DRAWS + 1, SPARSE_DRAWS + 2, 40, 300]),
       skip=st.integers(-1, 299), read=st.integers(0, 320))
def test_shuffled_draws_the_same_order_as_a_shuffled_copy(seed: int, n: int, skip: int, read: int) -> None:
    # priority and balanced read a level's shuffle lazily; the sparse start must not change it.
    cs = [cand(f"k{i}") for i in range(n)]
    skip = skip if skip < n else -1
    a, b = random.Random(seed), random.Random(seed)
    got = list(islice(shuffled(cs, a, skip), read))
    assert ids(got) == ids(list(islice(reference_shuffled(cs, b, skip), read)))
    assert a.getstate() == b.getstate()  # the same draws, so what follows from the rng is the same too
    if read >= n:
        assert sorted(ids(got)) == sorted(ids(cs)) and (skip < 0 or got[0] is cs[skip])
