"""Reading a capped request body: 413 before reading when Content-Length says it is too big, and
400 before parsing when a JSON body holds more values than can be parsed without stalling."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway_http.errors import BridgeError
from gateway_http.state import BRIDGE
from tollgate.json_bound import too_complex


async def read_body(request: web.Request, *, json: bool = True, bridge: Any = None) -> bytes:
    """The body; `json`: it is parsed as JSON next, so one that would stall the loop is refused.
    `bridge`: the app's Bridge when the caller holds it (each request.app costs two Python calls)."""
    limit = (bridge or request.app[BRIDGE]).settings.max_body_bytes
    length = request.content_length  # parsed from the header on every read: once
    if length is not None and length > limit:
        raise BridgeError(413, f"Request body too large: {length} bytes > {limit} bytes.", code="request_too_large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BridgeError(413, f"Request body too large: more than {limit} bytes.", code="request_too_large") from None
    if json:
        why = too_complex(raw)  # RELIABILITY E2: clients/tollgate/json_bound.py
        if why is not None:
            raise BridgeError(400, why + " Send large data as fewer, larger strings, or split the request.",
                              code="invalid_request_error")
    return raw
