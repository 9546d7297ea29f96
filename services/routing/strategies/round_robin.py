"""The `round-robin` strategy, and the bounded per-candidate-set state it shares with `weighted`.

Rotates the first try among the top priority level; the other levels follow in priority order
for failover. A rotation position is kept per distinct top level (the tuple of its key ids),
because which keys are candidates changes with the model and the caller.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar


from services.routing.strategies.base import CandidateView, Order, PerList
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

    def rekey(self, old: Hashable, new: Hashable) -> Hashable:
        """Store old's value under the equal key object `new` (returned)."""
        self._entries[new] = self._entries.pop(old)
        return new

    def __len__(self) -> int:
        return len(self._entries)


def _split(candidates: list[CandidateView]) -> tuple[list[CandidateView], list[CandidateView], tuple[str, ...]]:
    top, rest = split_top(candidates)
    return top, rest, tuple(c.target.key_id for c in top)


class RoundRobinStrategy:
    name = "round-robin"

    __slots__ = ("_counters", "_split")

    def __init__(self, capacity: int = STATE_ENTRIES) -> None:
        self._counters: LruState[list[int]] = LruState(capacity)
        self._split: PerList[tuple[list[CandidateView], list[CandidateView], tuple[str, ...]]] = PerList(_split)

    def order(self, candidates: list[CandidateView], rng: random.Random) -> Order:
        top, rest, ids = self._split.get(candidates)
        if len(top) < 2:
            return Order(top + rest)
        # A new set starts at a random position, so replicas (and a set that was evicted and
        # comes back) do not all send their first request to the same key.
        counter = self._counters.get(ids, lambda: [rng.randrange(len(top))])
        i = counter[0] % len(top)
        counter[0] = i + 1
        return Order((), _rotated(top, i, rest))


def _rotated(top: list[CandidateView], i: int, rest: list[CandidateView]) -> Iterator[CandidateView]:
    """top[i:] + top[:i] + rest, one at a time."""
    for j in range(i, len(top)):
        yield top[j]
    for j in range(i):
        yield top[j]
    yield from rest
