"""clients/tollgate/json_bound.py: the E2 counts the bridge, the pass-through and /ws share."""

from __future__ import annotations

import json
import re

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.json_bound import (
    KEY_SCAN_FLOOR_BYTES, MAX_JSON_CONTAINERS, MAX_JSON_KEYS, SCAN_FLOOR_BYTES, costly_values, json_keys, too_complex,
)

PAD = "x" * KEY_SCAN_FLOOR_BYTES  # a string value that lifts any body over the key scan's floor


def test_small_bodies_are_not_scanned_and_large_ones_count_every_costly_byte() -> None:
    small = b"[" * (SCAN_FLOOR_BYTES // 2)
    assert costly_values(small) == 0  # under the floor: cannot hold too many, not scanned
    big = b'{"a":[' * (SCAN_FLOOR_BYTES // 6 + 1)
    assert costly_values(big) == 3 * (SCAN_FLOOR_BYTES // 6 + 1)  # {, : and [ each count, inside strings too
    assert costly_values(b"[]," * (MAX_JSON_CONTAINERS + 1)) > MAX_JSON_CONTAINERS
    assert costly_values(b'"' + b"x" * (4 * SCAN_FLOOR_BYTES) + b'"') == 0  # plain text is free


def test_keys_are_counted_outside_escapes_and_whitespace() -> None:
    body = '{"a\\\\": 1, "b\\": x": 2, "c" \n : 3, "d\\\\\\":": 4, "e": "\\": \\":", "pad": "%s"}' % PAD
    assert sorted(orjson.loads(body)) == ["a\\", 'b": x', "c", 'd\\":', "e", "pad"]
    assert json_keys(body.encode()) == 6
    # A smallest-possible key is 5 bytes: a body under the floor cannot hold MAX_JSON_KEYS of them.
    assert KEY_SCAN_FLOOR_BYTES < 5 * MAX_JSON_KEYS
    assert json_keys(b"{" + b'"":0,' * ((KEY_SCAN_FLOOR_BYTES - 1) // 5)) == 0


def test_too_complex_names_the_bound_it_broke() -> None:
    many = b"{" + b", ".join(b'"k%d": %d' % (i, i) for i in range(MAX_JSON_KEYS + 1)) + b"}"
    assert "too many keys" in too_complex(many)
    assert too_complex(b"{" + b", ".join(b'"k%d": %d' % (i, i) for i in range(MAX_JSON_KEYS)) + b"}") is None
    assert "too complex" in too_complex(b"[" + b",".join([b"[]"] * (MAX_JSON_CONTAINERS + 1)) + b"]")
    # The same keys as text inside a prompt cost nothing to parse and are not counted.
    assert too_complex(orjson.dumps({"messages": [{"role": "user", "content": many.decode()}]})) is None


def _strings(doc):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield k
            yield from _strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _strings(v)
    elif isinstance(doc, str):
        yield doc


def _keys(doc) -> int:
    if isinstance(doc, dict):
        return len(doc) + sum(_keys(v) for v in doc.values())
    if isinstance(doc, list):
        return sum(_keys(v) for v in doc)
    return 0


TEXT = st.text(st.sampled_from('ab:"\\ \n\t{}[]\u00e9\u2028'), max_size=12)
DOCS = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(doc=DOCS, indent=st.sampled_from([None, 1]), ascii_only=st.booleans())
def test_never_fewer_keys_than_the_body_holds(doc, indent, ascii_only) -> None:
    """However strings are escaped and the body is spaced: never an undercount (a 100k-key body can't
    slip through), and exact unless a string starts with ':' (spaces aside: they go before counting)
    or a `":` follows five or more backslashes."""
    body = {"pad": PAD, "doc": doc}
    raw = json.dumps(body, indent=indent, ensure_ascii=ascii_only).encode()
    true = _keys(body)
    counted = json_keys(raw)
    assert counted >= true
    colon_first = any(x.lstrip(" ").startswith(":") for x in _strings(body))
    long_run = re.search(rb'\\{5,}":', raw.translate(None, b" \t\r\n"))
    if not colon_first and not long_run:
        assert counted == true
