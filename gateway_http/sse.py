"""Starting an SSE response once the first message of a stream is in hand."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import hdrs, web
from multidict import istr

from gateway_http import calls
from gateway_http.state import BRIDGE

# istr names: the response's multidict is built from these on every stream, without folding them again.
SSE_HEADERS = {hdrs.CONTENT_TYPE: "text/event-stream", hdrs.CACHE_CONTROL: "no-cache", istr("X-Accel-Buffering"): "no"}


async def start_stream(request: web.Request, call: Any, t0: float, headers: dict[str, str]) -> web.StreamResponse:
    """Headers (request id, route, rate limits, time to first token) then prepare."""
    response = web.StreamResponse(status=200, headers=headers)
    extra = await calls.response_headers(call, {})
    extra[calls.LATENCY] = f"{(time.monotonic() - t0) * 1000:.1f}"
    response.headers.update(extra)  # one update, replacing as item assignment would
    await response.prepare(request)
    request.app[BRIDGE].stalls.watch(request)
    return response
