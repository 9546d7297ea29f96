"""Errors in Anthropic's shape: {"type": "error", "error": {"type", "message"}}.

HTTP status and headers come from gateway_http/errors.py (one mapping for every surface);
only the body is Anthropic's. Types follow Anthropic's error reference.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway_http.errors import BridgeError, error_headers, http_status
from tollgate.client import RpcErrorInfo

TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    409: "invalid_request_error", 413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error",
    499: "api_error", 500: "api_error", 501: "api_error", 502: "api_error", 503: "overloaded_error",
    504: "timeout_error", 529: "overloaded_error",
}


def error_type(status: int) -> str:
    return TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def body(status: int, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type(status), "message": message}})


def rpc_error(info: RpcErrorInfo) -> web.Response:
    status = http_status(info)
    headers = error_headers(info)
    if info.request_id:
        headers["request-id"] = info.request_id  # where the anthropic SDK looks for it
    return web.Response(status=status, body=body(status, info.message), content_type="application/json",
                        headers=headers)


def bridge_error(e: BridgeError) -> web.Response:
    return web.Response(status=e.status, body=body(e.status, e.message), content_type="application/json")


def stream_error_event(info: RpcErrorInfo) -> bytes:
    """The in-band error after message_start: never message_stop after it (RELIABILITY A6)."""
    status = http_status(info)
    kind = "overloaded_error" if status in (429, 503, 529) else "api_error"
    return b"event: error\ndata: " + orjson.dumps({"type": "error", "error": {"type": kind, "message": info.message}}) + b"\n\n"
