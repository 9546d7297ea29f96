"""The retry budget (RELIABILITY A7): retries in flight stay within a share of the requests in flight.

Every try after a request's first is a retry, failover included (Envoy counts both), so N
concurrent requests against a dead primary and fallback cost ≤ 1.2 × N + 3 calls, not
N × max_attempts.
"""

from __future__ import annotations

from services.routing.route_log import Tries

RETRY_BUDGET_RATIO = 0.2  # RELIABILITY defaults: retries in flight ≤ 20% of requests in flight ...
RETRY_BUDGET_MIN = 3  # ... but at least 3, so a quiet gateway still retries (Envoy's retry_budget)


class RetryBudget:
    """Requests and retrying requests in flight; `take()` says whether one more retry may go."""

    __slots__ = ("ratio", "min", "requests", "retries")

    def __init__(self, ratio: float = RETRY_BUDGET_RATIO, minimum: int = RETRY_BUDGET_MIN) -> None:
        self.ratio = ratio
        self.min = minimum
        self.requests = 0
        self.retries = 0  # requests in flight that have retried (the budget's count)

    def begin(self) -> None:
        self.requests += 1

    def end(self, tr: Tries) -> None:
        self.requests -= 1
        if tr.retrying:
            self.retries -= 1
            tr.retrying = False

    def take(self, tr: Tries, same_route: bool) -> bool:
        """RELIABILITY A7: retries in flight ≤ 20% of requests in flight, floor 3 (Envoy's
        retry_budget: budget_percent, min_retry_concurrency), counted per request: a request
        counts once, from its first retry until it ends.

        Counting only each retry's own upstream call would let every wave of failover (the next
        candidate, then the next) reuse the slots the previous wave freed. Within the 20% share
        any retry goes; the floor (what keeps a quiet gateway failing over) buys only a move to
        another candidate, never a second call to the key that just failed. In an outage the
        share's wave is 0.2 × N and the floor's tail a few calls per dead candidate past the
        second (measured through the bridge, N = 100: 120 calls with 2 dead candidates, 124 with 3,
        127 with 4).
        """
        others = self.retries - tr.retrying
        if others >= self.ratio * self.requests and (same_route or others >= self.min):
            return False
        if not tr.retrying:
            tr.retrying = True
            self.retries += 1
        return True
