"""Rate limits and quotas: make_limiter() picks the backend (Redis with failover, or in-process).

base.py holds the interface; memory.py, redis.py and degraded.py the implementations.
"""

from __future__ import annotations

from collections.abc import Callable

from services.clock import Clock
from services.limits.base import Limiter
from services.limits.degraded import MODES, FailoverLimiter
from services.limits.memory import MemoryLimiter
from services.limits.redis import RedisLimiter, connect


def make_limiter(
    redis_url: str | None,
    clock: Clock,
    fail_mode: str = "open",
    *,
    prefix: str = "tg:",
    lease_s: float = 120.0,
    timeout_s: float = 0.25,
    on_state_change: Callable[[bool], None] | None = None,
) -> Limiter:
    """A FailoverLimiter over Redis when `redis_url` is set (RELIABILITY C2/C4), else a MemoryLimiter.

    The Redis client is built here, so the RedisLimiter owns it and close() closes it. No I/O
    happens until the first call: a Redis that is down at start-up means "degraded", not a crash.
    """
    if fail_mode not in MODES:
        raise ValueError(f"limiter fail mode must be one of {MODES}, got {fail_mode!r}")
    local = MemoryLimiter(clock, lease_s=lease_s)
    if not redis_url:
        return local
    primary = RedisLimiter(
        connect(redis_url, timeout_s=timeout_s), prefix, lease_s, clock=clock, owns_client=True, health_timeout_s=timeout_s
    )
    return FailoverLimiter(primary, local, fail_mode, on_state_change, clock=clock, timeout_s=timeout_s)


__all__ = ["FailoverLimiter", "Limiter", "MemoryLimiter", "RedisLimiter", "make_limiter"]
