"""RELIABILITY E2: how many costly JSON values a body may hold before it is refused unparsed.

Parsing costs by the value, not the byte, and it runs on the event loop with every other
request waiting (the bridge parses a body before the key is checked): 16 MiB of `[[],[],...]`
takes ~2 s in orjson, 100k keys 26-110 ms, yet each fits the size limit. Two counts, each a few
passes in C, bound it:

- Keys. E2's 100k-key body must be refused within 50 ms, and its parse alone can take longer.
  `json_keys` counts key ends (`"` then `:`) outside escapes; no real chat request comes near
  MAX_JSON_KEYS (2,048 messages of a handful of keys, 128 tool schemas).
- Objects, arrays and keys (`{`, `[`, `:`), ~0.4 us each to parse, counted inside strings too, so
  that bound sits above what a real prompt holds — a 1M-token code dump (a packed repository for
  a long-context model) has some 200-300k — and a body under it parses in at most ~0.2 s.

Bodies under each count's floor are not scanned: they cannot hold that many.
"""

from __future__ import annotations

MAX_JSON_CONTAINERS = 500_000
SCAN_FLOOR_BYTES = 1024 * 1024
MAX_JSON_KEYS = 50_000
# The shortest key is 5 bytes (`"":0,`): a body this small holds fewer than MAX_JSON_KEYS.
KEY_SCAN_FLOOR_BYTES = 200 * 1024
_NOT_COSTLY = bytes(b for b in range(256) if b not in b"[{:")
_WHITESPACE = b" \t\r\n"


def costly_values(raw: bytes) -> int:
    """How many `{`, `[` and `:` a body over SCAN_FLOOR_BYTES holds (0 for a smaller one): one
    pass in C, ~1 ms per MB. Over MAX_JSON_CONTAINERS, the body is not to be parsed."""
    return len(raw.translate(None, _NOT_COSTLY)) if len(raw) > SCAN_FLOOR_BYTES else 0


def json_keys(raw: bytes) -> int:
    """How many object keys a body over KEY_SCAN_FLOOR_BYTES holds, or more, never fewer (0 for a
    smaller one); a few ms per MB.

    With JSON's whitespace gone, a key ends at `":`, unless that quote is escaped: preceded by an
    odd run of backslashes. Counting `":` after 0, 1, 2, 3 and 4 backslashes with alternating signs
    counts each `":` once when its run is even and not at all when it is odd; a run longer than
    four counts once either way. A string value starting with `:` counts too: an overcount.
    (A regex doing the same takes ~100 ms per MB.)"""
    if len(raw) <= KEY_SCAN_FLOOR_BYTES:
        return 0
    s = raw.translate(None, _WHITESPACE)
    n = s.count(b'":')
    # Each longer pattern contains the shorter one: once one is absent, so are the rest.
    for sign, run in ((-1, b'\\":'), (1, b'\\\\":'), (-1, b'\\\\\\":'), (1, b'\\\\\\\\":')):
        c = s.count(run)
        if not c:
            break
        n += sign * c
    return n


def too_complex(raw: bytes) -> str | None:
    """Why `raw` is not to be parsed (a sentence for the caller), or None. The cheapest pass runs
    first: every key has a colon, so a body with few colons needs no key count."""
    costly = costly_values(raw)
    if costly > MAX_JSON_CONTAINERS:
        return (f"The JSON body is too complex: more than {MAX_JSON_CONTAINERS:,} objects, arrays "
                f"and keys ({costly:,} found).")
    if len(raw) > KEY_SCAN_FLOOR_BYTES and raw.count(b":") > MAX_JSON_KEYS:
        keys = json_keys(raw)
        if keys > MAX_JSON_KEYS:
            return f"The JSON body has too many keys: more than {MAX_JSON_KEYS:,} ({keys:,} found)."
    return None
