"""Seed 004 (OpenRouter proxy): POST /api/v1/inference, POST /api/v1/inference/stream (SSE) and the
model catalogue under /api/v1/models (filter, search, pagination, top, providers, pricing, parameters).

Bodies are OpenAI chat shapes, parsed by the OpenAI codec. Prices are rendered as OpenRouter
shows them: USD per token, as decimal strings. Errors are seed 004's
{"error": {"code": <HTTP status>, "message", "type", "details"?}}.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError, error_headers, http_status
from gateway_http.openai import codec
from gateway_http.sse import SSE_HEADERS, start_stream
from tollgate.client import RpcErrorInfo, error_info
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import model_service_pb2 as mpb

MAX_LIMIT = 100
MILLION = Decimal(1_000_000)


def error_type(status: int) -> str:
    """Seed 004's error types, by HTTP status."""
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "authentication"
    if status == 404:
        return "not_found"
    if status in (502, 503, 504):
        return "upstream"
    if 400 <= status < 500:
        return "validation"
    return "internal"


def error_object(info: RpcErrorInfo) -> dict[str, Any]:
    """The inner {"code", "message", "type", "details"?} of an RPC failure (also used on /ws)."""
    status = http_status(info)
    err: dict[str, Any] = {"code": status, "message": info.message, "type": error_type(status)}
    details: dict[str, Any] = {}
    if info.field_violations:  # seed 004's own details: {"field", "message"}, nothing else
        details["field"], details["message"] = info.field_violations[0]
    elif info.reason:
        details["reason"] = info.reason
    if info.metadata.get("reset_time"):
        details["reset_time"] = info.metadata["reset_time"]
    if details:
        err["details"] = details
    return err


def bridge_error_object(e: BridgeError) -> dict[str, Any]:
    err: dict[str, Any] = {"code": e.status, "message": e.message, "type": error_type(e.status)}
    if e.param:
        err["details"] = {"field": e.param, "message": e.message}
    return err


def rpc_error(info: RpcErrorInfo) -> web.Response:
    return web.Response(status=http_status(info), body=orjson.dumps({"error": error_object(info)}),
                        content_type="application/json", headers=error_headers(info))


def bad_request(e: BridgeError) -> web.Response:
    return web.Response(status=e.status, body=orjson.dumps({"error": bridge_error_object(e)}), content_type="application/json")


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


# -- inference

async def _parse(request: web.Request) -> tuple[Any, bool, bool]:
    body = codec.load_json(await read_body(request))
    inp = codec.chat_input(body, "api_v1")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise codec.invalid("Invalid type for 'stream': expected a boolean.", "stream")
    opts = body.get("stream_options")
    return inp, bool(stream), bool(isinstance(opts, dict) and opts.get("include_usage"))


async def inference(request: web.Request) -> web.StreamResponse:
    t0 = time.monotonic()
    try:
        inp, stream, include_usage = await _parse(request)
    except BridgeError as e:
        return bad_request(e)
    if stream:  # the seed's body carries "stream"; honour it here too
        return await _stream(request, inp, include_usage, t0)
    call = calls.client(request).inference.Chat(ipb.ChatRequest(input=inp), metadata=calls.metadata(request),
                                                timeout=calls.timeout(request))
    try:
        resp = await call
    except AioRpcError as e:
        return rpc_error(error_info(e))
    out = web.Response(body=codec.completion_json(resp, inp.model), content_type="application/json")
    await calls.copy_headers(call, out)
    out.headers["X-LLM-Latency-Ms"] = f"{(time.monotonic() - t0) * 1000:.1f}"
    return out


async def inference_stream(request: web.Request) -> web.StreamResponse:
    t0 = time.monotonic()
    try:
        inp, _, include_usage = await _parse(request)
    except BridgeError as e:
        return bad_request(e)
    return await _stream(request, inp, include_usage, t0)


