"""OpenAI's Responses API: POST /v1/responses (whole or SSE), GET and DELETE /v1/responses/{id}.

The body goes to ResponsesService as sent; the core translates, routes, meters and stores.
The bridge reads `stream` to pick the RPC, writes each event as `event:` + `data:` lines, and
ends a stream that broke after it began with the API's own `error` event (never a
`response.completed`). Codex's WebSocket transport (GET /v1/responses with an Upgrade) is
refused at once with 426, the status Codex takes as "no WebSocket here, use HTTP".
"""

from __future__ import annotations

import asyncio
import os
import time

import orjson
from aiohttp import hdrs, web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError, OPENAI_CODES, openai_body, openai_bridge_error, openai_error
from gateway_http.openai import codec
from gateway_http.sse import SSE_HEADERS, start_stream
from tollgate.client import RpcErrorInfo, error_info
from tollgate.v1 import responses_service_pb2 as rpb

SURFACE = "openai_responses"


async def create(request: web.Request) -> web.StreamResponse:
    t0 = time.monotonic()
    try:
        raw = await read_body(request)
        body = codec.load_json(raw)
    except BridgeError as e:
        return openai_bridge_error(e)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return openai_bridge_error(codec.invalid("Invalid type for 'stream': expected a boolean.", "stream"))
    client = calls.client(request)
    md = calls.metadata(request)
    if not stream:
        call = client.responses.CreateResponse(rpb.CreateResponseRequest(body=raw, surface=SURFACE),
                                               metadata=md, timeout=calls.timeout(request))
        try:
            resp = await call
        except AioRpcError as e:
            return openai_error(error_info(e))
        headers = await calls.response_headers(call, {hdrs.CONTENT_TYPE: "application/json"})
        headers[calls.LATENCY] = f"{(time.monotonic() - t0) * 1000:.1f}"
        return web.Response(body=resp.response, headers=headers)

    call = client.responses.StreamResponse(rpb.StreamResponseRequest(body=raw, surface=SURFACE),
                                           metadata=md, timeout=calls.timeout(request))
    response: web.StreamResponse | None = None
    sent = 0
    try:
        async for msg in call:
            if response is None:
                response = await start_stream(request, call, t0, SSE_HEADERS)
            await response.write(b"event: " + msg.type.encode() + b"\ndata: " + msg.data + b"\n\n")
            sent += 1
        if response is None:
            raise BridgeError(502, "upstream returned an empty stream")
        await response.write_eof()
    except AioRpcError as e:
        info = error_info(e)
        if response is None:
            return openai_error(info)
        await response.write_eof(error_event(info, sent))
    except BridgeError as e:
        return openai_bridge_error(e)
    except asyncio.CancelledError:
        raise
    finally:
        call.cancel()
    return response


def error_event(info: RpcErrorInfo, sequence_number: int) -> bytes:
    """The Responses API's in-band `error` event, after which the stream ends without completing."""
    err = orjson.loads(openai_body(500, info.message, OPENAI_CODES.get(info.reason, info.reason.lower() or None)))["error"]
    data = {"type": "error", "code": err["code"] or "server_error", "message": err["message"], "param": None,
            "sequence_number": sequence_number}
    return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"


async def get(request: web.Request) -> web.Response:
    call = calls.client(request).responses.GetResponse(rpb.GetResponseRequest(id=request.match_info["id"]),
                                                        metadata=calls.metadata(request), timeout=calls.timeout(request))
    try:
        resp = await call
    except AioRpcError as e:
        return openai_error(error_info(e))
    out = web.Response(body=resp.response, content_type="application/json")
    await calls.copy_headers(call, out)
    return out


async def delete(request: web.Request) -> web.Response:
    rid = request.match_info["id"]
    call = calls.client(request).responses.DeleteResponse(rpb.DeleteResponseRequest(id=rid),
                                                           metadata=calls.metadata(request), timeout=calls.timeout(request))
    try:
        resp = await call
    except AioRpcError as e:
        return openai_error(error_info(e))
    out = web.Response(body=orjson.dumps({"id": resp.id, "object": "response", "deleted": resp.deleted}),
                       content_type="application/json")
    await calls.copy_headers(call, out)
    return out


async def websocket_refused(request: web.Request) -> web.Response:
    """Codex's `OpenAI-Beta: responses_websockets=…` upgrade: not served, refused at once as final.

    426 is what Codex's own test servers answer when they have no WebSocket transport; it then
    uses POST + SSE for the session instead of retrying the upgrade for 5-10 s."""
    return web.Response(status=426, content_type="application/json",
                        headers={"Connection": "close", "X-Request-Id": "req_" + os.urandom(10).hex()},
                        body=openai_body(426, "This gateway serves the Responses API over HTTP (POST /v1/responses "
                                              "with stream=true), not over WebSocket.", "websocket_not_supported"))


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/responses", create)
        app.router.add_get(prefix + "/responses", websocket_refused)
        app.router.add_get(prefix + "/responses/{id}", get)
        app.router.add_delete(prefix + "/responses/{id}", delete)
