"""LoginThrottle: at most 10 failed sign-ins a minute per account (email, operator, password change).

Each attempt holds one slot of the account's window on the shared limiter before its check runs,
so racing guesses cannot overshoot; a failed check keeps the slot for the window, a success gives
it back. Whether a check that broke (a store error, a cancellation) counts as a failure is the
caller's call (`fail_on_error`). The subject is a digest under the API-key pepper, never the
address itself: limiter keys (Redis) must not hold emails. (auth/throttle.py is the other one:
failed authentications per client address.)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from services.core.errors import ResourceExhausted
from services.limits.base import Limiter, Rule

LOGIN_FAILURES = Rule("login_failures", 10, window_s=60.0)  # per account per minute


@dataclass(slots=True)
class Attempt:
    """Set `failed` in the `async with` body: True keeps the slot for the window."""

    failed: bool


class LoginThrottle:
    def __init__(self, limiter: Limiter, pepper: bytes, rule: Rule = LOGIN_FAILURES) -> None:
        self._limiter = limiter
        self._pepper = pepper
        self._rules = (rule,)

    def __repr__(self) -> str:
        return f"LoginThrottle({self._rules[0]!r})"  # never the pepper

    def subject(self, account: str) -> str:
        return "login:" + hmac.new(self._pepper, account.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]

    @asynccontextmanager
    async def attempt(self, account: str, *, fail_on_error: bool) -> AsyncIterator[Attempt]:
        """One sign-in attempt for `account`; LOGIN_RATE_LIMITED (429) when its window is full."""
        decision, held = await self._limiter.reserve(self.subject(account), self._rules, 1)
        if held is None:
            raise ResourceExhausted("Too many failed sign-in attempts for this account; try again later",
                                    reason="LOGIN_RATE_LIMITED", retry_after_s=max(1.0, decision.retry_after_s))
        attempt = Attempt(failed=fail_on_error)
        try:
            yield attempt
        finally:
            if attempt.failed:
                await self._limiter.settle(held, 1)
            else:
                await self._limiter.release(held)
