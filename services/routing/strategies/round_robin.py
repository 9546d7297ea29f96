"""The `round-robin` strategy, and the bounded per-candidate-set state it shares with `weighted`.

Rotates the first try among the top priority level; the other levels follow in priority order
for failover. A rotation position is kept per distinct top level (the tuple of its key ids),
because which keys are candidates changes with the model and the caller.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from services.routing.strategies.base import CandidateView
from services.routing.strategies.priority import split_top

T = TypeVar("T")

STATE_ENTRIES = 1024  # distinct candidate sets remembered per strategy instance


class LruState(Generic[T]):
    """A dict of per-candidate-set state, least recently used entry evicted past `capacity`.

    Bounded because candidate sets include users' own keys, which come and go at run time.
    """

    __slots__ = ("_entries", "_capacity")

    def __init__(self, capacity: int = STATE_ENTRIES) -> None:
        self._entries: OrderedDict[Hashable, T] = OrderedDict()
        self._capacity = capacity

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        value = self._entries.get(key)
        if value is None:
            value = self._entries[key] = make()
            if len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return value

    def __len__(self) -> int:
        return len(self._entries)


class RoundRobinStrategy:
    name = "round-robin"

    __slots__ = ("_counters",)

    def __init__(self, capacity: int = STATE_ENTRIES) -> None:
        self._counters: LruState[list[int]] = LruState(capacity)

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView]:
        top, rest = split_top(candidates)
        if len(top) < 2:
            return top + rest
        ids = tuple(c.target.key_id for c in top)
        # A new set starts at a random position, so replicas (and a set that was evicted and
        # comes back) do not all send their first request to the same key.
        counter = self._counters.get(ids, lambda: [rng.randrange(len(top))])
        i = counter[0] % len(top)
        counter[0] = i + 1
        return top[i:] + top[:i] + rest
