"""Smooth weighted round-robin state for one candidate set, a pick in O(log distinct weights).

nginx's loop adds every key's weight to its score, picks the highest (ties: declaration order)
and subtracts the total W from it. Two facts make it cheap:

1. Keys of one weight gain the same per pick, so their scores differ only by W × (picks
   between them), and a key is picked only while its score is the highest: their pick counts
   never differ by more than one. A weight group is then a pointer `p` into its keys (declaration
   order) and one score line: the keys from p on score A(t) = b + w·t, those before p (picked
   once more this round) A(t) − W. Picking a group's key moves p on; past the last key p wraps to
   0 and b drops by W.
2. The best group at pick t is the upper envelope of lines of distinct slopes: a kinetic
   tournament (Basch, Guibas, Hershberger, "Data Structures for Mobile Data", 1997) keeps every
   node's winner with the earliest t at which its loser could overtake it, so a pick revisits
   only nodes whose certificate ran out plus the picked group's path to the root.

Scores are b + w·t, not a running sum: with integer (or halves, quarters…) weights these are the
numbers nginx's loop computes, exactly; with weights like 0.1 nginx's own running sums round,
and exact ties between such scores mean nothing either way. t restarts every 2^20 picks (b takes
up what t held), so w·t stays small.

The failover order (everyone by score after the pick, then declaration order) is read lazily
from a snapshot: a walk down the tournament, best first, merging each group's two runs.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from heapq import heappop, heappush

INF = math.inf
RESTART = 1 << 20


class SmoothWrr:
    """State for groups[g] (positions in declaration order, ascending), weights[g] > 0, all
    distinct, total = sum of every key's weight."""

    __slots__ = ("_groups", "_total", "_n", "_w", "_b", "_p", "_h", "_win", "_exp", "_t", "_shared", "_restart_at")

    def __init__(self, groups: list[list[int]], weights: list[float], total: float, restart: int = RESTART) -> None:
        g = len(groups)
        n = 1
        while n < g:
            n *= 2
        self._groups, self._total, self._n = groups, total, n
        pad = n - g  # leaves past the last group never win
        # Arrays for what pick() writes: the copy on write below is then a memcpy, not a
        # reference count per item.
        self._w = list(weights) + [0.0] * pad  # never written: a list (no copy, no boxing on reads)
        self._b = array("d", [0.0] * g + [-INF] * pad)
        self._p = array("q", [0] * n)
        self._h = [m[0] for m in groups] + [1 << 62] * pad  # each group's next key
        self._win = array("q", [0] * n + list(range(n)))  # node i's winning group; leaves at n + g
        self._exp = [INF] * (2 * n)  # the earliest t at which something under node i may change
        self._t = 0
        self._shared = False
        self._restart_at = restart
        for i in range(n - 1, 0, -1):
            self._match(i)

    def pick(self) -> int:
        """The next key first in line (a position), as nginx's loop would pick it."""
        if self._shared:  # an Order handed out still reads these: copy on write
            self._b, self._p, self._win = self._b[:], self._p[:], self._win[:]
            self._shared = False
        self._t += 1
        if self._t >= self._restart_at:
            self._restart()
        if self._exp[1] <= self._t:
            self._settle(1)
        g = self._win[1]
        m = self._groups[g]
        best = m[self._p[g]]
        nxt = self._p[g] + 1
        if nxt == len(m):
            nxt = 0
            self._b[g] -= self._total
        self._p[g] = nxt
        self._h[g] = m[nxt]
        win, b, w, h, exp, t = self._win, self._b, self._w, self._h, self._exp, self._t
        i = (self._n + g) >> 1
        while i:  # the picked group's path to the root
            _match(i, win, b, w, h, exp, t)
            i >>= 1
        return best

    def after(self, best: int) -> Iterator[int]:
        """Every key but `best` by score now (highest first, ties in declaration order), read
        lazily; what later picks change is not seen."""
        self._shared = True
        return _walk(self._groups, self._total, self._n, self._w, self._b, self._p, self._win, self._t, best)

    def _match(self, i: int) -> None:
        _match(i, self._win, self._b, self._w, self._h, self._exp, self._t)

    def _settle(self, i: int) -> None:
        exp, t = self._exp, self._t
        if i < self._n:
            if exp[2 * i] <= t:
                self._settle(2 * i)
            if exp[2 * i + 1] <= t:
                self._settle(2 * i + 1)
            self._match(i)

    def _restart(self) -> None:
        t, w, b = self._t, self._w, self._b
        for g in range(len(self._groups)):
            b[g] += w[g] * t
        self._t = 0
        for i in range(self._n - 1, 0, -1):
            self._match(i)


def _match(i: int, win: array, b: array, w: list[float], h: list[int], exp: list[float], t: int) -> None:
    """Node i's winner between its children's at t, and when the loser could overtake it."""
    left = 2 * i
    x, y = win[left], win[left + 1]
    wx, wy = w[x], w[y]
    sx, sy = b[x] + wx * t, b[y] + wy * t
    if sy > sx or (sy == sx and h[y] < h[x]):
        x, y, sx, sy, wx, wy = y, x, sy, sx, wy, wx
    win[i] = x
    e, e2 = exp[left], exp[left + 1]
    if e2 < e:
        e = e2
    if wy > wx:  # the loser gains faster: the lines meet gap / (w_y − w_x) picks from now
        cert = t + int((sx - sy) / (wy - wx))  # ≥ 0, so int() is floor: never later than the meeting
        if cert <= t:
            cert = t + 1
        if cert < e:
            e = cert
    exp[i] = e


def _walk(groups: list[list[int]], total: float, n: int, w: list[float], b: array, p: array, win: array, t: int,
          best: int) -> Iterator[int]:
    # Heap entries (−score, position, group, start, end): a run groups[g][start:end] of equal
    # scores, or start = −1 for tournament node `end`'s winner. Positions are unique, so ties
    # between equal scores fall to declaration order and nothing after them is ever compared.
    ng = len(groups)
    g = win[1]
    heap = [(-(b[g] + w[g] * t), groups[g][p[g]], g, -1, 1)]
    while heap:
        neg, pos, g, start, end = heappop(heap)
        m = groups[g]
        if start < 0:  # a node's winner: its run from p on, the run before p, the rest of the node
            at = p[g]
            if at + 1 < len(m):
                heappush(heap, (neg, m[at + 1], g, at + 1, len(m)))
            if at:
                heappush(heap, (neg + total, m[0], g, 0, at))
            leaf = n + g
            for k in range(leaf.bit_length() - end.bit_length() - 1, -1, -1):
                other = (leaf >> k) ^ 1
                o = win[other]
                if o < ng:
                    heappush(heap, (-(b[o] + w[o] * t), groups[o][p[o]], o, -1, other))
        elif start + 1 < end:
            heappush(heap, (neg, m[start + 1], g, start + 1, end))
        if pos != best:
            yield pos
