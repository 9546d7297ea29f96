"""Reading a capped request body: 413 before reading when Content-Length says it is too big."""

from __future__ import annotations

from aiohttp import web

from gateway_http.errors import BridgeError
from gateway_http.state import BRIDGE


async def read_body(request: web.Request) -> bytes:
    limit = request.app[BRIDGE].settings.max_body_bytes
    length = request.content_length  # parsed from the header on every read: once
    if length is not None and length > limit:
        raise BridgeError(413, f"Request body too large: {length} bytes > {limit} bytes.", code="request_too_large")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BridgeError(413, f"Request body too large: more than {limit} bytes.", code="request_too_large") from None
