"""The `weighted` strategy: smooth weighted round-robin over the top priority level.

nginx's algorithm (ngx_http_upstream_get_peer): each pick adds every weight to its running
score, takes the highest score (ties: declaration order), and subtracts the total from it. Over
any run of sum(weights) picks each key is first exactly `weight` times, interleaved (5/3/2 gives
A B C A A B A C B A, not five As in a row). Weight ≤ 0 means never first. Failover within the
level goes to whoever has the highest score after the pick; other levels follow in priority order.

The same sequence, without touching every key per pick: keys of equal weight gain the same
amount every pick, so within a weight group the scores differ only by how often each key has
been picked, and that by at most one (two keys of one weight are never a whole total apart).
A group is then its score `s` (the keys not yet picked this round, from `p` on, in declaration
order) and `s - total` (those before `p`, picked once more): a pick adds each group's weight to
its `s`, takes the best group's key at `p` and moves `p` on. Per request that is one pass over
the distinct weights of the level (a handful in practice: weights are usually per provider), not
over its keys; the failover order is a lazy merge of the groups' two runs by score.
tests/services/routing/strategies/test_fast_equals_reference.py checks it against nginx's
per-key loop pick by pick.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from heapq import heapify, heappop, heapreplace

from services.routing.strategies.base import CandidateView, Order, PerList
from services.routing.strategies.priority import split_top
from services.routing.strategies.round_robin import STATE_ENTRIES, LruState


class WeightedStrategy:
    name = "weighted"

    __slots__ = ("_scores", "_levels")

    def __init__(self, capacity: int = STATE_ENTRIES) -> None:
        self._scores: LruState[_Scores] = LruState(capacity)
        self._levels: PerList[_Level] = PerList(_Level)

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView] | Order:
        lv = self._levels.get(candidates)
        if lv.groups is None:
            # No positive weight at the top (or one key): nothing to share out, declaration order.
            return lv.top + lv.rest
        # Weights are part of the key: a reloaded config with new weights starts fresh scores.
        st = self._scores.get(lv.key, lambda: _Scores(lv.key, len(lv.groups)))
        if st.key is not lv.key:  # an equal set from another list (a reloaded config): key it by
            st.key = self._scores.rekey(st.key, lv.key)  # this list's key, compared by identity from now on
        groups, weights, total = lv.groups, lv.weights, lv.total
        s = st.s = [x + w for x, w in zip(st.s, weights)]
        p = st.p
        top_score = max(s)
        best_g, best = -1, -1
        for g, x in enumerate(s):  # ties: the lowest declaration index among the best groups' heads
            if x == top_score and (best < 0 or groups[g][p[g]] < best):
                best_g, best = g, groups[g][p[g]]
        members = groups[best_g]
        nxt = p[best_g] + 1
        if nxt == len(members):  # every key of the group picked once more: a new round
            nxt = 0
            s[best_g] -= total
        p[best_g] = nxt
        # Everyone's score now, highest first: per group the keys from p on score s, those before s - total.
        runs = []
        for g, x in enumerate(s):
            m, at = groups[g], p[g]
            runs.append((-x, m[at], at, len(m), m))
            if at:
                runs.append((total - x, m[0], 0, at, m))
        heapify(runs)
        top = lv.top
        return Order((top[best],), _failover(runs, top, best, lv.dead, lv.rest))


def _failover(runs: list, top: list[CandidateView], best: int, dead: list[CandidateView],
              rest: list[CandidateView]) -> Iterator[CandidateView]:
    """The runs merged by (score descending, declaration order), without the key just picked."""
    while runs:
        neg, i, at, end, m = runs[0]
        if at + 1 < end:
            heapreplace(runs, (neg, m[at + 1], at + 1, end, m))
        else:
            heappop(runs)
        if i != best:
            yield top[i]
    yield from dead
    yield from rest


class _Scores:
    """One candidate set's smooth WRR state: per weight group its score and next key."""

    __slots__ = ("key", "s", "p")

    def __init__(self, key: _Key, groups: int) -> None:
        self.key = key
        self.s = [0.0] * groups
        self.p = [0] * groups


class _Level:
    """What a candidate list alone decides: its top level split into weight groups (positions in
    `top`, declaration order), the weights' total, the rest, and the state's key."""

    __slots__ = ("top", "rest", "dead", "groups", "weights", "total", "key")

    def __init__(self, candidates: list[CandidateView]) -> None:
        self.top, self.rest = split_top(candidates)
        live = [i for i, c in enumerate(self.top) if c.weight > 0.0]
        self.groups: list[list[int]] | None = None
        if len(self.top) < 2 or not live:
            return
        self.dead = [c for c in self.top if not c.weight > 0.0]
        by_weight: dict[float, list[int]] = {}
        total = 0.0
        for i in live:  # summed in declaration order, as nginx's loop adds them
            w = self.top[i].weight
            by_weight.setdefault(w, []).append(i)
            total += w
        self.groups = list(by_weight.values())
        self.weights = list(by_weight)
        self.total = total
        self.key = _Key(tuple((self.top[i].target.key_id, self.top[i].weight) for i in live))


class _Key:
    """The candidate set's (key id, weight) tuple with its hash kept: hashing a thousand pairs per
    request would cost what the rest of the decision does."""

    __slots__ = ("t", "h")

    def __init__(self, t: tuple) -> None:
        self.t, self.h = t, hash(t)

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and (self is other or (self.h == other.h and self.t == other.t))
