"""The circuit breaker: one circuit per provider key, opened by consecutive failures.

RELIABILITY A1: five failures in a row (5xx, connect, reset, timeout; the caller decides what
counts, see UpstreamFailure.counts_for_breaker) open a key's circuit for a cool-down; after it
one probe is let through; its success closes the circuit, its failure re-opens it. Cool-downs
grow with repeated ejections as in Envoy's outlier detection (base × ejections, capped), and
the ejection count is forgotten once the circuit has stayed closed for `max_cooldown_s`.

Each replica keeps its own circuits (RELIABILITY A8: each replica counts its own failures).
Everything runs on the event loop's thread, so there are no locks; time comes from the
injected clock's monotonic(), never the wall clock, so a clock step cannot open or close one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from services.clock import Clock

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Circuit:
    state: str = CLOSED
    consecutive_failures: int = 0
    ejections: int = 0  # how many times in a row this key was opened; sets the cool-down
    open_until: float = 0.0  # monotonic; meaningful while OPEN
    probe_in_flight: bool = False  # HALF_OPEN: the one probe allow() handed out is running
    closed_since: float = 0.0  # monotonic; when it last closed, for forgetting ejections


class Breaker:
    """Circuits keyed by provider key id; unknown keys are closed."""

    __slots__ = ("_clock", "_threshold", "_base", "_max", "_circuits", "on_open")

    def tracks(self, key_id: str) -> bool:
        """Whether the key has a circuit with something to remember. One that does not is closed
        and clean (such circuits are dropped): asking or telling this breaker about it changes
        nothing, so the router's per-request checks skip it (KeyGate.closed / succeeded)."""
        return key_id in self._circuits

    def __init__(
        self,
        clock: Clock,
        failure_threshold: int = 5,
        base_cooldown_s: float = 30.0,
        max_cooldown_s: float = 300.0,
        on_open: Callable[[str], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not 0.0 < base_cooldown_s <= max_cooldown_s:
            raise ValueError(
                f"need 0 < base_cooldown_s <= max_cooldown_s, got {base_cooldown_s}, {max_cooldown_s}"
            )
        self._clock = clock
        self._threshold = failure_threshold
        self._base = base_cooldown_s
        self._max = max_cooldown_s
        # Only keys with something to remember are stored: a clean closed circuit is dropped,
        # so run-time keys that come and go do not grow this dict.
        self._circuits: dict[str, _Circuit] = {}
        self.on_open = on_open  # issue 16: called with the key id when a circuit opens (an alert); must not raise

    def allow(self, key_id: str) -> bool:
        """May a request go to this key now? In half-open, True for exactly one probe at a time."""
        c = self._current(key_id)
        if c is None or c.state == CLOSED:
            return True
        if c.state == OPEN or c.probe_in_flight:
            return False
        # RELIABILITY A2: ≤ 1 probe per cool-down; the caller must report its outcome
        # (record_success / record_failure / release_probe) before another goes.
        c.probe_in_flight = True
        return True

    def record_success(self, key_id: str) -> None:
        c = self._current(key_id)
        if c is None:
            return
        if c.state == HALF_OPEN:
            self._close(key_id, c)
        elif c.state == CLOSED:
            # Failures must be consecutive: 500, 200, 4×500 leaves it closed (RELIABILITY A1).
            c.consecutive_failures = 0
            self._drop_if_clean(key_id, c)
        # OPEN: a request that started before the circuit opened; the cool-down stands.

    def record_failure(self, key_id: str) -> None:
        now = self._clock.monotonic()
        c = self._current(key_id)
        if c is None:
            c = self._circuits[key_id] = _Circuit(closed_since=now)
        c.consecutive_failures += 1
        if c.state == HALF_OPEN or (
            c.state == CLOSED and c.consecutive_failures >= self._threshold
        ):
            self._eject(c, now)
            if self.on_open is not None:
                self.on_open(key_id)
        # OPEN: a late failure of a request sent before it opened; the cool-down stands.

    def release_probe(self, key_id: str) -> None:
        """The probe ended with no verdict (caller cancelled, our own timeout): let the next one go."""
        c = self._current(key_id)
        if c is not None and c.state == HALF_OPEN:
            c.probe_in_flight = False

    def state(self, key_id: str) -> str:
        c = self._current(key_id)
        return CLOSED if c is None else c.state

    def open_until(self, key_id: str) -> float | None:
        """Monotonic time the cool-down ends while open; None when closed or half-open."""
        c = self._current(key_id)
        if c is None or c.state != OPEN:
            return None
        return c.open_until

    def snapshot(self) -> dict[str, dict]:
        """Every key with a non-trivial circuit, for /metrics and status pages."""
        out: dict[str, dict] = {}
        for key_id in list(self._circuits):
            c = self._current(key_id)
            if c is None:
                continue
            out[key_id] = {
                "state": c.state,
                "consecutive_failures": c.consecutive_failures,
                "ejections": c.ejections,
                "open_until": c.open_until if c.state == OPEN else None,
            }
        return out

    def _current(self, key_id: str) -> _Circuit | None:
        """The circuit with time applied: cool-down over → half-open; long closed → forgiven."""
        c = self._circuits.get(key_id)
        if c is None:
            return None
        now = self._clock.monotonic()
        if c.state == OPEN and now >= c.open_until:
            c.state = HALF_OPEN
            c.probe_in_flight = False
        elif c.state == CLOSED and c.ejections and now - c.closed_since >= self._max:
            # Envoy-style decay: a key healthy for a full max cool-down starts over at base.
            c.ejections = 0
            if self._drop_if_clean(key_id, c):
                return None
        return c

    def _eject(self, c: _Circuit, now: float) -> None:
        c.ejections += 1
        c.state = OPEN
        c.open_until = now + min(self._base * c.ejections, self._max)
        c.probe_in_flight = False

    def _close(self, key_id: str, c: _Circuit) -> None:
        c.state = CLOSED
        c.consecutive_failures = 0
        c.probe_in_flight = False
        c.closed_since = self._clock.monotonic()
        self._drop_if_clean(key_id, c)

    def _drop_if_clean(self, key_id: str, c: _Circuit) -> bool:
        if c.state == CLOSED and c.consecutive_failures == 0 and c.ejections == 0:
            del self._circuits[key_id]
            return True
        return False