class Chunks:
    """Seed 004's chunk lines: {id, object, created, model, choices:[{index, delta, finish_reason}]}."""

    __slots__ = ("_head", "_prefix")

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self._head = orjson.dumps({"id": codec.completion_id(request_id), "object": "chat.completion.chunk",
                                   "created": created, "model": model})[:-1]
        self._prefix = b"data: " + self._head + b',"choices":[{"index":0,"delta":'

    def _line(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        fin = b"null" if finish is None else b'"' + finish.encode() + b'"'
        return self._prefix + orjson.dumps(delta) + b',"finish_reason":' + fin + b"}]}\n\n"

    def role(self) -> bytes:
        return self._line({"role": "assistant", "content": ""})

    def deltas(self, batch: ipb.DeltaBatch) -> tuple[bytes, bool]:
        out, finished = [], False
        for d in batch.deltas:
            delta: dict[str, Any] = {}
            if d.text:
                delta["content"] = d.text
            if d.reasoning:
                delta["reasoning"] = d.reasoning
            if d.tool_calls:
                delta["tool_calls"] = [
                    {"index": t.index, **({"id": t.id, "type": "function"} if t.id else {}),
                     "function": {**({"name": t.name} if t.name else {}), "arguments": t.arguments}}
                    for t in d.tool_calls]
            if delta:
                out.append(self._line(delta))
            if d.finish_reason:
                out.append(self.finish(d.finish_reason))
                finished = True
        return b"".join(out), finished

    def finish(self, reason: int) -> bytes:
        return self._line({}, codec.FINISH[reason])

    def usage(self, u: Any) -> bytes:
        return b"data: " + self._head + b',"choices":[],"usage":' + orjson.dumps(codec.usage_json(u)) + b"}\n\n"


async def _stream(request: web.Request, inp: Any, include_usage: bool, t0: float) -> web.StreamResponse:
    call = calls.client(request).inference.StreamChat(ipb.StreamChatRequest(input=inp, include_usage=include_usage),
                                                      metadata=calls.metadata(request), timeout=calls.timeout(request))
    response: web.StreamResponse | None = None
    chunks: Chunks | None = None
    finished = False
    try:
        async for msg in call:
            kind = msg.WhichOneof("event")
            if kind == "delta":
                data, done = chunks.deltas(msg.delta)  # type: ignore[union-attr]
                finished = finished or done
                if data:
                    await response.write(data)  # type: ignore[union-attr]
            elif kind == "start":
                chunks = Chunks(msg.start.id, msg.start.created, msg.start.route.model or inp.model)
                response = await start_stream(request, call, t0, SSE_HEADERS)
                await response.write(chunks.role())
            elif kind == "usage":
                await response.write(chunks.usage(msg.usage))  # type: ignore[union-attr]
            elif kind == "end" and not finished:
                await response.write(chunks.finish(msg.end.finish_reason or 1))  # type: ignore[union-attr]
                finished = True
        if response is None:
            return bad_request(BridgeError(502, "The upstream returned an empty stream."))
        await response.write(codec.DONE)
    except AioRpcError as e:
        info = error_info(e)
        if response is None:
            return rpc_error(info)
        # RELIABILITY A6: after the first byte a failure is an in-band error, never [DONE].
        await response.write(b"data: " + orjson.dumps({"error": error_object(info)}) + b"\n\n")
    finally:
        call.cancel()
    return response


# -- the model catalogue

def price(per_mtok: float) -> str:
    """USD per million tokens -> USD per token as OpenRouter writes it ("0.0000025", "0")."""
    return format((Decimal(repr(per_mtok)) / MILLION).normalize(), "f")


def pricing_json(m: mpb.Model) -> dict[str, str]:
    return {"prompt": price(m.pricing.prompt_per_mtok), "completion": price(m.pricing.completion_per_mtok)}


def model_json(m: mpb.Model) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "description": m.description, "context_length": m.context_length,
            "pricing": pricing_json(m), "supported_parameters": list(m.supported_parameters),
            "is_moderated": m.is_moderated, "max_completion_tokens": m.max_completion_tokens,
            "providers": list(m.providers)}


INT32_MAX = 2**31 - 1  # the proto fields these land in are int32


def _int_query(request: web.Request, name: str, default: int, lo: int, hi: int | None = None) -> int:
    hi = INT32_MAX if hi is None else hi
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BridgeError(400, f"'{name}' must be an integer.", param=name) from None
    if v < lo or v > hi:
        raise BridgeError(400, f"'{name}' must be between {lo} and {hi}.", param=name)
    return v


async def _list(request: web.Request, req: mpb.ListModelsRequest) -> tuple[Any, mpb.ListModelsResponse]:
    call = calls.client(request).models.ListModels(req, metadata=calls.metadata(request), timeout=calls.timeout(request))
    return call, await call


