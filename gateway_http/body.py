"""Reading a capped request body: 413 before reading when Content-Length says it is too big, and
400 before parsing when a JSON body holds more values than can be parsed without stalling."""

from __future__ import annotations

from aiohttp import web

from gateway_http.errors import BridgeError
from gateway_http.state import BRIDGE

# RELIABILITY E2. Parsing costs by the value, not the byte, and it runs on the event loop with
# every other request waiting (the body is parsed before the key is checked): 16 MiB of
# `[[],[],...]` takes ~2 s in orjson, a million keys ~0.5 s, yet each fits the size limit.
# Objects, arrays and keys (`{`, `[`, `:`) are the costly values, ~0.4 us each. The same bytes
# inside strings count too and cost nothing to parse, so the bound sits above what a real
# prompt holds — a 1M-token code dump (a packed repository for a long-context model) has some
# 200-300k — and a body under it still parses in at most ~0.2 s. Bodies under the floor are not
# scanned: they cannot hold that many.
MAX_JSON_CONTAINERS = 500_000
SCAN_FLOOR_BYTES = 1024 * 1024
_NOT_COSTLY = bytes(b for b in range(256) if b not in b"[{:")


async def read_body(request: web.Request, *, json: bool = True) -> bytes:
    """The body; `json`: it is parsed as JSON next, so one that would stall the loop is refused."""
    limit = request.app[BRIDGE].settings.max_body_bytes
    length = request.content_length  # parsed from the header on every read: once
    if length is not None and length > limit:
        raise BridgeError(413, f"Request body too large: {length} bytes > {limit} bytes.", code="request_too_large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BridgeError(413, f"Request body too large: more than {limit} bytes.", code="request_too_large") from None
    if json and len(raw) > SCAN_FLOOR_BYTES:
        costly = len(raw.translate(None, _NOT_COSTLY))  # one pass in C, ~1 ms per MB
        if costly > MAX_JSON_CONTAINERS:
            raise BridgeError(400, f"The JSON body is too complex: more than {MAX_JSON_CONTAINERS:,} objects, arrays "
                                   f"and keys ({costly:,} found). Send large data as fewer, larger strings, or split the request.",
                              code="invalid_request_error")
    return raw
