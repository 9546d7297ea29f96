"""Retry-After parsing (RELIABILITY A3): every form providers send, and totality on garbage."""

from __future__ import annotations

import calendar
import email.utils
import math

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from services.providers.retry_after import MAX_RETRY_AFTER_S, parse_retry_after

NOW = 1_700_000_000.0  # a whole second, so HTTP-dates (second resolution) round-trip exactly


def test_delta_seconds() -> None:
    assert parse_retry_after({"retry-after": "2"}, NOW) == 2.0
    assert parse_retry_after({"retry-after": "30"}, NOW) == 30.0


def test_fractional_seconds() -> None:
    assert parse_retry_after({"retry-after": "1.5"}, NOW) == 1.5
    assert parse_retry_after({"retry-after": " 0.25 "}, NOW) == 0.25


def test_http_date_imf_fixdate() -> None:
    header = email.utils.formatdate(NOW + 45, usegmt=True)  # "Tue, 14 Nov 2023 22:14:05 GMT"
    assert header.endswith("GMT")
    assert parse_retry_after({"retry-after": header}, NOW) == 45.0


def test_http_date_obsolete_forms_are_gmt() -> None:
    # RFC 9110 §5.6.7 examples; both obsolete forms are GMT even when asctime names no zone.
    now = float(calendar.timegm((1994, 11, 6, 8, 49, 0)))
    assert parse_retry_after({"retry-after": "Sunday, 06-Nov-94 08:49:37 GMT"}, now) == 37.0
    assert parse_retry_after({"retry-after": "Sun Nov  6 08:49:37 1994"}, now) == 37.0


def test_past_date_means_now() -> None:
    header = email.utils.formatdate(NOW - 3600, usegmt=True)
    assert parse_retry_after({"retry-after": header}, NOW) == 0.0


def test_retry_after_ms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500"}, NOW) == 1.5


def test_retry_after_ms_preferred_over_seconds() -> None:
    headers = {"retry-after": "30", "retry-after-ms": "250"}
    assert parse_retry_after(headers, NOW) == 0.25


def test_garbage_retry_after_ms_falls_back_to_seconds() -> None:
    headers = {"retry-after-ms": "soon", "retry-after": "7"}
    assert parse_retry_after(headers, NOW) == 7.0


def test_header_names_any_case() -> None:
    assert parse_retry_after({"Retry-After": "5"}, NOW) == 5.0
    assert parse_retry_after({"RETRY-AFTER-MS": "100"}, NOW) == 0.1


def test_aiohttp_style_multidict() -> None:
    headers = CIMultiDictProxy(CIMultiDict([("Content-Type", "application/json"), ("Retry-After", "3")]))
    assert parse_retry_after(headers, NOW) == 3.0


def test_absent_is_none() -> None:
    assert parse_retry_after({}, NOW) is None
    assert parse_retry_after({"content-type": "application/json", "x-retry": "5"}, NOW) is None


def test_garbage_is_none() -> None:
    for value in ["", "soon", "5s", "1e3", "nan", "inf", "-inf", "0x10", "1,5", "1_000", "Mon, 99 Foo"]:
        assert parse_retry_after({"retry-after": value}, NOW) is None, value
        assert parse_retry_after({"retry-after-ms": value}, NOW) is None, value


def test_negative_is_zero() -> None:
    assert parse_retry_after({"retry-after": "-5"}, NOW) == 0.0
    assert parse_retry_after({"retry-after-ms": "-100"}, NOW) == 0.0


def test_capped_at_a_day() -> None:
    assert parse_retry_after({"retry-after": "999999999"}, NOW) == MAX_RETRY_AFTER_S == 86_400.0
    assert parse_retry_after({"retry-after": "9" * 500}, NOW) == MAX_RETRY_AFTER_S
    far = email.utils.formatdate(NOW + 10 * 86_400, usegmt=True)
    assert parse_retry_after({"retry-after": far}, NOW) == MAX_RETRY_AFTER_S


_NAMES = st.sampled_from(["retry-after", "Retry-After", "retry-after-ms", "RETRY-AFTER-MS"]) | st.text()


@given(
    headers=st.dictionaries(_NAMES, st.text(), max_size=4),
    now=st.floats(allow_nan=True, allow_infinity=True),
)
def test_total_on_arbitrary_text(headers: dict[str, str], now: float) -> None:
    result = parse_retry_after(headers, now)
    assert result is None or 0.0 <= result <= MAX_RETRY_AFTER_S


@given(value=st.from_regex(r"\A[A-Za-z]{3}, [0-9 ]{1,3} [A-Za-z]{3} [0-9]{1,6} [0-9:]{1,9} [A-Z+-0-9]{0,6}\Z"))
def test_total_on_date_like_text(value: str) -> None:
    # Near-dates reach deeper into the stdlib date parser than arbitrary text does.
    result = parse_retry_after({"retry-after": value}, NOW)
    assert result is None or 0.0 <= result <= MAX_RETRY_AFTER_S


@given(st.integers(min_value=0, max_value=10**12))
def test_integer_seconds_round_trip(n: int) -> None:
    assert parse_retry_after({"retry-after": str(n)}, NOW) == min(float(n), MAX_RETRY_AFTER_S)


@given(st.integers(min_value=-10**6, max_value=2 * 86_400))
def test_http_date_round_trip(delta: int) -> None:
    header = email.utils.formatdate(NOW + delta, usegmt=True)
    expected = min(max(float(delta), 0.0), MAX_RETRY_AFTER_S)
    assert parse_retry_after({"retry-after": header}, NOW) == expected


@given(st.floats(min_value=0.0, max_value=1e7, allow_nan=False))
def test_ms_is_thousandths(ms: float) -> None:
    result = parse_retry_after({"retry-after-ms": repr(ms)}, NOW)
    if "e" in repr(ms):  # exponent notation is not a plain decimal: treated as garbage
        assert result is None
    else:
        assert result is not None and math.isclose(result, min(ms / 1000.0, MAX_RETRY_AFTER_S))
