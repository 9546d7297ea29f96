"""The `least-latency` strategy: fastest observed key first (EWMA from routing/latency.py).

Keys with no sample yet go first so they get measured; otherwise a key that is never tried
could never prove it is fast. Ties fall back to priority, then declaration order. Keys that are
cooling down or behind an open breaker keep their place: the router skips them when it gets there.

Sorting a thousand candidates per request costs more than the rest of routing, and only a few
are ever read. With the router's LatencyTracker (`tracker`), each candidate list is kept sorted
(_Ranked) and brought up to date from the tracker's log of changed keys: a request pays for
the keys measured since the last one (a bisect each), not for every key. Without a tracker (the
strategy alone) the candidates' own latency_ewma_ms is sorted, as before.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Iterator

from services.routing.latency import LatencyTracker
from services.routing.strategies.base import CandidateView, Order, PerList

SMALL = 32  # up to this many candidates a plain sort is as cheap as keeping one sorted


class LeastLatencyStrategy:
    name = "least-latency"

    __slots__ = ("_ranked", "tracker")

    def __init__(self) -> None:
        self.tracker: LatencyTracker | None = None  # set by the router
        self._ranked: PerList[_Ranked] = PerList(_Ranked)

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView] | Order:
        tracker = self.tracker
        if tracker is None:
            return sorted(candidates, key=_key)  # stable: equal keys keep declaration order
        if len(candidates) <= SMALL:  # a caller's own keys: a new list per request, nothing to keep
            get = tracker.get
            return sorted(candidates, key=lambda c: _rank(get(c.target.key_id), c.priority))
        return self._ranked.get(candidates).order(tracker)


def _key(c: CandidateView) -> tuple[bool, float, int]:
    return _rank(c.latency_ewma_ms, c.priority)


def _rank(ms: float | None, priority: int) -> tuple[bool, float, int]:
    return (ms is not None, ms or 0.0, priority)


class _Ranked:
    """One candidate list in least-latency order, kept up to date incrementally.

    `unmeasured` holds (priority, index) and `measured` (ewma, priority, index), both sorted:
    the index (declaration order) makes every entry unique and breaks ties as a stable sort
    does. An Order handed out reads the lists as they were (copy on write: `shared`)."""

    __slots__ = ("_cands", "_where", "_vals", "_measured", "_unmeasured", "_tracker", "_position", "_shared")

    def __init__(self, candidates: list[CandidateView]) -> None:
        self._cands = candidates
        where: dict[str, list[int]] = {}
        for i, c in enumerate(candidates):  # a key may appear more than once (an alias's members)
            where.setdefault(c.target.key_id, []).append(i)
        self._where = where
        self._tracker: LatencyTracker | None = None
        self._vals: list[float | None] = []
        self._measured: list[tuple[float, int, int]] = []
        self._unmeasured: list[tuple[int, int]] = []
        self._position = 0
        self._shared = False

    def order(self, tracker: LatencyTracker) -> Order:
        self._sync(tracker)
        self._shared = True
        return Order((), _walk(self._cands, self._unmeasured, self._measured))

    def _rebuild(self, tracker: LatencyTracker) -> None:
        get = tracker.get
        self._tracker, self._position, self._shared = tracker, tracker.position, False
        self._vals = vals = [get(c.target.key_id) for c in self._cands]
        self._measured = sorted((v, c.priority, i) for i, (v, c) in enumerate(zip(vals, self._cands)) if v is not None)
        self._unmeasured = sorted((c.priority, i) for i, (v, c) in enumerate(zip(vals, self._cands)) if v is None)

    def _sync(self, tracker: LatencyTracker) -> None:
        changed = tracker.changed_since(self._position) if tracker is self._tracker else None
        if changed is None or len(changed) > len(self._cands) // 2:
            self._rebuild(tracker)  # first use, or so far behind that re-reading is cheaper
            return
        if not changed:
            return
        self._position = tracker.position
        where, vals, cands = self._where, self._vals, self._cands
        for key in changed:
            idxs = where.get(key)
            if idxs is None:
                continue
            new = tracker.get(key)
            for i in idxs:
                old = vals[i]
                if old == new:
                    continue
                if self._shared:  # an Order handed out still reads these lists
                    self._measured, self._unmeasured, self._shared = self._measured[:], self._unmeasured[:], False
                prio = cands[i].priority
                if old is None:
                    del self._unmeasured[bisect_left(self._unmeasured, (prio, i))]
                else:
                    del self._measured[bisect_left(self._measured, (old, prio, i))]
                if new is None:
                    insort(self._unmeasured, (prio, i))
                else:
                    insort(self._measured, (new, prio, i))
                vals[i] = new


def _walk(cands: list[CandidateView], unmeasured: list[tuple[int, int]],
          measured: list[tuple[float, int, int]]) -> Iterator[CandidateView]:
    for _, i in unmeasured:
        yield cands[i]
    for _, _, i in measured:
        yield cands[i]
