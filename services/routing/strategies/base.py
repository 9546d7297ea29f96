"""The strategy interface: order a request's candidates; small, pure, deterministic."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from services.core.types import Target

T = TypeVar("T")


@dataclass(slots=True)
class CandidateView:
    """What a strategy may look at for one candidate. Filled by routing/candidates.py."""

    target: Target
    priority: int = 0  # lower runs first
    weight: float = 1.0
    latency_ewma_ms: float | None = None  # None until the first sample
    price_in_per_mtok: float = 0.0  # USD per million prompt tokens
    price_out_per_mtok: float = 0.0
    quota_remaining: int | None = None  # daily quota left on the key; None = unlimited


class Strategy(Protocol):
    name: str

    def order(self, candidates: list[CandidateView], rng: random.Random) -> Sequence[CandidateView]:
        """Return the candidates in the order they should be tried (all of them, no drops): a list,
        or an Order that works the order out as it is read."""


class Order(Sequence[CandidateView]):
    """Candidates in try order, worked out as they are asked for.

    A request tries a few candidates at most (max_attempts), so a strategy over a thousand need
    not order all of them up front: `head` is what is known at once, `tail` an iterator for the
    rest. Iterating takes only what it reads; len(), indexing and slicing read everything, so an
    Order is interchangeable with the list the strategy used to return.
    """

    __slots__ = ("_seen", "_tail")

    def __init__(self, head: Iterable[CandidateView], tail: Iterator[CandidateView] | None = None) -> None:
        self._seen = list(head)
        self._tail = tail

    @classmethod
    def fixed(cls, ordered: list[CandidateView]) -> Order:
        """An order known in full and shared (a cached sort): not copied, never appended to."""
        o = cls.__new__(cls)
        o._seen, o._tail = ordered, None
        return o

    def __getitem__(self, i):  # type: ignore[override]
        out = self._all()[i]
        return list(out) if isinstance(i, slice) else out

    def __iter__(self) -> Iterator[CandidateView]:
        seen = self._seen
        i = 0
        while True:
            if i < len(seen):
                yield seen[i]
                i += 1
                continue
            if self._tail is None:
                return
            nxt = next(self._tail, _END)
            if nxt is _END:
                self._tail = None
                return
            seen.append(nxt)

    def _all(self) -> list[CandidateView]:
        if self._tail is not None:
            self._seen.extend(self._tail)
            self._tail = None
        return self._seen

    def __len__(self) -> int:
        return len(self._all())

    def __add__(self, other: Iterable[CandidateView]) -> list[CandidateView]:
        return self._all() + list(other)

    def __radd__(self, other: Iterable[CandidateView]) -> list[CandidateView]:
        return list(other) + self._all()

    def __eq__(self, other: object) -> bool:
        return list(self._all()) == list(other) if isinstance(other, (list, Order)) else NotImplemented

    def __repr__(self) -> str:
        return f"Order({self._all()!r})"


_END = object()


class PerList(Generic[T]):
    """What a strategy derives from a candidate list alone (its priority levels, a sort by price),
    worked out once per list: routing/candidates.py hands out the same list object for a model
    until the configuration changes. Keyed by identity (the list is held, so its id is not reused),
    checked by length; bounded."""

    __slots__ = ("_make", "_entries", "_capacity")

    def __init__(self, make: Callable[[list[CandidateView]], T], capacity: int = 256) -> None:
        self._make = make
        self._entries: dict[int, tuple[list[CandidateView], int, T]] = {}
        self._capacity = capacity

    def get(self, candidates: list[CandidateView]) -> T:
        e = self._entries.get(id(candidates))
        if e is not None and e[0] is candidates and e[1] == len(candidates):
            return e[2]
        value = self._make(candidates)
        if len(self._entries) >= self._capacity:
            self._entries.clear()
        self._entries[id(candidates)] = (candidates, len(candidates), value)
        return value


SPARSE_DRAWS = 16  # draws kept in a dict of moved positions before the pool is copied


def shuffled(items: list[CandidateView], rng: random.Random, skip: int = -1) -> Iterator[CandidateView]:
    """A uniformly random order of `items` (after `items[skip]` when skip >= 0), drawn one at a
    time (Fisher-Yates from the front): asking for the first k costs k draws, not len(items).

    The first SPARSE_DRAWS swaps are kept in a dict (position → index into items) instead of a
    copy of the list, since a request reads a few; past them the pool is copied once. Same draws,
    same order as swapping in a copy from the start."""
    n = len(items)
    moved: dict[int, int] = {}
    k = 0
    if skip >= 0:
        moved[skip] = 0  # position 0 takes items[skip]; position skip now holds items[0]
        k = 1
        yield items[skip]
    stop = min(n - 1, k + SPARSE_DRAWS)
    while k < stop:
        j = rng.randrange(k, n)
        at_j = moved.get(j, j)
        moved[j] = moved.get(k, k)
        k += 1
        yield items[at_j]
    if k >= n:
        return
    pool = list(items)
    for pos, i in moved.items():
        pool[pos] = items[i]
    for k in range(k, n - 1):
        j = rng.randrange(k, n)
        pool[k], pool[j] = pool[j], pool[k]
        yield pool[k]
    yield pool[n - 1]
