"""The OpenAI-compatible surface: /v1/chat/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import array
import asyncio
import base64
import time
from typing import Any, Callable

import grpc
import orjson
from aiohttp import hdrs, web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError, openai_bridge_error, openai_error, stream_error_event
from gateway_http.openai import codec
from gateway_http.sse import SSE_HEADERS, start_stream
from gateway_http.state import BRIDGE
from tollgate.client import RpcErrorInfo, error_info
from tollgate.inprocess import LOCAL_CALLS
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import model_service_pb2 as mpb


SHUTDOWN_INFO = RpcErrorInfo(grpc.StatusCode.UNAVAILABLE, "The gateway is shutting down; the answer was cut.", "SHUTTING_DOWN")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    t0 = time.monotonic()
    bridge = request.app[BRIDGE]  # once: each request.app costs two Python calls
    try:
        raw = await read_body(request, bridge=bridge)
        body = codec.load_json(raw)
        stream = body.get("stream", False)
        # The request comes first and the input is parsed into it: passing a parsed input to the
        # request's constructor would copy it. A wrong `stream` is still reported after the input.
        req = ipb.StreamChatRequest() if stream is True else ipb.ChatRequest()
        inp = codec.chat_input(body, "openai", req.input)
        if not body.keys() <= codec.KNOWN_FIELDS:  # fields only the provider understands (services/fidelity.py)
            inp.raw_body = raw
            inp.extra_fields.extend([k for k in body if k not in codec.KNOWN_FIELDS])
        if not isinstance(stream, bool) and stream is not None:
            raise codec.invalid("Invalid type for 'stream': expected a boolean.", "stream", 422)
        include_usage = codec.stream_options(body)
    except BridgeError as e:
        return openai_bridge_error(e)
    if not stream:
        # The body's model, as chat_input() checked and copied it: not read back from the message.
        return await chat_answer(request, req, codec.completion_json, body.get("model") or "", t0, bridge,
                                 plain=True)

    req.include_usage = include_usage
    call = calls.client(request).inference.StreamChat(req, metadata=calls.metadata(request), timeout=calls.timeout(request))
    if type(call) in LOCAL_CALLS:
        call.text_deltas()  # plain text deltas as tuples of str: no message built and read per token
    response: web.StreamResponse | None = None
    writer: codec.ChunkWriter | None = None
    relayed = False
    # The usage chunk comes right before the end: it leaves with [DONE] and the chunked-encoding
    # terminator in one write (one send instead of three; the same bytes on the wire).
    tail = b""
    try:
        async for msg in call:
            if type(msg) is tuple:  # plain text deltas (in process, see above)
                await response.write(writer.texts(msg))  # type: ignore[union-attr]
                continue
            kind = msg.WhichOneof("event")
            if kind == "delta":
                await response.write(writer.deltas(msg.delta))  # type: ignore[union-attr]
            elif kind == "raw":  # the provider's own stream, relayed as it comes ([DONE] included)
                await response.write(msg.raw)  # type: ignore[union-attr]
            elif kind == "start":
                st = msg.start
                relayed = st.raw
                writer = codec.ChunkWriter(st.id, st.created, st.route.model or inp.model)
                response = await start_stream(request, call, t0, SSE_HEADERS)
            elif kind == "usage":
                tail += writer.usage(msg.usage)  # type: ignore[union-attr]
        if response is None:
            raise BridgeError(502, "upstream returned an empty stream")
        await response.write_eof(tail if relayed else tail + codec.DONE)
    except AioRpcError as e:
        info = error_info(e)
        if response is None:
            return openai_error(info)
        await response.write(tail + stream_error_event(info))
    except asyncio.CancelledError:
        # Cut at the drain's grace limit (RELIABILITY B6): say so in-band before the socket goes.
        if response is not None and request.app[BRIDGE].draining:
            try:
                await response.write_eof(stream_error_event(SHUTDOWN_INFO))  # a complete body, then go
            except (ConnectionError, RuntimeError):
                pass
        raise
    finally:
        call.cancel()
    return response


async def chat_answer(request: web.Request, req: ipb.ChatRequest, render: Callable[[ipb.ChatResponse, str], bytes],
                      model: str, t0: float | None, bridge: Any = None, plain: bool = False) -> web.Response:
    """A whole chat answer: the provider's own body when it was relayed (`raw`), else render(resp, model);
    an error as OpenAI's JSON. With t0, the X-LLM-Latency-Ms header too. `bridge`: the app's
    Bridge when the caller holds it. `plain`: render takes a tollgate.inprocess.ChatAnswer too,
    which an in-process call is asked for (no ChatResponse built and read back)."""
    if bridge is None:
        bridge = request.app[BRIDGE]
    # calls.client() and calls.timeout(), written out: the bridge is at hand
    call = bridge.client.inference.Chat(req, metadata=calls.metadata(request, bridge),
                                        timeout=bridge.settings.request_timeout_s)
    if plain and type(call) in LOCAL_CALLS:
        call.plain_answer()
    try:
        resp = await call
    except AioRpcError as e:
        return openai_error(error_info(e))
    answer = resp.raw or render(resp, model)  # raw: the provider's own answer, relayed
    # All headers in one dict, Content-Type first as content_type= would put it: the response's
    # multidict is built once instead of item by item.
    headers = calls.response_headers_now(call, {hdrs.CONTENT_TYPE: "application/json"}) or \
        await calls.response_headers(call, {hdrs.CONTENT_TYPE: "application/json"})
    if t0 is not None:
        headers[calls.LATENCY] = f"{(time.monotonic() - t0) * 1000:.1f}"
    return web.Response(body=answer, headers=headers)


async def embeddings(request: web.Request) -> web.Response:
    try:
        body = codec.load_json(await read_body(request))
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
            raise codec.invalid("Invalid value for 'input': expected a string or a non-empty array of strings.", "input")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise codec.invalid("Missing required parameter: 'model'.", "model")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise codec.invalid("Invalid value for 'encoding_format': expected float or base64.", "encoding_format")
        req = ipb.EmbedRequest(model=model, inputs=inputs, surface="openai")
        dims = body.get("dimensions")
        if dims is not None:
            if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
                raise codec.invalid("Invalid value for 'dimensions': expected a positive integer.", "dimensions")
            req.dimensions = dims
    except BridgeError as e:
        return openai_bridge_error(e)
    call = calls.client(request).inference.Embed(req, metadata=calls.metadata(request), timeout=calls.timeout(request))
    try:
        resp = await call
    except AioRpcError as e:
        return openai_error(error_info(e))
    data = []
    for emb in resp.embeddings:
        vec = base64.b64encode(array.array("f", emb.values).tobytes()).decode() if fmt == "base64" else list(emb.values)
        data.append({"object": "embedding", "index": emb.index, "embedding": vec})
    out = web.Response(body=orjson.dumps({
        "object": "list", "data": data, "model": resp.route.model or model,
        "usage": {"prompt_tokens": resp.usage.prompt_tokens, "total_tokens": resp.usage.total_tokens}}),
        content_type="application/json")
    await calls.copy_headers(call, out)
    return out


def model_json(m: mpb.Model) -> dict:
    return {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by}


async def list_models(request: web.Request) -> web.Response:
    client = calls.client(request)
    md = calls.metadata(request)
    models, token = [], ""
    call = None
    try:
        while True:
            call = client.models.ListModels(mpb.ListModelsRequest(page_size=100, page_token=token), metadata=md)
            page = await call
            models += [model_json(m) for m in page.models]
            token = page.next_page_token
            if not token:
                break
    except AioRpcError as e:
        return openai_error(error_info(e))
    out = web.Response(body=orjson.dumps({"object": "list", "data": models}), content_type="application/json")
    await calls.copy_headers(call, out)
    return out


async def get_model(request: web.Request) -> web.Response:
    call = calls.client(request).models.GetModel(mpb.GetModelRequest(id=request.match_info["id"]), metadata=calls.metadata(request))
    try:
        resp = await call
    except AioRpcError as e:
        return openai_error(error_info(e))
    out = web.Response(body=orjson.dumps(model_json(resp.model)), content_type="application/json")
    await calls.copy_headers(call, out)
    return out


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{id:.+}", get_model)
