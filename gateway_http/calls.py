"""What every handler does around an RPC: credentials to metadata, metadata to headers."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import istr

from gateway_http.state import BRIDGE
from gateway_http.traced import TRACEPARENT
from tollgate.inprocess import LOCAL_CALLS

# Headers forwarded as gRPC metadata; nothing else of the caller's reaches the servicers.
# istr names: a case-insensitive lookup of an istr skips folding the name again on every request.
CREDENTIAL_HEADERS = ((istr("Authorization"), "authorization"), (istr("X-API-Key"), "x-api-key"),
                      (istr("X-Admin-Key"), "x-admin-key"))
# istr names again: setting them in a response's CIMultiDict costs half as much as plain str.
RESPONSE_HEADERS = {k: istr(v) for k, v in {
    "x-request-id": "X-Request-Id", "x-ratelimit-limit": "X-RateLimit-Limit", "x-ratelimit-remaining": "X-RateLimit-Remaining",
    "x-ratelimit-used": "X-RateLimit-Used", "x-ratelimit-reset": "X-RateLimit-Reset", "x-llm-provider": "X-LLM-Provider",
    "x-llm-model": "X-LLM-Model", "x-llm-key-id": "X-LLM-Key-ID", "x-tollgate-route": "X-Tollgate-Route",
    "x-tollgate-ignored": "X-Tollgate-Ignored",
}.items()}
LATENCY = istr("X-LLM-Latency-Ms")
# Issue 16: the console's session cookie stands in for a bearer header that is not there; a write
# that came by cookie carries the X-CSRF-Token header's value (possibly empty) for the core to check.
SESSION_COOKIE = "tg_session"
CSRF_COOKIE = "tg_csrf"
CSRF_HEADER = istr("X-CSRF-Token")
UNSAFE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))


FORWARDED = "x-forwarded-for"


def metadata(request: web.Request, bridge: Any = None) -> tuple[tuple[str, str], ...]:
    """`bridge`: the app's Bridge when the caller holds it (each request.app costs two Python calls)."""
    h = request.headers
    md: tuple[tuple[str, str], ...] = ()
    for name, key in CREDENTIAL_HEADERS:  # a loop, not a comprehension: no function call per request
        v = h.get(name)
        if v is not None:
            md += ((key, v),)
    if (bridge or request.app[BRIDGE]).tracing is not None:
        return _with_traceparent(request, md)
    return _metadata(request, h, md)


def _with_traceparent(request: web.Request, md: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Traces on: the bridge span's W3C traceparent (gateway_http/traced.py) rides along to the core."""
    md = _metadata(request, request.headers, md)
    tp = request.get(TRACEPARENT)
    return md + (("traceparent", tp),) if tp else md


def _metadata(request: web.Request, h: Any, md: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    if not md and (cookie := request.cookies.get(SESSION_COOKIE)):
        md = (("authorization", "Bearer " + cookie),)
        if request.method in UNSAFE_METHODS:
            md += (("x-tollgate-csrf", h.get(CSRF_HEADER, "")),)
    elif not md or md[0][0] != "authorization":  # Authorization comes first when it is there
        # Seed 002's AUTH_HEADER_NAME lets a deployment take the key from another header.
        alt = request.app[BRIDGE].auth_header
        if alt and alt in h:
            md += (("x-api-key", h[alt].removeprefix("Bearer ").strip()),)
    if request.path.startswith("/api/admin"):
        md += client_info(request)  # the audit log's "from where" (issue 16)
    # The client's address, after any credentials: seed 004's open mode admits a keyless call by
    # it, and the core counts failed authentications by it (issue 15 point 5). The core decides
    # which forwarded address to believe (services/limits/open_gate.py); this hop adds its own.
    fwd = request.headers.get("X-Forwarded-For")  # forwarded(request), written out: once per request
    remote = request.remote or ""
    return md + ((FORWARDED, f"{fwd}, {remote}" if fwd else remote),)


def forwarded(request: web.Request) -> tuple[tuple[str, str], ...]:
    fwd = request.headers.get("X-Forwarded-For")
    return ((FORWARDED, f"{fwd}, {request.remote or ''}" if fwd else request.remote or ""),)


def client_info(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The caller's address and User-Agent, for a new session's row (sign-in routes only)."""
    ua = request.headers.get("User-Agent", "")
    ua = ua if ua.isascii() and ua.isprintable() else ""
    return (("x-tollgate-client-ip", request.remote or ""), ("x-tollgate-user-agent", ua[:300]))


def timeout(request: web.Request) -> float:
    return request.app[BRIDGE].settings.request_timeout_s


async def response_headers(call: Any, into: dict[str, str]) -> dict[str, str]:
    """Adds the call's response headers (request id, route, rate limits) to `into`, in metadata order.
    A value that would not be a clean header line is dropped (RELIABILITY E9)."""
    # The in-process channel hands over its pairs as they are, instead of a grpc.aio.Metadata
    # built and walked for every answer.
    pairs = call.initial_pairs() if type(call) in LOCAL_CALLS else await call.initial_metadata() or ()
    return headers_from(pairs, into)


def response_headers_now(call: Any, into: dict[str, str]) -> dict[str, str] | None:
    """response_headers() without a coroutine for an in-process call; None for a real channel's
    (await response_headers() then)."""
    return headers_from(call.initial_pairs(), into) if type(call) in LOCAL_CALLS else None


def headers_from(pairs: Any, into: dict[str, str]) -> dict[str, str]:
    """`into` plus the response headers among metadata `pairs` (see response_headers)."""
    get = RESPONSE_HEADERS.get
    if not pairs:
        return into
    # The usual answer: every value a clean str. Checked once over all of them joined (printable
    # ASCII each exactly when the whole is), and the names mapped in C: a dozen pairs per
    # answer, no Python loop. Any other mix (bytes, a control character) takes the loop below.
    keys, values = zip(*pairs)
    try:
        joined = "".join(values)
    except TypeError:
        joined = "\n"
    if joined.isascii() and joined.isprintable():
        into.update(zip(map(get, keys), values))
        into.pop(None, None)  # metadata that is not a response header
        return into
    for k, v in pairs:
        name = get(k)
        if name and isinstance(v, str) and v.isascii() and v.isprintable():
            into[name] = v
    return into


async def copy_headers(call: Any, response: web.StreamResponse) -> None:
    # One update sets them all (replacing as item assignment would) instead of a store per header.
    response.headers.update(await response_headers(call, {}))


def client(request: web.Request) -> Any:
    return request.app[BRIDGE].client
