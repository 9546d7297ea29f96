"""The limiter interface: one abstraction for caller quotas and provider-key limits.

Two kinds of limit:
- request windows (requests per minute: sliding window; per day: calendar window that resets
  at midnight of a configured time zone): `hit()` admits and counts atomically.
- token budgets (tokens per day / month): `reserve()` takes an estimate before the call,
  `settle()` replaces it with the real count when usage is known, `release()` refunds on failure.

Backends: memory.py (one process) and redis.py (atomic Lua, shared by replicas).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True, frozen=True)
class Rule:
    """One limit: `limit` units per window. window_s for sliding windows, or period 'day'/'month'."""

    name: str  # "rpm", "rpd", "tpd", "tpm" (tokens per month), "key_rpm", "key_daily"
    limit: int  # <= 0 means unlimited
    window_s: float = 60.0
    period: str = ""  # "" (sliding window of window_s) | "day" | "month" (calendar, in tz)
    tz: str = "UTC"


@dataclass(slots=True)
class Decision:
    """The outcome of a check, with what the X-RateLimit-* headers need."""

    allowed: bool
    rule: str  # the rule that decided (the tightest one when allowed)
    limit: int
    remaining: int
    used: int
    reset_at: float  # epoch seconds when the window frees up / resets
    retry_after_s: float = 0.0


@dataclass(slots=True)
class Reservation:
    """Tokens held for one request until its real usage is known."""

    subject: str
    rules: tuple[Rule, ...]
    amount: int
    period_ids: tuple[str, ...]  # which calendar period each rule's counter belongs to
    settled: bool = False
    id: str = ""  # the backend's handle: settle/release are idempotent by it (at most once)


@dataclass(slots=True, frozen=True)
class RuleState:
    """One rule's answer inside a check: what decide() picks the reported rule from."""

    rule: Rule
    used: int  # counted (and held) units, after this call's own count when it was admitted
    ok: bool  # room for this call's amount
    reset_at: float  # epoch seconds when the window frees a slot / the period resets
    retry_after_s: float = 0.0  # 0 when this rule has room


def decide(allowed: bool, states: list[RuleState], now: float) -> Decision:
    """The one Decision for a multi-rule check: the tightest rule when allowed, else the refusing
    rule that frees up last (so Retry-After is honest for all-or-nothing checks).

    No limited rule at all (every limit <= 0) gives limit 0, read as "unlimited" like Rule.limit.
    """
    if not states:
        return Decision(True, "", 0, 0, 0, now, 0.0)
    if allowed:
        s = min(states, key=lambda st: st.rule.limit - st.used)
        return Decision(True, s.rule.name, s.rule.limit, max(0, s.rule.limit - s.used), s.used, s.reset_at)
    s = max((st for st in states if not st.ok), key=lambda st: st.retry_after_s, default=states[0])
    return Decision(
        False, s.rule.name, s.rule.limit, max(0, s.rule.limit - s.used), s.used, s.reset_at, s.retry_after_s
    )


class Limiter(Protocol):
    async def hit(self, subject: str, rules: tuple[Rule, ...]) -> Decision:
        """Count one request against every rule if all allow it; otherwise count nothing."""

    async def peek(self, subject: str, rules: tuple[Rule, ...]) -> Decision:
        """The state the headers report, without counting."""

    async def reserve(self, subject: str, rules: tuple[Rule, ...], amount: int) -> tuple[Decision, Reservation | None]:
        """Hold `amount` tokens under every rule if all have room; None when refused."""

    async def settle(self, reservation: Reservation, actual: int) -> None:
        """Replace the held amount with the real one (may go above the estimate)."""

    async def release(self, reservation: Reservation) -> None:
        """Give the whole reservation back (the request failed before using tokens)."""

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...
