"""The incremental SSE parser: any chunking gives the same events (RELIABILITY E3, E4)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.providers.sse import SSEParser, encode

STREAM = (
    b": ping\n\n"
    b"event: message_start\ndata: {\"a\":1}\n\n"
    b"data: {\"t\":\"\xf0\x9f\x98\x80 emoji\"}\r\n\r\n"
    b"data: line1\rdata: line2\r\r"
    b"data: {\"u\":\"\xe2\x80\xa8sep\"}\n\n"
    b"id: 7\nretry: 10\ndata:nospace\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ("message_start", b'{"a":1}'),
    ("", '{"t":"😀 emoji"}'.encode()),
    ("", b"line1\nline2"),
    ("", '{"u":"\u2028sep"}'.encode()),
    ("", b"nospace"),
    ("", b"[DONE]"),
]


def parse_in(pieces: list[bytes]) -> list[tuple[str, bytes]]:
    p = SSEParser()
    out = []
    for piece in pieces:
        out += [(e.event, e.data) for e in p.feed(piece)]
    out += [(e.event, e.data) for e in p.close()]
    return out


def test_whole_stream_at_once():
    assert parse_in([STREAM]) == EXPECTED


def test_byte_by_byte():
    assert parse_in([STREAM[i:i + 1] for i in range(len(STREAM))]) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_any_chunking_gives_the_same_events(cuts):
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0] + points, points + [len(STREAM)])]
    assert parse_in(pieces) == EXPECTED


def test_unterminated_last_event_is_kept_on_close():
    assert parse_in([b"data: a\n\ndata: b"]) == [("", b"a"), ("", b"b")]


def test_encode_round_trips():
    assert parse_in([encode(b'{"x":1}', "ping"), encode(b"[DONE]")]) == [("ping", b'{"x":1}'), ("", b"[DONE]")]


def test_large_event_in_small_crlf_reads():
    # Fed 256 bytes at a time with CRLF ends: only new bytes are normalised and searched.
    payload = b"data: " + b"x" * (1 << 20) + b"\r\n\r\n"
    p = SSEParser()
    events = []
    for i in range(0, len(payload), 256):
        events += p.feed(payload[i:i + 256])
        assert p.pending <= len(payload)
    assert len(events) == 1 and len(events[0].data) == 1 << 20


def test_event_over_the_limit_is_refused():
    p = SSEParser(max_event_bytes=1024)
    try:
        p.feed(b"data: " + b"x" * 2048)
    except ValueError as e:
        assert "limit" in str(e)
    else:
        raise AssertionError("an oversized event must be refused")


def test_cr_only_event_is_delivered_in_the_read_that_ends_it():
    p = SSEParser()
    assert [e.data for e in p.feed(b"data: a\r\r")] == [b"a"]
    assert [e.data for e in p.feed(b"\ndata: b\r\n\r\n")] == [b"b"]


def test_leading_bom_and_data_less_events_are_dropped():
    assert parse_in([b"\xef\xbb\xbfdata: x\n\nevent: lonely\n\n"]) == [("", b"x")]
