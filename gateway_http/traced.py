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


class WsTurn:
    """The span of one WebSocket message on /ws (gateway_http/seeds/ws.py), only when traces are on.

    The connection's span (the middleware above, `GET /ws`) lasts as long as the socket; each
    message gets its own SERVER span under it, named `WS /ws <type>` for the protocol's known
    types, with the bridge span's attributes: the route, scheme and port, and as
    `http.response.status_code` the code of the `error` frame the message earned (200 when it
    got none). The core call the message makes carries this span's traceparent, so the
    pipeline's spans hang under the message, not under the connection.
    """

    __slots__ = ("span", "status", "traceparent")

    def __init__(self, tracing: Tracing, request: web.Request) -> None:
        self.span = tracing.start("WS /ws", Tracing.extract(request.get(TRACEPARENT)), SpanKind.SERVER,
                                  {"http.route": "/ws", "url.scheme": request.scheme, "server.port": request.url.port or 0})
        self.status = 200
        self.traceparent = Tracing.traceparent(self.span)

    def named(self, kind: str) -> None:
        """The message's type, once parsed; only a type of the protocol names the span (bounded names)."""
        self.span.update_name(f"WS /ws {kind}")
        self.span.set_attribute("tollgate.ws.message_type", kind)

    def metadata(self, md: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """`md` with this message's traceparent in place of any other."""
        kept = tuple(p for p in md if p[0] != "traceparent")
        return kept + (("traceparent", self.traceparent),) if self.traceparent else kept

    def end(self, cancelled: bool = False) -> None:
        span = self.span
        span.set_attribute("http.response.status_code", self.status)
        if cancelled:  # the socket went away mid-answer: the caller's doing, not a failure
            span.set_attribute("tollgate.ws.cancelled", True)
        elif self.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(self.status))
        span.end()
