"""Seeds 000 and 001 under /api: POST /api/chat, POST /api/quick, GET /api/models (loading: model_load.py).

/api/chat is one handler for both seeds' bodies: seed 000 sends {messages, maxTokens, temperature}
(no model: the gateway's default model answers), seed 001 adds {model, provider: "auto"|name}.
Both get seed 001's camelCase answer and X-LLM-* / X-RateLimit-* headers. Errors on every
route here share one shape: {"error": title, "message": detail, "code": seed 001 code,
"resetTime"?: ISO time on 429}.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError, error_headers, http_status
from gateway_http.openai import codec
from tollgate.client import RpcErrorInfo, error_info
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import model_service_pb2 as mpb

# Seed 001's error table, by HTTP status; the seed's own words where it has them.
CODES = {400: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT",
         413: "PAYLOAD_TOO_LARGE", 429: "RATE_LIMIT_EXCEEDED", 499: "CANCELLED", 500: "INTERNAL_ERROR",
         501: "NOT_IMPLEMENTED", 502: "PROVIDER_ERROR", 503: "SERVICE_UNAVAILABLE", 504: "TIMEOUT"}
TITLES = {400: "Validation error", 401: "Invalid API key", 403: "Forbidden", 404: "Not found", 409: "Conflict",
          413: "Payload too large", 429: "Rate limit exceeded", 499: "Request cancelled", 500: "Internal error",
          501: "Not implemented", 502: "Provider error", 503: "Service unavailable", 504: "Timeout"}
# Seed 000's exact words for a request without a key (its README's "Authentication Errors").
KEY_REQUIRED = ("API key required", "Provide API key via Authorization: Bearer <key> or X-API-Key header")
# Seed 001: no routable (provider, key) for the model is the caller's problem, 400.
NO_ELIGIBLE_KEY = "NO_ELIGIBLE_KEY"
FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length", pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
          pb.FINISH_REASON_CONTENT_FILTER: "content_filter", pb.FINISH_REASON_ERROR: "error",
          pb.FINISH_REASON_UNSPECIFIED: "stop"}


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json", headers=headers)


def api_error(info: RpcErrorInfo) -> web.Response:
    """An RPC failure in the merged /api shape, with Retry-After and X-RateLimit-* where they apply."""
    status = 400 if info.reason == NO_ELIGIBLE_KEY else http_status(info)
    title, message = TITLES.get(status, "Error"), info.message
    if info.reason == "API_KEY_REQUIRED":
        title, message = KEY_REQUIRED
    elif info.reason == "ADMIN_KEY_REQUIRED":
        title = "Admin key required"
    elif info.reason == "CSRF":
        title = "csrf"  # ACCOUNTS_API.md's refusal of a cookie write without its token
    body: dict[str, Any] = {"error": title, "message": message,
                            "code": NO_ELIGIBLE_KEY if info.reason == NO_ELIGIBLE_KEY else CODES.get(status, "ERROR")}
    if status == 429 and info.metadata.get("reset_time"):
        body["resetTime"] = info.metadata["reset_time"]
    if info.field_violations:
        body["details"] = [{"field": f, "message": m} for f, m in info.field_violations]
    return _json(body, status, error_headers(info))


def api_bad_request(e: BridgeError) -> web.Response:
    """A body the bridge could not parse: seed 001 calls every such failure VALIDATION_ERROR 400."""
    status = 413 if e.status == 413 else 400
    body: dict[str, Any] = {"error": TITLES[status], "message": e.message, "code": CODES[status]}
    if e.param:
        body["details"] = [{"field": e.param, "message": e.message}]
    return _json(body, status)


def _camel(e: BridgeError) -> BridgeError:
    """The OpenAI codec names snake_case fields; this surface's callers wrote camelCase."""
    for snake, camel in (("max_tokens", "maxTokens"), ("top_p", "topP")):
        if e.param == snake:
            e.param, e.message = camel, e.message.replace(f"'{snake}'", f"'{camel}'")
    return e


