"""Calendar periods: ids and resets in a time zone, across DST changes (including at midnight)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.limits.periods import period_id, period_reset_at, period_start

ZONES = ["UTC", "Asia/Kolkata", "Europe/Berlin", "America/New_York", "America/Santiago", "America/Havana",
         "Australia/Lord_Howe", "Pacific/Chatham", "Pacific/Kiritimati"]


def local(tz: str, *fields: int) -> float:
    return datetime(*fields, tzinfo=ZoneInfo(tz)).timestamp()  # type: ignore[misc]


def test_ids_name_the_local_day_and_month() -> None:
    now = datetime(2026, 11, 23, 20, 0, tzinfo=timezone.utc).timestamp()
    assert period_id("day", now, "UTC") == "2026-11-23"
    assert period_id("month", now, "UTC") == "2026-11"
    assert period_id("day", now, "Asia/Kolkata") == "2026-11-24"  # 01:30 the next day there
    assert period_id("day", now, "America/Los_Angeles") == "2026-11-23"


def test_day_resets_at_the_next_local_midnight() -> None:
    now = local("Asia/Kolkata", 2026, 11, 23, 23, 59, 30)
    assert period_reset_at("day", now, "Asia/Kolkata") == now + 30
    assert period_start("day", now, "Asia/Kolkata") == local("Asia/Kolkata", 2026, 11, 23)


def test_month_resets_on_the_first_including_across_the_year() -> None:
    assert period_reset_at("month", local("Europe/Berlin", 2026, 11, 23, 12), "Europe/Berlin") == local(
        "Europe/Berlin", 2026, 12, 1
    )
    dec = local("America/New_York", 2026, 12, 31, 23, 59)
    assert period_id("month", dec, "America/New_York") == "2026-12"
    assert period_reset_at("month", dec, "America/New_York") == local("America/New_York", 2027, 1, 1)


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("Europe/Berlin", (2026, 3, 29), 23),  # spring forward at 02:00
        ("Europe/Berlin", (2026, 10, 25), 25),  # fall back at 03:00
        ("America/Santiago", (2026, 9, 6), 23),  # clocks jump from 00:00 to 01:00: midnight never happens
        ("America/Santiago", (2026, 4, 4), 25),  # 24:00 becomes 23:00 again
        ("America/Havana", (2026, 3, 8), 23),  # another zone that changes at midnight
    ],
)
def test_a_dst_day_is_one_period_of_23_or_25_hours(tz: str, day: tuple[int, int, int], hours: int) -> None:
    noon = local(tz, *day, 12)
    start, reset = period_start("day", noon, tz), period_reset_at("day", noon, tz)
    assert reset - start == hours * 3600
    expected = "%04d-%02d-%02d" % day
    assert period_id("day", start, tz) == expected
    assert period_id("day", reset - 0.001, tz) == expected
    assert period_id("day", start - 0.001, tz) != expected
    assert period_id("day", reset, tz) != expected


def test_unknown_periods_are_refused() -> None:
    with pytest.raises(ValueError):
        period_id("week", 0.0, "UTC")
    with pytest.raises(ValueError):
        period_reset_at("year", 0.0, "UTC")
    with pytest.raises(ValueError):
        period_start("hour", 0.0, "UTC")


@given(
    now=st.floats(min_value=946_684_800, max_value=4_102_444_800, allow_nan=False),  # 2000..2100
    tz=st.sampled_from(ZONES),
    period=st.sampled_from(["day", "month"]),
)
def test_every_instant_lies_in_exactly_one_period(now: float, tz: str, period: str) -> None:
    start, reset = period_start(period, now, tz), period_reset_at(period, now, tz)
    assert start <= now < reset
    pid = period_id(period, now, tz)
    assert period_id(period, start, tz) == pid
    assert period_id(period, reset - 0.001, tz) == pid
    assert period_id(period, reset, tz) != pid
    lo, hi = (22 * 3600, 26 * 3600) if period == "day" else (27 * 86400, 32 * 86400)
    assert lo <= reset - start <= hi
