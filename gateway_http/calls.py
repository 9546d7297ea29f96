"""What every handler does around an RPC: credentials to metadata, metadata to headers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway_http.state import BRIDGE

# Headers forwarded as gRPC metadata; nothing else of the caller's reaches the servicers.
CREDENTIAL_HEADERS = (("Authorization", "authorization"), ("X-API-Key", "x-api-key"), ("X-Admin-Key", "x-admin-key"))
RESPONSE_HEADERS = {
    "x-request-id": "X-Request-Id", "x-ratelimit-limit": "X-RateLimit-Limit", "x-ratelimit-remaining": "X-RateLimit-Remaining",
    "x-ratelimit-used": "X-RateLimit-Used", "x-ratelimit-reset": "X-RateLimit-Reset", "x-llm-provider": "X-LLM-Provider",
    "x-llm-model": "X-LLM-Model", "x-llm-key-id": "X-LLM-Key-ID", "x-tollgate-route": "X-Tollgate-Route",
}


def metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    h = request.headers
    md = tuple((key, h[name]) for name, key in CREDENTIAL_HEADERS if name in h)
    if "authorization" not in (k for k, _ in md):
        # Seed 002's AUTH_HEADER_NAME lets a deployment take the key from another header.
        alt = request.app[BRIDGE].auth_header
        if alt and alt in h:
            md += (("x-api-key", h[alt].removeprefix("Bearer ").strip()),)
    return md


def timeout(request: web.Request) -> float:
    return request.app[BRIDGE].settings.request_timeout_s


async def copy_headers(call: Any, response: web.StreamResponse) -> None:
    for k, v in await call.initial_metadata() or ():
        name = RESPONSE_HEADERS.get(k)
        if name and isinstance(v, str) and v.isprintable() and v.isascii():
            response.headers[name] = v


def client(request: web.Request) -> Any:
    return request.app[BRIDGE].client
