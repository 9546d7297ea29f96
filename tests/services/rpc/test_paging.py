"""services/rpc/paging.py: AIP-158 windows, opaque page tokens that round-trip, and every bad
size, skip or token refused as INVALID_ARGUMENT naming its field."""

from __future__ import annotations

import base64

import pytest

from services.core.errors import InvalidArgument
from services.rpc import paging


def test_the_window_is_the_default_size_capped_at_the_maximum_from_the_token_plus_skip():
    assert paging.window(0, "", 0) == (0, 50)
    assert paging.window(10, "", 0) == (0, 10)
    assert paging.window(10_000, "", 0) == (0, 100)
    assert paging.window(0, "", 0, default=100, maximum=1000) == (0, 100)
    assert paging.window(5, paging.encode(40), 3) == (43, 5)


@pytest.mark.parametrize("offset", [0, 1, 99, 10**12])
def test_a_token_round_trips_and_is_url_safe_without_padding(offset):
    token = paging.encode(offset)
    assert paging.decode(token) == offset and "=" not in token and "/" not in token and "+" not in token


def test_the_next_token_is_empty_on_the_last_page():
    assert paging.decode(paging.next_token(0, 2, 5)) == 2
    assert paging.decode(paging.next_token(2, 2, 5)) == 4
    assert paging.next_token(4, 2, 5) == ""
    assert paging.next_token(0, 50, 50) == ""


@pytest.mark.parametrize("size, skip, field, reason", [(-1, 0, "page_size", "INVALID_PAGE_SIZE"),
                                                       (0, -1, "skip", "INVALID_SKIP")])
def test_negative_sizes_and_skips_are_refused_naming_the_field(size, skip, field, reason):
    with pytest.raises(InvalidArgument) as e:
        paging.window(size, "", skip)
    assert e.value.reason == reason and [v.field for v in e.value.field_violations] == [field]


@pytest.mark.parametrize("token", [
    "not base64!", base64.urlsafe_b64encode(b"x:5").decode(), base64.urlsafe_b64encode(b"o:-1").decode(),
    base64.urlsafe_b64encode(b"o:abc").decode(), base64.urlsafe_b64encode(b"o:").decode(),
    base64.urlsafe_b64encode(b"\xff\xfe:1").decode(),
])
def test_a_token_this_server_did_not_issue_is_refused(token):
    with pytest.raises(InvalidArgument) as e:
        paging.window(10, token, 0)
    assert e.value.reason == "INVALID_PAGE_TOKEN"
    assert [(v.field, v.description) for v in e.value.field_violations] == [("page_token", "not a token this server issued")]
