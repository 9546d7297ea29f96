"""MemoryLimiter's state objects: a sliding window's entries, a calendar counter, what a
reservation holds, and admit_now()'s cached plan per subject (memory.py holds the logic)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from services.limits.base import Reservation, Rule


class Entry:
    __slots__ = ("ts", "amount", "live")

    def __init__(self, ts: float, amount: int) -> None:
        self.ts = ts  # monotonic seconds
        self.amount = amount
        self.live = True  # False once pruned: a late settle must not touch the sum


class Window:
    """One sliding window: entries newer than window_s, oldest first."""

    __slots__ = ("window_s", "entries", "total", "gone")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.entries: deque[Entry] = deque()
        self.total = 0
        self.gone = False  # swept out of the table: a plan holding it must look it up again

    def prune(self, mono: float) -> None:
        # An entry counts while now - ts < window_s; at exactly window_s it has left (Redis agrees:
        # ZREMRANGEBYSCORE -inf now-window is inclusive).
        cutoff = mono - self.window_s
        while self.entries and self.entries[0].ts <= cutoff:
            e = self.entries.popleft()
            self.total -= e.amount
            e.live = False

    def free_at(self, limit: int, amount: int, mono: float) -> float:
        """Monotonic time when `amount` more would fit; O(window size)."""
        if amount > limit:
            return mono + self.window_s  # never fits; as Redis says: a window from now
        excess = self.total + amount - limit
        if excess <= 0:
            return mono
        freed = 0
        for e in self.entries:
            freed += e.amount
            if freed >= excess:
                return e.ts + self.window_s
        return mono + self.window_s


class Counter:
    """One calendar period's count: used (settled) plus held (reserved, not yet settled)."""

    __slots__ = ("used", "held", "ends_at")

    def __init__(self, ends_at: float) -> None:
        self.used = 0
        self.held = 0
        self.ends_at = ends_at  # epoch seconds: the period's reset


@dataclass(slots=True)
class Held:
    reservation: Reservation
    expires: float  # monotonic lease end
    counters: list[Counter] = field(default_factory=list)
    entries: list[tuple[Window, Entry]] = field(default_factory=list)


class Plan:
    """admit_now()'s targets for one subject and rule pair, valid in [since, until) (while every one
    of its calendar periods holds) and while none of its windows has been swept: (rule, target, is_window)
    per limited rule, and the token rules' period ids for their reservations."""

    __slots__ = ("rules", "token_rules", "since", "until", "req", "tok", "tok_pids")

    def __init__(self, rules: tuple[Rule, ...], token_rules: tuple[Rule, ...], since: float, until: float,
                 req: tuple, tok: tuple, tok_pids: tuple[str, ...]) -> None:
        self.rules = rules  # held, so the ids in the plan's key stay theirs
        self.token_rules = token_rules
        self.since = since
        self.until = until
        self.req = req
        self.tok = tok
        self.tok_pids = tok_pids
