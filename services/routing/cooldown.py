"""Rate-limit cool-downs: provider keys an upstream 429 told to wait, until when.

RELIABILITY A3: `Retry-After: 30` on a 429 sends the request to the fallback at once and
leaves the key idle for 30 s. This is separate from the breaker: a 429 says "busy", not
"broken", so it never counts as a breaker failure (A1) and ends exactly when the upstream said.
"""

from __future__ import annotations

import math

from services.clock import Clock

# Past this many entries, set() sweeps out expired ones, so keys that are never asked about
# again (a user's key deleted while cooling down) cannot pile up.
_SWEEP_AT = 1024


class Cooldowns:
    """Per-key "idle until" times on the injected monotonic clock; expired entries drop lazily."""

    __slots__ = ("_clock", "_until")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def set(self, key_id: str, seconds: float) -> None:
        """Idle `key_id` for `seconds` from now; an earlier, longer cool-down is kept."""
        if not seconds > 0.0 or math.isinf(seconds):  # also rejects NaN
            return
        now = self._clock.monotonic()
        until = now + seconds
        # Keep the later end: a second, shorter hint does not cancel what the first one asked.
        if until > self._until.get(key_id, 0.0):
            self._until[key_id] = until
        if len(self._until) > _SWEEP_AT:
            self._sweep(now)

    def ready(self, key_id: str) -> bool:
        return self.remaining(key_id) == 0.0

    def remaining(self, key_id: str) -> float:
        """Seconds until `key_id` may be used again; 0.0 when it may be used now."""
        until = self._until.get(key_id)
        if until is None:
            return 0.0
        left = until - self._clock.monotonic()
        if left <= 0.0:
            del self._until[key_id]
            return 0.0
        return left

    def snapshot(self) -> dict[str, float]:
        """Seconds left for each key still cooling down."""
        now = self._clock.monotonic()
        self._sweep(now)
        return {key_id: until - now for key_id, until in self._until.items()}

    def _sweep(self, now: float) -> None:
        for key_id in [k for k, until in self._until.items() if until <= now]:
            del self._until[key_id]
