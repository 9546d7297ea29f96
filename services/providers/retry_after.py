"""Retry-After parsing: how long an upstream asked us to wait, from its response headers.

RELIABILITY A3: a 429's `Retry-After` decides between waiting (≤ 5 s) and failing over, and
how long the key stays idle. Providers send it three ways: `retry-after-ms` (OpenAI, in
milliseconds), `retry-after` as delta-seconds (sometimes fractional, which RFC 9110 does not
allow but OpenAI and others send), or `retry-after` as an HTTP-date. The parser is total: a
header it cannot read is treated as absent (None), never as an error, because a malformed
hint from an upstream must not turn a retryable failure into a crash.
"""

from __future__ import annotations

import calendar
import email.utils
import math
import re
from collections.abc import Mapping

MAX_RETRY_AFTER_S = 86_400.0  # a day: longer hints are either bugs or not worth honouring

# Plain decimal numbers only: float() alone would also take "nan", "inf", "1e9" and "1_0".
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_OWS = " \t"  # RFC 9110 optional whitespace around a field value


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait before retrying, or None when no readable hint is present.

    `headers` may be any mapping (aiohttp's CIMultiDictProxy, a plain dict in any case);
    `now` is wall-clock seconds (clock.now()), used only for the HTTP-date form. Past dates
    and negative values mean "now" (0.0); anything above a day is capped to a day.
    """
    ms_value, s_value = _find(headers)
    if ms_value is not None:
        ms = _number(ms_value)
        if ms is not None:
            return _clamp(ms / 1000.0)
    if s_value is not None:
        seconds = _number(s_value)
        if seconds is None:
            seconds = _http_date_delta(s_value, now)
        if seconds is not None:
            return _clamp(seconds)
    return None


def _find(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The first `retry-after-ms` and `retry-after` values, matching names in any case."""
    ms_value: str | None = None
    s_value: str | None = None
    # One pass over the items instead of .get(): a plain dict's keys keep the sender's case.
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        lname = name.lower()
        if lname == "retry-after-ms" and ms_value is None:
            ms_value = value
        elif lname == "retry-after" and s_value is None:
            s_value = value
    return ms_value, s_value


def _number(value: str) -> float | None:
    text = value.strip(_OWS)
    if not _NUMBER.fullmatch(text):
        return None
    return float(text)  # a very long digit string becomes inf, which _clamp caps


def _http_date_delta(value: str, now: float) -> float | None:
    """Seconds from `now` until an HTTP-date (IMF-fixdate, RFC 850 or asctime form)."""
    try:
        parts = email.utils.parsedate_tz(value.strip(_OWS))
        if parts is None:
            return None
        # HTTP-dates are always GMT; a missing zone (asctime form) means GMT too, never local time.
        offset = parts[9] or 0
        when = calendar.timegm(parts[:6]) - offset
    except (ValueError, TypeError, IndexError, OverflowError):
        # The stdlib date parser raises a few kinds on odd input (years past 9999, bad fields).
        return None
    return when - now


def _clamp(seconds: float) -> float | None:
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
