"""Routing strategies by name: NAMES, DEFAULT and make_strategy().

A strategy orders one request's candidates (strategies/base.py). Names are hyphenated as the
seeds spell them (`exhaust-first`, `round-robin`); underscores are accepted too, since
environment variables and TOML keys often use them (`KEY_SELECTION_STRATEGY=exhaust_first`).
"""

from __future__ import annotations

from collections.abc import Callable

from services.config.kinds import STRATEGY_NAMES
from services.routing.strategies.balanced import BalancedStrategy
from services.routing.strategies.base import CandidateView, Strategy
from services.routing.strategies.cost import CostStrategy
from services.routing.strategies.exhaust_first import ExhaustFirstStrategy
from services.routing.strategies.least_latency import LeastLatencyStrategy
from services.routing.strategies.priority import PriorityStrategy
from services.routing.strategies.round_robin import RoundRobinStrategy
from services.routing.strategies.weighted import WeightedStrategy

__all__ = ["DEFAULT", "NAMES", "CandidateView", "Strategy", "canonical_name", "make_strategy"]

_FACTORIES: dict[str, Callable[[], Strategy]] = {
    "priority": PriorityStrategy,
    "exhaust-first": ExhaustFirstStrategy,
    "round-robin": RoundRobinStrategy,
    "weighted": WeightedStrategy,
    "least-latency": LeastLatencyStrategy,
    "cost": CostStrategy,
    "balanced": BalancedStrategy,
}

NAMES: tuple[str, ...] = tuple(_FACTORIES)
assert NAMES == STRATEGY_NAMES, "config/kinds.py names the strategies a config may choose: keep both lists alike"
DEFAULT = "balanced"  # seed 000's ROUTING_STRATEGY default


def canonical_name(name: str) -> str:
    """The hyphenated name for `name` (any case, `_` or `-`); ValueError if there is none."""
    key = name.strip().lower().replace("_", "-")
    if key not in _FACTORIES:
        raise ValueError(f"unknown routing strategy {name!r}; choose one of: {', '.join(NAMES)}")
    return key


def make_strategy(name: str) -> Strategy:
    """A new strategy instance; stateful ones (round-robin, weighted) keep their state on it."""
    return _FACTORIES[canonical_name(name)]()
