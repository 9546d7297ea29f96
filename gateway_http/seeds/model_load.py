"""Seed 000's POST /api/models/load and its undo, DELETE /api/models/{name}: ModelService.

The seed's curl sends {"source", "format", "name"} and gets one JSON answer (201, the model,
the progress steps). Asked with `Accept: text/event-stream` the progress streams as SSE, with
`Accept: application/x-ndjson` (or "stream": true) as NDJSON lines in Ollama's own shape
({"status", "digest", "total", "completed"}), ending with {"status": "success", "model": ...}.
A failure before the first step is an ordinary error answer (the /api shape); after it, an
{"error": ...} line. For "openai" sources `model` and `api_key` (or `apiKey`) ride along.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError
from gateway_http.openai import codec
from gateway_http.seeds.api import _json, api_bad_request, api_error, model_json
from tollgate.client import error_info
from tollgate.v1 import model_service_pb2 as mpb

FIELDS = ("source", "format", "name", "model", "api_key")
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


def progress_json(p: mpb.LoadProgress) -> dict[str, Any]:
    out: dict[str, Any] = {"status": p.status}
    if p.digest:
        out["digest"] = p.digest
    if p.total:
        out["total"] = p.total
    if p.completed:
        out["completed"] = p.completed
    return out


def _fields(body: Any) -> dict[str, str]:
    if not isinstance(body, dict):
        raise codec.invalid("The body must be a JSON object.", None)
    raw = {k: body.get(k) for k in FIELDS}
    if raw["api_key"] is None:
        raw["api_key"] = body.get("apiKey")
    out = {}
    for k, v in raw.items():
        if v is not None and not isinstance(v, str):
            raise codec.invalid(f"Invalid type for '{k}': expected a string.", k)
        out[k] = v or ""
    return out


async def load_model(request: web.Request) -> web.StreamResponse:
    try:
        body = codec.load_json(await read_body(request))
        fields = _fields(body)
        if "stream" in body and not isinstance(body["stream"], bool):
            raise codec.invalid("Invalid type for 'stream': expected a boolean.", "stream")
    except BridgeError as e:
        return api_bad_request(e)
    accept = request.headers.get("Accept", "")
    mode = SSE if SSE in accept else NDJSON if NDJSON in accept or body.get("stream") is True else ""
    client, md = calls.client(request), calls.metadata(request)
    if not mode:
        call = client.models.LoadModel(mpb.LoadModelRequest(**fields), metadata=md, timeout=calls.timeout(request))
        try:
            resp = await call
        except AioRpcError as e:
            return api_error(error_info(e))
        out = _json({"model": model_json(resp.model), "loaded": True,
                     "progress": [progress_json(p) for p in resp.progress]}, 201)
        await calls.copy_headers(call, out)
        return out
    return await _stream(request, client.models.StreamLoadModel(mpb.StreamLoadModelRequest(**fields), metadata=md,
                                                                timeout=calls.timeout(request)), mode)


async def _stream(request: web.Request, call: Any, mode: str) -> web.StreamResponse:
    def frame(obj: dict[str, Any]) -> bytes:
        data = orjson.dumps(obj)
        return b"data: " + data + b"\n\n" if mode == SSE else data + b"\n"

    response: web.StreamResponse | None = None
    try:
        async for msg in call:
            if response is None:
                response = web.StreamResponse(status=200, headers={"Content-Type": mode, "Cache-Control": "no-cache"})
                response.headers.update(await calls.response_headers(call, {}))
                await response.prepare(request)
            if msg.WhichOneof("event") == "progress":
                await response.write(frame(progress_json(msg.progress)))
            else:
                await response.write(frame({"status": "success", "model": model_json(msg.model), "loaded": True}))
    except AioRpcError as e:
        info = error_info(e)
        if response is None:
            return api_error(info)
        await response.write(frame({"error": info.message, "code": info.reason}))
    finally:
        call.cancel()
    if response is None:
        return api_bad_request(BridgeError(502, "The load ended without an answer."))
    await response.write_eof()
    return response


async def unload_model(request: web.Request) -> web.Response:
    call = calls.client(request).models.UnloadModel(mpb.UnloadModelRequest(name=request.match_info["name"]),
                                                    metadata=calls.metadata(request), timeout=calls.timeout(request))
    try:
        resp = await call
    except AioRpcError as e:
        return api_error(error_info(e))
    out = _json({"model": model_json(resp.model), "unloaded": True})
    await calls.copy_headers(call, out)
    return out


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/models/load", load_model)
    app.router.add_delete("/api/models/{name:.+}", unload_model)
