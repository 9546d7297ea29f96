"""The bridge's span per HTTP request (only when traces are on: make_app adds this middleware then,
and not at all otherwise).

A SERVER span named `METHOD route` (the route's pattern, never the raw path), a child of the
caller's W3C `traceparent` header when it sends one. Its own traceparent goes to the core in the
call's gRPC metadata (calls.metadata), so the core's spans, and the provider requests after them,
continue the caller's trace. Attributes are HTTP semantic conventions; no header, query or body.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tollgate.tracing import SpanKind, Status, StatusCode, Tracing

TRACEPARENT = web.RequestKey("tg_traceparent", str)  # this request's span, as the core's parent


def traced(tracing: Tracing) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler):
        route = request.match_info.route.resource
        pattern = route.canonical if route is not None else "unmatched"
        span = tracing.start(f"{request.method} {pattern}", tracing.extract(request.headers.get("traceparent"),
                                                                         request.headers.get("tracestate")),
                             SpanKind.SERVER, {"http.request.method": request.method, "http.route": pattern,
                                               "url.scheme": request.scheme, "server.port": request.url.port or 0})
        request[TRACEPARENT] = Tracing.traceparent(span)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", str(status))
            span.end()

    return middleware