def chat_input(body: dict[str, Any], surface: str) -> pb.ChatInput:
    """Seed 000 / 001 camelCase (snake_case accepted too) -> ChatInput, via the OpenAI codec's checks."""
    for name in ("model", "provider", "strategy", "keyId"):
        v = body.get(name)
        if v is not None and not isinstance(v, str):
            raise codec.invalid(f"Invalid type for '{name}': expected a string.", name)
    oa = {"model": body.get("model") or "", "messages": body.get("messages"), "temperature": body.get("temperature"),
          "max_tokens": body.get("maxTokens", body.get("max_tokens")), "top_p": body.get("topP", body.get("top_p")),
          "stop": body.get("stop"), "provider": body.get("provider"), "strategy": body.get("strategy"),
          "user": body.get("user")}
    try:
        inp = codec.chat_input(oa, surface)
    except BridgeError as e:
        raise _camel(e) from None
    if body.get("keyId"):
        inp.route.key_id = body["keyId"]
    return inp


def usage_json(u: pb.Usage) -> dict[str, int]:
    return {"promptTokens": u.prompt_tokens, "completionTokens": u.completion_tokens, "totalTokens": u.total_tokens}


async def _chat_call(request: web.Request, inp: pb.ChatInput) -> tuple[Any, ipb.ChatResponse | None, web.Response | None]:
    call = calls.client(request).inference.Chat(ipb.ChatRequest(input=inp), metadata=calls.metadata(request),
                                                timeout=calls.timeout(request))
    try:
        return call, await call, None
    except AioRpcError as e:
        return call, None, api_error(error_info(e))


async def _answer(call: Any, obj: dict, t0: float) -> web.Response:
    out = _json(obj)
    await calls.copy_headers(call, out)
    out.headers["X-LLM-Latency-Ms"] = f"{(time.monotonic() - t0) * 1000:.1f}"
    return out


async def chat(request: web.Request) -> web.Response:
    t0 = time.monotonic()
    try:
        inp = chat_input(codec.load_json(await read_body(request)), "api_chat")
    except BridgeError as e:
        return api_bad_request(e)
    call, resp, err = await _chat_call(request, inp)
    if err is not None:
        return err
    message: dict[str, Any] = {"role": "assistant", "content": resp.text}
    if resp.tool_calls:
        message["toolCalls"] = [{"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
                                for t in resp.tool_calls]
    return await _answer(call, {
        "id": codec.completion_id(resp.id), "object": "chat.completion", "created": resp.created,
        "provider": resp.route.provider, "model": resp.route.model or inp.model,
        "choices": [{"index": 0, "message": message, "finishReason": FINISH[resp.finish_reason]}],
        "usage": usage_json(resp.usage)}, t0)


async def quick(request: web.Request) -> web.Response:
    t0 = time.monotonic()
    try:
        body = codec.load_json(await read_body(request))
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise codec.invalid("Missing required parameter: 'prompt' (a non-empty string).", "prompt")
        inp = chat_input({**body, "messages": [{"role": "user", "content": prompt}]}, "api_quick")
    except BridgeError as e:
        return api_bad_request(e)
    call, resp, err = await _chat_call(request, inp)
    if err is not None:
        return err
    return await _answer(call, {
        "id": codec.completion_id(resp.id), "text": resp.text, "model": resp.route.model or inp.model,
        "provider": resp.route.provider, "finishReason": FINISH[resp.finish_reason], "usage": usage_json(resp.usage)}, t0)


def model_json(m: mpb.Model) -> dict[str, Any]:
    return {
        "id": m.id, "name": m.name, "description": m.description, "provider": m.providers[0] if m.providers else "",
        "providers": list(m.providers), "ownedBy": m.owned_by, "type": m.kind or "chat",
        "contextLength": m.context_length, "maxCompletionTokens": m.max_completion_tokens,
        "pricing": {"promptPerMTok": m.pricing.prompt_per_mtok, "completionPerMTok": m.pricing.completion_per_mtok,
                    "currency": "USD"},
        "demo": m.demo, "loaded": m.loaded,
    }


async def list_models(request: web.Request) -> web.Response:
    client, md = calls.client(request), calls.metadata(request)
    models: list[dict[str, Any]] = []
    token, call = "", None
    try:
        while True:
            call = client.models.ListModels(mpb.ListModelsRequest(page_size=100, page_token=token), metadata=md,
                                            timeout=calls.timeout(request))
            page = await call
            models += [model_json(m) for m in page.models]
            token = page.next_page_token
            if not token:
                break
    except AioRpcError as e:
        return api_error(error_info(e))
    out = _json({"models": models, "total": len(models)})
    await calls.copy_headers(call, out)
    return out


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/quick", quick)
    app.router.add_get("/api/models", list_models)
