"""Calendar periods for quotas: which day or month an instant falls in, and when it ends, in a time zone.

"Per day" means from local midnight to the next local midnight of the rule's zone, so a day is
23 or 25 hours long across a DST change and still has one id. Periods are computed from the
injected wall clock (`Clock.now()`), never from a backend's clock: every replica names the same
period the same way and the id becomes part of a counter's key (redis.py).
"""

from __future__ import annotations

import math

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

PERIODS = ("day", "month")


def _local(now: float, tz: str) -> datetime:
    # fromtimestamp rounds to the microsecond, which can carry an instant just before midnight into
    # the next day; truncate instead (DST changes fall on whole seconds, so the sub-second add is safe).
    secs = math.floor(now)
    return datetime.fromtimestamp(secs, ZoneInfo(tz)) + timedelta(microseconds=int((now - secs) * 1_000_000))


def period_id(period: str, now: float, tz: str) -> str:
    """The id of the period holding `now`: "2026-11-23" for a day, "2026-11" for a month."""
    local = _local(now, tz)
    if period == "day":
        return local.strftime("%Y-%m-%d")
    if period == "month":
        return local.strftime("%Y-%m")
    raise ValueError(f"unknown period {period!r}; expected one of {PERIODS}")


def _next_start(period: str, today: date) -> date:
    if period == "day":
        return today + timedelta(days=1)
    if period == "month":
        return date(today.year + 1, 1, 1) if today.month == 12 else date(today.year, today.month + 1, 1)
    raise ValueError(f"unknown period {period!r}; expected one of {PERIODS}")


def _midnight(day: date, zone: ZoneInfo) -> float:
    # fold=0 is right both ways: where DST skips midnight (America/Santiago, America/Havana) the
    # earlier offset maps 00:00 onto the transition instant, the first real moment of the day;
    # where midnight repeats, fold=0 is its first occurrence.
    return datetime.combine(day, time(0), tzinfo=zone).timestamp()


def period_start(period: str, now: float, tz: str) -> float:
    """Epoch seconds when the period holding `now` began (local midnight / the 1st, local)."""
    zone = ZoneInfo(tz)
    local = _local(now, tz).date()
    if period == "month":
        local = local.replace(day=1)
    elif period != "day":
        raise ValueError(f"unknown period {period!r}; expected one of {PERIODS}")
    return _midnight(local, zone)


def period_reset_at(period: str, now: float, tz: str) -> float:
    """Epoch seconds of the next local midnight (day) or the next 1st of the month (month)."""
    zone = ZoneInfo(tz)
    return _midnight(_next_start(period, _local(now, tz).date()), zone)


class PeriodCache:
    """(start, end, id) of the period holding `now`, per (period, zone): the calendar maths
    (zoneinfo, strftime: ~10 µs a rule) runs once per period instead of on every limiter call."""

    __slots__ = ("_periods",)

    def __init__(self) -> None:
        self._periods: dict[tuple[str, str], tuple[float, float, str]] = {}

    def get(self, period: str, now: float, tz: str) -> tuple[float, float, str]:
        key = (period, tz)
        p = self._periods.get(key)
        if p is None or not p[0] <= now < p[1]:
            p = (period_start(period, now, tz), period_reset_at(period, now, tz), period_id(period, now, tz))
            self._periods[key] = p
        return p
