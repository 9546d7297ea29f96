"""RELIABILITY E2: how many costly JSON values a body may hold before it is refused unparsed.

Parsing costs by the value, not the byte, and it runs on the event loop with every other
request waiting (the bridge parses a body before the key is checked): 16 MiB of `[[],[],...]`
takes ~2 s in orjson, a million keys ~0.5 s, yet each fits the size limit. Objects, arrays and
keys (`{`, `[`, `:`) are the costly values, ~0.4 us each. The same bytes inside strings count
too and cost nothing to parse, so the bound sits above what a real prompt holds — a 1M-token
code dump (a packed repository for a long-context model) has some 200-300k — and a body under
it still parses in at most ~0.2 s. Bodies under the floor are not scanned: they cannot hold
that many.
"""

from __future__ import annotations

MAX_JSON_CONTAINERS = 500_000
SCAN_FLOOR_BYTES = 1024 * 1024
_NOT_COSTLY = bytes(b for b in range(256) if b not in b"[{:")


def costly_values(raw: bytes) -> int:
    """How many `{`, `[` and `:` a body over SCAN_FLOOR_BYTES holds (0 for a smaller one): one
    pass in C, ~1 ms per MB. Over MAX_JSON_CONTAINERS, the body is not to be parsed."""
    return len(raw.translate(None, _NOT_COSTLY)) if len(raw) > SCAN_FLOOR_BYTES else 0
