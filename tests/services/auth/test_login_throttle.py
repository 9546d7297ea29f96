"""LoginThrottle: a failed check keeps its slot for the minute, a success or (when asked) a broken
check gives it back, the eleventh failure answers LOGIN_RATE_LIMITED, and the limiter never sees
the account's name (real in-process limiter, fake clock)."""

from __future__ import annotations

import pytest

from services.auth.login_throttle import LOGIN_FAILURES, LoginThrottle
from services.clock import FakeClock
from services.core.errors import ResourceExhausted
from services.limits import make_limiter

PEPPER = b"p" * 32


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock):
    return make_limiter(None, clock)


async def _fail(throttle: LoginThrottle, account: str, n: int) -> None:
    for _ in range(n):
        async with throttle.attempt(account, fail_on_error=False) as attempt:
            attempt.failed = True


async def test_ten_failures_a_minute_then_429_until_the_window_frees(limiter, clock) -> None:
    throttle = LoginThrottle(limiter, PEPPER)
    await _fail(throttle, "ann@example.com", LOGIN_FAILURES.limit)
    with pytest.raises(ResourceExhausted) as info:
        async with throttle.attempt("ann@example.com", fail_on_error=False):
            raise AssertionError("the check must not run once the window is full")
    assert info.value.reason == "LOGIN_RATE_LIMITED" and info.value.retry_after_s >= 1.0
    async with throttle.attempt("bob@example.com", fail_on_error=False) as attempt:  # another account: untouched
        attempt.failed = False
    clock.advance(LOGIN_FAILURES.window_s + 1)
    async with throttle.attempt("ann@example.com", fail_on_error=False) as attempt:
        attempt.failed = False


async def test_successes_give_their_slot_back(limiter) -> None:
    throttle = LoginThrottle(limiter, PEPPER)
    for _ in range(3 * LOGIN_FAILURES.limit):
        async with throttle.attempt("ann@example.com", fail_on_error=True) as attempt:
            attempt.failed = False
    await _fail(throttle, "ann@example.com", LOGIN_FAILURES.limit)  # all ten still available


@pytest.mark.parametrize("fail_on_error", [True, False])
async def test_a_broken_check_counts_only_when_asked(limiter, fail_on_error) -> None:
    throttle = LoginThrottle(limiter, PEPPER)
    for _ in range(LOGIN_FAILURES.limit):
        with pytest.raises(RuntimeError):
            async with throttle.attempt("ann@example.com", fail_on_error=fail_on_error):
                raise RuntimeError("database unavailable")
    if fail_on_error:
        with pytest.raises(ResourceExhausted):
            await _fail(throttle, "ann@example.com", 1)
    else:
        await _fail(throttle, "ann@example.com", LOGIN_FAILURES.limit)


def test_the_subject_is_a_digest_not_the_address() -> None:
    throttle = LoginThrottle(make_limiter(None, FakeClock()), PEPPER)
    subject = throttle.subject("ann@example.com")
    assert subject.startswith("login:") and "ann" not in subject and len(subject) == 6 + 32
    assert subject == throttle.subject("ann@example.com") != throttle.subject("bob@example.com")
    assert LoginThrottle(make_limiter(None, FakeClock()), b"q" * 32).subject("ann@example.com") != subject
    assert PEPPER.decode() not in repr(throttle)
