"""One mapping from gRPC status (and ErrorInfo reason) to HTTP status, and each surface's body.

Codes map once here; reasons refine where HTTP is more specific than gRPC (a provider that
rejected the gateway's key is 502, not 503; a body over the limit is 413, not 429).
"""

from __future__ import annotations

import datetime as dt
import math

import grpc
import orjson
from aiohttp import web

from tollgate.client import RpcErrorInfo

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
REASON_STATUS = {
    "PROVIDER_AUTH_FAILED": 502,
    "UPSTREAM_PROTOCOL_ERROR": 502,
    "UPSTREAM_STREAM_BROKEN": 502,
    "PAYLOAD_TOO_LARGE": 413,
    "VALIDATION_ERROR": 400,
    "LAST_ADMIN": 409,  # issue 16: ACCOUNTS_API.md's conflict
    "PLAN_IN_USE": 409,
    "PLAN_IN_CONFIG": 409,  # a config-declared plan cannot be deleted at run time
}
OPENAI_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
    409: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
    499: "api_error", 500: "api_error", 501: "api_error", 502: "api_error", 503: "api_error", 504: "timeout_error",
}
OPENAI_CODES = {
    "MODEL_NOT_FOUND": "model_not_found", "INVALID_API_KEY": "invalid_api_key", "API_KEY_REQUIRED": "missing_api_key",
    "RATE_LIMIT_EXCEEDED": "rate_limit_exceeded", "CONTEXT_LENGTH_EXCEEDED": "context_length_exceeded",
    "CONTENT_FILTERED": "content_filter", "UPSTREAM_RATE_LIMITED": "rate_limit_exceeded",
    "BUDGET_EXCEEDED": "insufficient_quota",  # issue 16: OpenAI's own code for a spending cap
}


class BridgeError(Exception):
    """An error found in the bridge itself (malformed body, size), before any RPC."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def http_status(info: RpcErrorInfo) -> int:
    return REASON_STATUS.get(info.reason) or HTTP_STATUS.get(info.code, 500)


def error_headers(info: RpcErrorInfo) -> dict[str, str]:
    h = {}
    if info.request_id:
        h["X-Request-Id"] = info.request_id
    if info.retry_after_s is not None:
        h["Retry-After"] = str(max(1, int(math.ceil(info.retry_after_s))))
    for part in ("limit", "remaining", "used", "reset"):
        # The core puts the caller's counters on every error after admission: headers on every answer.
        value = info.metadata.get("ratelimit_" + part)
        if value is not None:
            h["X-RateLimit-" + part.capitalize()] = value
    if "X-RateLimit-Limit" not in h and info.reason == "RATE_LIMIT_EXCEEDED" and "limit" in info.metadata:
        h["X-RateLimit-Limit"] = info.metadata["limit"]
        h["X-RateLimit-Remaining"] = "0"
        reset = info.metadata.get("reset_time")
        if reset:
            try:
                h["X-RateLimit-Reset"] = str(int(dt.datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp()))
            except ValueError:
                pass
    if http_status(info) >= 500 and info.code != grpc.StatusCode.UNIMPLEMENTED:
        # Our own retries are done; tell SDKs not to multiply them (RELIABILITY A7).
        h["x-should-retry"] = "false"
    return h


def openai_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": OPENAI_TYPES.get(status, "api_error"), "param": param, "code": code}})


def openai_error(info: RpcErrorInfo) -> web.Response:
    status = http_status(info)
    field = info.field_violations[0][0] if info.field_violations else None
    code = OPENAI_CODES.get(info.reason, info.reason.lower() if info.reason else None)
    body = openai_body(status, info.message, code, field)
    return web.Response(status=status, body=body, content_type="application/json", headers=error_headers(info))


def openai_bridge_error(e: BridgeError, request_id: str = "") -> web.Response:
    headers = {"X-Request-Id": request_id} if request_id else None
    return web.Response(status=e.status, body=openai_body(e.status, e.message, e.code, e.param),
                        content_type="application/json", headers=headers)


def stream_error_event(info: RpcErrorInfo) -> bytes:
    """The in-band error after a stream has started: never a stop chunk, never [DONE] (A6)."""
    status = http_status(info)
    return b"data: " + openai_body(status, info.message, OPENAI_CODES.get(info.reason, info.reason.lower() or None)) + b"\n\n"
