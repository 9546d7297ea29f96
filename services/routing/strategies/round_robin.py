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
    Each entry remembers the key object it was stored under: an equal key that is another object
    (a SetKey from a reloaded config's list) takes its place, so the next lookups with that object
    match by identity instead of comparing a thousand key ids.
    """

    __slots__ = ("_entries", "_capacity")

    def __init__(self, capacity: int = STATE_ENTRIES) -> None:
        self._entries: OrderedDict[Hashable, tuple[Hashable, T]] = OrderedDict()
        self._capacity = capacity

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            value = make()
            entries[key] = (key, value)
            if len(entries) > self._capacity:
                entries.popitem(last=False)
            return value
        if entry[0] is not key:
            del entries[key]
            entries[key] = entry = (key, entry[1])
        else:
            entries.move_to_end(key)
        return entry[1]

    def __len__(self) -> int:
        return len(self._entries)


class SetKey:
    """A candidate set's key (a tuple of key ids, or of (key id, weight)) with its hash computed
    once: a tuple's hash is not cached, and hashing a thousand ids per request costs more than
    the rest of the decision."""

    __slots__ = ("t", "h")

    def __init__(self, t: tuple) -> None:
        self.t, self.h = t, hash(t)

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, SetKey) and self.h == other.h and self.t == other.t)


def _split(candidates: list[CandidateView]) -> tuple[list[CandidateView], list[CandidateView], SetKey]:
    top, rest = split_top(candidates)
    return top, rest, SetKey(tuple(c.target.key_id for c in top))


class RoundRobinStrategy:
    name = "round-robin"

    __slots__ = ("_counters", "_split")

    def __init__(self, capacity: int = STATE_ENTRIES) -> None:
        self._counters: LruState[list[int]] = LruState(capacity)
        self._split: PerList[tuple[list[CandidateView], list[CandidateView], SetKey]] = PerList(_split)

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
