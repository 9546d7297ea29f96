"""Requests that do not parse: INVALID_ARGUMENT with reason MALFORMED_REQUEST, not UNKNOWN.

grpc.aio deserializes a request before any servicer code runs; random bytes, a string that is
not UTF-8, a length past the end or nesting past the recursion limit raise there, and grpc
answers UNKNOWN "Unexpected <class DecodeError>" (RELIABILITY E6). This interceptor registers
each tollgate.v1 method with a deserializer that never raises (it hands a marker instead) and
answers the marker with the same google.rpc.Status the Guard gives any bad argument.

Only the real gRPC server needs it: the in-process channel passes messages, never bytes.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import grpc

from services.core.errors import FieldViolation, InvalidArgument
from services.pipeline import new_request_id
from services.rpc.interceptors import status_for

PACKAGE_PREFIX = "/tollgate.v1."


class _Malformed:
    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _safe(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except Exception as e:  # DecodeError, RecursionError, UnicodeDecodeError: all "does not parse"
            return _Malformed(type(e).__name__)
    return deserialize


async def _refuse(context: Any, bad: _Malformed, method: str) -> None:
    e = InvalidArgument(f"the request is not a valid {method} message ({bad.error})", reason="MALFORMED_REQUEST",
                        field_violations=[FieldViolation("request", "does not parse as the method's request message")])
    code, message, md = status_for(e, new_request_id())
    await context.abort(code, message, trailing_metadata=md)


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    if handler.request_streaming or handler.request_deserializer is None:
        return handler  # tollgate.v1 has no client-streaming methods
    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            if type(request) is _Malformed:
                await _refuse(context, request, method)
            return await inner_unary(request, context)

        return handler._replace(request_deserializer=_safe(handler.request_deserializer), unary_unary=unary)
    inner_stream = handler.unary_stream

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        if type(request) is _Malformed:
            await _refuse(context, request, method)
        async for message in inner_stream(request, context):
            yield message

    return handler._replace(request_deserializer=_safe(handler.request_deserializer), unary_stream=stream)


class MalformedRequests(grpc.aio.ServerInterceptor):
    """Wraps each tollgate.v1 method's handler once (cached by method name)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        if not method.startswith(PACKAGE_PREFIX):
            return await continuation(details)
        if method not in self._wrapped:
            handler = await continuation(details)
            self._wrapped[method] = _wrap(handler, method.rsplit("/", 1)[-1]) if handler is not None else None
        return self._wrapped[method]
