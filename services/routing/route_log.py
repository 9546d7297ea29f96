"""What happened to one request on its way through the router: its tries and skips, and its walk.

`RouteLog` is what the request keeps (the X-Tollgate-Route header, the ledger's attempts and
target); `Tries` is the walk's own state while the router moves through the candidates (the
failures that explain a refusal, the half-open probe held, the retry budget's count).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.core.errors import UpstreamFailure
from services.core.types import Target

# Outcomes that are skips, not tries: they cost the upstream nothing and do not count as attempts.
SKIPS = frozenset({"breaker_open", "cooldown", "key_rate_limited", "key_busy", "retry_budget", "key_unavailable"})


@dataclass(slots=True)
class AttemptRecord:
    provider: str
    key_id: str
    model: str
    outcome: str  # ok | server | timeout | connect | rate_limited | auth | protocol | cancelled | error | a SKIPS entry ...
    status: int = 0
    latency_ms: float = 0.0


@dataclass(slots=True)
class RouteLog:
    """What happened to one request on its way through the router."""

    strategy: str = ""
    attempts: list[AttemptRecord] = field(default_factory=list)
    target: Target | None = None  # who answered (or was tried last)
    upstream_model: str = ""

    @property
    def tries(self) -> int:
        n = 0  # a loop, not sum() over a generator: read several times per request
        for a in self.attempts:
            if a.outcome not in SKIPS:
                n += 1
        return n

    def header(self) -> str:
        """`provider/key_id=outcome` per try or skip: the X-Tollgate-Route header (ids only, never keys)."""
        attempts = self.attempts
        if len(attempts) == 1:  # nearly every answer: no comprehension (a call) and no join
            a = attempts[0]
            return f"{a.provider}/{a.key_id}={a.outcome}({a.status})" if a.status else f"{a.provider}/{a.key_id}={a.outcome}"
        # A list: join() would build one from a generator first.
        return ", ".join([f"{a.provider}/{a.key_id}={a.outcome}({a.status})" if a.status
                          else f"{a.provider}/{a.key_id}={a.outcome}" for a in self.attempts])


@dataclass(slots=True)
class Tries:
    """One request's walk through its candidates, shared by the router's loop and its gate and budget."""

    failures: list[UpstreamFailure] = field(default_factory=list)  # failed tries, and skips that explain a refusal
    probe: bool = False  # the current try holds its key's half-open probe: it must be reported or released
    retrying: bool = False  # the retry budget counts this request until it ends (A7)
