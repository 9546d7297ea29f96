"""Candidate builders shared by the strategy tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from services.core.types import Target
from services.routing.strategies.base import CandidateView


def cand(
    key_id: str,
    priority: int = 0,
    weight: float = 1.0,
    latency: float | None = None,
    price_in: float = 0.0,
    price_out: float = 0.0,
) -> CandidateView:
    target = Target(provider=f"prov_{key_id}", kind="openai", key_id=key_id, model="m", base_url="http://x")
    return CandidateView(
        target=target,
        priority=priority,
        weight=weight,
        latency_ewma_ms=latency,
        price_in_per_mtok=price_in,
        price_out_per_mtok=price_out,
    )


def ids(candidates: list[CandidateView]) -> list[str]:
    return [c.target.key_id for c in candidates]


def first_counts(order: Callable[[], list[CandidateView]], n: int) -> Counter[str]:
    """How often each key was tried first over n requests."""
    return Counter(order()[0].target.key_id for _ in range(n))