async def _render(build) -> web.Response:
    """Runs one catalogue handler body: parse errors and RPC errors in seed 004's shape."""
    try:
        obj, call = await build()
    except BridgeError as e:
        return bad_request(e)
    except AioRpcError as e:
        return rpc_error(error_info(e))
    out = _json(obj)
    if call is not None:
        await calls.copy_headers(call, out)
    return out


async def list_models(request: web.Request) -> web.Response:
    async def build():
        limit = _int_query(request, "limit", 50, 1, MAX_LIMIT)
        offset = _int_query(request, "offset", 0, 0)
        q = request.query
        # Seed 004's `provider` is the model's vendor ("openai" in "openai/gpt-4o"), not our provider instance.
        call, page = await _list(request, mpb.ListModelsRequest(vendor=q.get("provider", ""), search=q.get("search", ""),
                                                                page_size=limit, skip=offset))
        return {"data": [model_json(m) for m in page.models],
                "pagination": {"total": page.total_size, "limit": limit, "offset": offset,
                               "hasMore": bool(page.next_page_token)}}, call
    return await _render(build)


async def top_models(request: web.Request) -> web.Response:
    async def build():
        limit = _int_query(request, "limit", 10, 1, MAX_LIMIT)
        call, page = await _list(request, mpb.ListModelsRequest(page_size=limit, order_by="context_length"))
        return {"data": [model_json(m) for m in page.models]}, call
    return await _render(build)


async def search_models(request: web.Request) -> web.Response:
    async def build():
        q = request.query.get("q", "").strip()
        if not q:
            raise BridgeError(400, "Missing required query parameter 'q'.", param="q")
        limit = _int_query(request, "limit", 20, 1, MAX_LIMIT)
        call, page = await _list(request, mpb.ListModelsRequest(search=q, page_size=limit))
        return {"data": [model_json(m) for m in page.models], "query": q, "total": page.total_size}, call
    return await _render(build)


async def providers(request: web.Request) -> web.Response:
    async def build():
        call = calls.client(request).models.ListVendors(mpb.ListVendorsRequest(), metadata=calls.metadata(request),
                                                        timeout=calls.timeout(request))
        resp = await call
        return {"data": list(resp.vendors)}, call
    return await _render(build)


async def provider_models(request: web.Request) -> web.Response:
    async def build():
        name = request.match_info["provider"]
        models, token, call = [], "", None
        while True:
            call, page = await _list(request, mpb.ListModelsRequest(vendor=name, page_size=MAX_LIMIT, page_token=token))
            models += [model_json(m) for m in page.models]
            token = page.next_page_token
            if not token:
                break
        return {"data": models, "provider": name}, call
    return await _render(build)


async def _get(request: web.Request) -> tuple[Any, mpb.Model]:
    call = calls.client(request).models.GetModel(mpb.GetModelRequest(id=request.match_info["id"]),
                                                 metadata=calls.metadata(request), timeout=calls.timeout(request))
    return call, (await call).model


async def get_model(request: web.Request) -> web.Response:
    async def build():
        call, m = await _get(request)
        return {"data": model_json(m)}, call
    return await _render(build)


async def model_parameters(request: web.Request) -> web.Response:
    async def build():
        call, m = await _get(request)
        return {"data": {"model": m.id, "supported_parameters": list(m.supported_parameters)}}, call
    return await _render(build)


async def model_pricing(request: web.Request) -> web.Response:
    async def build():
        call, m = await _get(request)
        return {"data": {"model": m.id, "pricing": pricing_json(m)}}, call
    return await _render(build)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/inference", inference)
    r.add_post("/api/v1/inference/stream", inference_stream)
    r.add_get("/api/v1/models", list_models)
    # Fixed paths first: model ids contain slashes, so {id:.+} would swallow them.
    r.add_get("/api/v1/models/top", top_models)
    r.add_get("/api/v1/models/search", search_models)
    r.add_get("/api/v1/models/providers", providers)
    r.add_get("/api/v1/models/providers/{provider}", provider_models)
    r.add_get("/api/v1/models/{id:.+}/parameters", model_parameters)
    r.add_get("/api/v1/models/{id:.+}/pricing", model_pricing)
    r.add_get("/api/v1/models/{id:.+}", get_model)
