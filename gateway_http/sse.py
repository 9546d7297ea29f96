"""Starting an SSE response once the first message of a stream is in hand."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gateway_http import calls

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def start_stream(request: web.Request, call: Any, t0: float, headers: dict[str, str]) -> web.StreamResponse:
    """Headers (request id, route, rate limits, time to first token) then prepare."""
    response = web.StreamResponse(status=200, headers=headers)
    await calls.copy_headers(call, response)
    response.headers["X-LLM-Latency-Ms"] = f"{(time.monotonic() - t0) * 1000:.1f}"
    await response.prepare(request)
    return response
