"""Middleware: drain refusals, CORS (off unless configured), and the last-resort error net."""

from __future__ import annotations

import logging
import os

from aiohttp import hdrs, web
from multidict import istr

from gateway_http.errors import openai_body
from gateway_http.state import BRIDGE

log = logging.getLogger("tollgate.bridge")

ALWAYS_OPEN = ("/health", "/metrics")
REQUEST_ID = istr("X-Request-Id")  # an istr is looked up without folding its case again


@web.middleware
async def guard(request: web.Request, handler):
    b = request.app[BRIDGE]
    if b.draining and not request.path.startswith(ALWAYS_OPEN):
        return web.Response(status=503, body=openai_body(503, "The gateway is shutting down; retry shortly.", "shutting_down"),
                            content_type="application/json", headers={"Retry-After": "1"})
    origins = b.settings.cors_origins
    # Without CORS configured (the default) no request is a CORS one: no Origin to look up.
    origin = request.headers.get(hdrs.ORIGIN) if origins else None
    cors = origin and (origin in origins or "*" in origins)
    if cors and request.method == "OPTIONS":
        return web.Response(status=204, headers=_cors(origin))
    try:
        response = await handler(request)
    except web.HTTPException as e:
        if e.status >= 400:
            # aiohttp's own 404/405/413 pages become JSON errors in the OpenAI shape.
            message = {404: "Not found", 405: "Method not allowed", 413: "Request body too large"}.get(e.status, e.reason)
            headers = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
            headers["X-Request-Id"] = "req_" + os.urandom(10).hex()
            return web.Response(status=e.status, body=openai_body(e.status, message), content_type="application/json",
                                headers=headers)
        raise
    except ConnectionResetError:
        # The client left mid-answer and a write found its socket reset before aiohttp cancelled
        # the handler: the handler's `finally` has cancelled its call (metered client_cancelled).
        # Nobody is left to answer; aiohttp drops this response quietly.
        log.debug("client left during %s %s", request.method, request.path)
        return web.Response(status=499)
    except Exception:
        rid = "req_" + os.urandom(10).hex()
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path, rid)
        return web.Response(status=500, body=openai_body(500, "Internal error in the bridge."), content_type="application/json",
                            headers={"X-Request-Id": rid})
    if cors:
        response.headers.update(_cors(origin))
    if REQUEST_ID not in response.headers and not response.prepared:
        # Errors the bridge answers itself (bad JSON, 413, unknown route) never reached a servicer;
        # they still get an id to quote (SPEC: every response carries X-Request-Id).
        response.headers[REQUEST_ID] = "req_" + os.urandom(10).hex()
    return response


def _cors(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, X-API-Key",
        "Access-Control-Expose-Headers": "X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset",
        "Vary": "Origin",
    }
