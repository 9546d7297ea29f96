"""The strategy interface: order a request's candidates; small, pure, deterministic."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from services.core.types import Target


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

    def order(self, candidates: list[CandidateView], rng: random.Random) -> list[CandidateView]:
        """Return the candidates in the order they should be tried (all of them, no drops)."""
