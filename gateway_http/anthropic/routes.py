"""The Anthropic-compatible surface: POST /v1/messages (stream and not), /v1/messages/count_tokens.

Routed like any chat, so the anthropic SDK with base_url at the bridge reaches every configured
model. The key comes from `x-api-key` or `Authorization: Bearer` (the SDK sends the latter);
any `anthropic-version` is accepted.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.anthropic import codec, errors
from gateway_http.body import read_body
from gateway_http.errors import BridgeError
from gateway_http.sse import SSE_HEADERS, start_stream
from tollgate.client import error_info
from tollgate.v1 import inference_service_pb2 as ipb


async def messages(request: web.Request) -> web.StreamResponse:
    t0 = time.monotonic()
    try:
        raw = await read_body(request)
        body = codec.load_json(raw)
        beta = request.headers.get("anthropic-beta")
        # Anthropic's own fields (services/fidelity.py): an Anthropic route gets the body as sent.
        relay = not body.keys() <= codec.KNOWN_FIELDS or beta is not None or b"cache_control" in raw
        extras: list[str] = []
        inp = codec.chat_input(body, extras=extras)
    except BridgeError as e:
        return errors.bridge_error(e)
    if relay or extras or b'"thinking"' in raw:  # thinking blocks carry Anthropic's signatures back to it
        inp.raw_body = raw
        inp.extra_fields.extend([k for k in body if k not in codec.KNOWN_FIELDS] + extras)
        if b"cache_control" in raw:
            inp.extra_fields.append("cache_control")
        for name in ("anthropic-version", "anthropic-beta"):
            if (v := request.headers.get(name)) is not None:
                inp.raw_headers[name] = v
        if beta is not None:
            inp.extra_fields.append("anthropic-beta")
    thinking = codec.wants_thinking(body)
    client = calls.client(request)
    md = calls.metadata(request)
    if not body.get("stream"):
        call = client.inference.Chat(ipb.ChatRequest(input=inp), metadata=md, timeout=calls.timeout(request))
        try:
            resp = await call
        except AioRpcError as e:
            return errors.rpc_error(error_info(e))
        out = web.Response(body=resp.raw or codec.message_json(resp, inp.model, thinking), content_type="application/json")
        await calls.copy_headers(call, out)
        out.headers["request-id"] = resp.id
        out.headers["X-LLM-Latency-Ms"] = f"{(time.monotonic() - t0) * 1000:.1f}"
        return out

    # include_usage: the usage message arrives before the end, for message_delta's counts.
    call = client.inference.StreamChat(ipb.StreamChatRequest(input=inp, include_usage=True), metadata=md,
                                       timeout=calls.timeout(request))
    response: web.StreamResponse | None = None
    writer: codec.StreamWriter | None = None
    try:
        async for msg in call:
            kind = msg.WhichOneof("event")
            if kind == "raw":  # Anthropic's own stream, relayed as it comes (thinking, signatures, cache usage)
                await response.write(msg.raw)  # type: ignore[union-attr]
            elif kind == "delta":
                data = writer.deltas(msg.delta)  # type: ignore[union-attr]
                if data:
                    await response.write(data)  # type: ignore[union-attr]
            elif kind == "start":
                st = msg.start
                writer = codec.StreamWriter(st.id, st.route.model or inp.model, thinking)
                response = await start_stream(request, call, t0, {**SSE_HEADERS, "request-id": st.id})
                if not st.raw:
                    await response.write(writer.start())
            elif kind == "usage":
                writer.usage(msg.usage)  # type: ignore[union-attr]
            elif kind == "end":
                await response.write(writer.end(msg.end))  # type: ignore[union-attr]
        if response is None:
            return errors.bridge_error(BridgeError(502, "the upstream returned an empty stream"))
    except AioRpcError as e:
        info = error_info(e)
        if response is None:
            return errors.rpc_error(info)
        await response.write(errors.stream_error_event(info))
    except ConnectionResetError:
        pass  # the caller left; the finally below cancels the call and so the upstream
    finally:
        call.cancel()
    return response


async def count_tokens(request: web.Request) -> web.Response:
    """An estimate (header X-Tollgate-Estimated: true): no RPC counts tokens without a provider call."""
    try:
        raw = await read_body(request)
        inp = codec.chat_input(codec.load_json(raw), require_max_tokens=False, extras=[])
    except BridgeError as e:
        return errors.bridge_error(e)
    inp.raw_body = raw  # an Anthropic route counts it itself, as sent
    for name in ("anthropic-version", "anthropic-beta"):
        if (v := request.headers.get(name)) is not None:
            inp.raw_headers[name] = v
    call = calls.client(request).inference.CountTokens(ipb.CountTokensRequest(input=inp), metadata=calls.metadata(request),
                                                       timeout=calls.timeout(request))
    try:
        resp = await call
    except AioRpcError as e:
        return errors.rpc_error(error_info(e))
    out = web.Response(body=orjson.dumps({"input_tokens": resp.input_tokens}), content_type="application/json",
                       headers={"X-Tollgate-Estimated": "true"} if resp.estimated else None)
    await calls.copy_headers(call, out)
    return out


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
