"""The `weighted` strategy: smooth weighted round-robin over the top priority level.

nginx's algorithm (ngx_http_upstream_get_peer): each pick adds every weight to its running
score, takes the highest score (ties: declaration order), and subtracts the total from it. Over
any run of sum(weights) picks each key is first exactly `weight` times, interleaved (5/3/2 gives
A B C A A B A C B A, not five As in a row). Weight ≤ 0 means never first. Failover within the
level goes to whoever has the highest score after the pick; other levels follow in priority order.

The same sequence without touching every key per pick: swrr.py keeps a candidate set's state
per weight group, in a kinetic tournament over the groups (O(log distinct weights) per pick),
and reads the failover order lazily. tests/services/routing/strategies/test_fast_equals_reference.py
checks it against nginx's per-key loop, order for order.
"""

from __future__ import annotations

import random
from itertools import chain

from services.routing.strategies.base import CandidateView, Order, PerList
from services.routing.strategies.priority import split_top
from services.routing.strategies.round_robin import STATE_ENTRIES, LruState, SetKey
from services.routing.strategies.swrr import SmoothWrr


class WeightedStrategy:
    name = "weighted"

    __slots__ = ("_state", "_levels")

    def __init__(self, capacity: int = STATE_ENTRIES) -> None:
        # Per candidate set (key ids and weights): a reloaded config with new weights starts
        # fresh scores; the same set from another list goes on.
        self._state: LruState[SmoothWrr] = LruState(capacity)
        self._levels: PerList[_Level] = PerList(_Level)

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView] | Order:
        lv = self._levels.get(candidates)
        if lv.groups is None:
            # No positive weight at the top (or one key): nothing to share out, declaration order.
            return lv.top + lv.rest
        wrr = self._state.get(lv.key, lambda: SmoothWrr(lv.groups, lv.weights, lv.total))
        best = wrr.pick()
        live = lv.live
        return Order((live[best],), chain((live[i] for i in wrr.after(best)), lv.dead, lv.rest))


class _Level:
    """What a candidate list alone decides: its top level's live keys split into weight groups
    (positions in `live`, declaration order), the weights' total, the rest, and the state's key.
    Positions count live keys only: two lists with the same live keys share one state even when
    their dead (weight <= 0) keys sit elsewhere, so a position must mean the same key in both."""

    __slots__ = ("top", "rest", "dead", "live", "groups", "weights", "total", "key")

    def __init__(self, candidates: list[CandidateView]) -> None:
        self.top, self.rest = split_top(candidates)
        live = [i for i, c in enumerate(self.top) if c.weight > 0.0]
        self.groups: list[list[int]] | None = None
        if len(self.top) < 2 or not live:
            return
        self.dead = [c for c in self.top if not c.weight > 0.0]
        by_weight: dict[float, list[int]] = {}
        total = 0.0
        self.live = [self.top[i] for i in live]
        for j, c in enumerate(self.live):  # summed in declaration order, as nginx's loop adds them
            w = c.weight
            by_weight.setdefault(w, []).append(j)
            total += w
        self.groups = list(by_weight.values())
        self.weights = list(by_weight)
        self.total = total
        self.key = SetKey(tuple((c.target.key_id, c.weight) for c in self.live))
