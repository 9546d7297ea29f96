"""AuthThrottle: 429 after 100 failed authentications a minute from one client address.

SPEC and RELIABILITY F6 (issue 15 point 5: 200 wrong keys from one address gave no 429). Each
failed authentication (a key or admin key presented and refused) is one hit on the shared
limiter (Redis when configured, so every replica counts it; in-process otherwise), under a
subject named by the deployment (a fingerprint of its server secret, which replicas share) and
the client address. The hit that goes over the limit answers 429 instead of 401, and this
process then refuses that address, valid keys included (a correct guess must not show), until
the window frees up. That check is a dict lookup: a good request pays no limiter call, and
clients from other addresses are never touched. Another replica learns of the block at the
address's next failure there (its hit finds the shared window full).

The client address is the one seed 004's open mode counts by (OpenGate.client_ip): the gRPC
peer, or behind a trusted proxy (the in-process bridge always is one) the forwarded hop it saw.
The surface in the metrics is http for calls from the in-process bridge, grpc for the port.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.clock import Clock
from services.core.errors import ResourceExhausted, TollgateError
from services.limits.base import Limiter, Rule

FAILURES_PER_WINDOW = 100
WINDOW_S = 60.0
MAX_BLOCKED = 100_000  # addresses remembered as blocked; beyond that the expired ones go first


class AuthThrottle:
    def __init__(self, limiter: Limiter, clock: Clock, namespace: str, client_ip: Callable[[str, Mapping[str, str]], str],
                 *, limit: int = FAILURES_PER_WINDOW, window_s: float = WINDOW_S,
                 on_failure: Callable[[str, bool], None] | None = None) -> None:
        self._limiter = limiter
        self._client_ip = client_ip  # OpenGate.client_ip: the gRPC peer, or a trusted proxy's forwarded hop
        self._clock = clock
        self._prefix = f"authfail:{namespace}:"
        self._rules = (Rule("auth_failures", limit, window_s),) if limit > 0 else ()  # 0: counted, never refused
        self._blocked: dict[str, float] = {}  # address -> monotonic time the block ends
        self._on_failure = on_failure  # (surface, throttled): the metrics

    @property
    def blocking(self) -> bool:
        """Whether any address is blocked here (if not, a request need not say who it is from)."""
        return bool(self._blocked)

    def address(self, peer: str, md: Mapping[str, str]) -> tuple[str, str]:
        """(the client's address, the surface: http for the in-process bridge, grpc otherwise)."""
        return self._client_ip(peer, md), "http" if peer == "inprocess" else "grpc"

    def check(self, address: str, surface: str) -> None:
        """Raises ResourceExhausted while `address` is blocked here; no I/O."""
        until = self._blocked.get(address)
        if until is None:
            return
        left = until - self._clock.monotonic()
        if left > 0:
            if self._on_failure is not None:
                self._on_failure(surface, True)
            raise _refusal(left)
        del self._blocked[address]

    async def failed(self, address: str, surface: str) -> None:
        """Counts one failed authentication; raises ResourceExhausted when it is over the limit."""
        d = None
        if self._rules:
            try:
                d = await self._limiter.hit(self._prefix + address, self._rules)
            except TollgateError:
                pass  # a limiter in "closed" mode with Redis down: the 401 stands
        over = d is not None and not d.allowed
        if self._on_failure is not None:
            self._on_failure(surface, over)
        if not over:
            return
        wait = max(1.0, d.retry_after_s)  # type: ignore[union-attr]
        now = self._clock.monotonic()
        if len(self._blocked) >= MAX_BLOCKED:
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
        if len(self._blocked) < MAX_BLOCKED:
            self._blocked[address] = now + wait
        raise _refusal(wait)


def _refusal(wait: float) -> ResourceExhausted:
    return ResourceExhausted("too many failed authentications from this address; retry later",
                             reason="AUTH_FAILURES_THROTTLED", retry_after_s=max(1.0, wait))
