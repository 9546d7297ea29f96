"""The bridge's public surfaces as an OpenAPI 3.1 document, served at GET /openapi.json.

Request schemas say what the codecs accept (unknown fields are allowed: the codecs ignore them);
response schemas say what the handlers render, errors included, in each surface's own shape.
RELIABILITY E5 runs schemathesis against this document, so a change to a handler's shapes or
statuses belongs here too. Model names carry no control characters (E9).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway_http.state import BRIDGE

OPENAPI = web.AppKey("openapi", bytes)

S: dict = {"type": "string"}
I: dict = {"type": "integer"}
N: dict = {"type": "number"}
B: dict = {"type": "boolean"}
MODEL = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f]+$"}
TIERS = ["basic", "pro", "enterprise", "explorer", "startup", "growth", "unlimited"]
STRATEGIES = ["priority", "exhaust-first", "round-robin", "weighted", "least-latency", "cost", "balanced"]
USER = [{"bearerAuth": []}, {"apiKeyHeader": []}]
ADMIN = [{"adminKey": []}]


def obj(props: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict:
    out = {"type": "object", "properties": props, **extra}
    if required:
        out["required"] = list(required)
    return out


def arr(items: dict, **extra: Any) -> dict:
    return {"type": "array", "items": items, **extra}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def body(schema: dict, examples: dict[str, Any] | None = None) -> dict:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"required": True, "content": {"application/json": media}}


def json_text(schema: dict) -> dict:
    """A string holding JSON that matches `schema` (an SSE event's data)."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def sse_event(data: dict) -> dict:
    """One Server-Sent Event as OpenAPI 3.1 describes a text/event-stream item."""
    return obj({"event": S, "id": S, "data": data}, ("data",))


def responses(ok: dict[int, dict], error: str, statuses: tuple[int, ...], sse: dict | None = None) -> dict:
    """Each documented status; every answer carries X-Request-Id (SPEC). `sse`: a stream's event schema."""
    headers = {"X-Request-Id": {"required": True, "schema": {"type": "string", "pattern": "^req_[0-9a-f]+$"}}}
    out: dict[str, Any] = {}
    for status, schema in ok.items():
        content = {"application/json": {"schema": schema}}
        if sse is not None:
            content["text/event-stream"] = {"schema": sse}
        out[str(status)] = {"description": "OK", "headers": headers, "content": content}
    for status in statuses:
        out[str(status)] = {"description": "Error", "headers": headers, "content": {"application/json": {"schema": ref(error)}}}
    return out


def media_responses(media_type: str) -> dict:
    """The provider's own answer (audio bytes), or an OpenAI error."""
    out = responses({200: {"type": "object"}}, "OpenAIError", CHAT_ERRORS)
    out["200"]["content"][media_type] = {"schema": {"type": "string", "contentMediaType": media_type}}
    return out


def op(op_id: str, summary: str, security: list, resp: dict, request: dict | None = None,
       params: list | None = None, links: dict | None = None, examples: dict[str, Any] | None = None) -> dict:
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "security": security, "responses": resp}
    if request is not None:
        out["requestBody"] = body(request, examples)
    if params:
        out["parameters"] = params
    if links:
        out["responses"][next(iter(out["responses"]))]["links"] = links
    return out


def transcription_op(key_header: list) -> dict:
    """POST /v1/audio/transcriptions: a multipart/form-data upload, as OpenAI's API takes it; the
    answer is JSON (json, verbose_json) or text (text, srt, vtt) as `response_format` asks."""
    form = obj({"file": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"},
                "model": MODEL, "language": S, "prompt": S,
                "response_format": {"type": "string", "enum": ["json", "text", "srt", "verbose_json", "vtt"]},
                "temperature": {"type": "number", "minimum": 0, "maximum": 1}}, ("file", "model"))
    # The provider's answer as sent: OpenAI's is {"text", "usage"} (json) or adds language, duration
    # and segments (verbose_json); `text` is not required, as the relay does not rewrite it.
    resp = responses({200: obj({"text": S, "usage": {"type": "object"}, "duration": {"type": "number"}})},
                     "OpenAIError", CHAT_ERRORS)
    resp["200"]["content"]["text/plain"] = {"schema": S}
    out = op("createTranscription", "OpenAI speech to text (multipart upload) on a route that has it", USER, resp,
             params=key_header)
    out["requestBody"] = {"required": True, "content": {"multipart/form-data": {
        "schema": form, "encoding": {"file": {"contentType": "application/octet-stream"}}}}}
    return out


def no_content(resp: dict) -> dict:
    """A 204 (nothing but X-Request-Id) beside the documented errors."""
    headers = {"X-Request-Id": {"required": True, "schema": {"type": "string", "pattern": "^req_[0-9a-f]+$"}}}
    return {"204": {"description": "Done", "headers": headers}, **resp}


def param(name: str, where: str, schema: dict, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema}


PLAN_NAME = param("name", "path", {"type": "string", "minLength": 1, "maxLength": 64,
                                   "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"})

CHAT_ERRORS = (400, 401, 403, 404, 413, 422, 429, 502, 503, 504)
HI = [{"role": "user", "content": "Hello"}]
CHAT_EXAMPLES = {"plain": {"model": "gpt-4o-mini", "messages": HI},
                 "stream": {"model": "gpt-4o-mini", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}}
RESPONSES_EXAMPLES = {"plain": {"model": "gpt-4o-mini", "input": "Hello"},
                      "stream": {"model": "gpt-4o-mini", "input": "Hello", "stream": True}}
MESSAGES_EXAMPLES = {"plain": {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": HI},
                     "stream": {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": HI, "stream": True}}


def _schemas() -> dict[str, dict]:
    text_part = obj({"type": {"const": "text"}, "text": S}, ("type", "text"))
    image_part = obj({"type": {"const": "image_url"}, "image_url": obj({
        "url": {"type": "string", "pattern": "^https?://[^\\s]+$"}, "detail": {"enum": ["auto", "low", "high"]}}, ("url",))},
        ("type", "image_url"))
    tool_call = obj({"id": S, "type": {"const": "function"}, "function": obj({"name": S, "arguments": S}, ("name",))},
                    ("function",))
    message = {"oneOf": [
        obj({"role": {"enum": ["system", "developer"]}, "content": {"anyOf": [S, arr(text_part)]}, "name": S},
            ("role", "content")),
        obj({"role": {"const": "user"}, "content": {"anyOf": [S, arr({"oneOf": [text_part, image_part]})]}, "name": S},
            ("role", "content")),
        obj({"role": {"const": "assistant"}, "content": nullable(S), "tool_calls": arr(tool_call), "name": S}, ("role",)),
        obj({"role": {"const": "tool"}, "content": S, "tool_call_id": {"type": "string", "minLength": 1}},
            ("role", "content", "tool_call_id")),
    ]}
    function = obj({"name": S, "description": S, "parameters": {"type": "object"}}, ("name",))
    sampling = {
        "temperature": {"type": "number", "minimum": 0, "maximum": 2}, "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "max_tokens": {"type": "integer", "minimum": 1}, "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2}, "seed": I,
        "stop": {"anyOf": [S, arr(S, maxItems=4)]},
    }
    chat_request = obj({
        "model": MODEL, "messages": arr(ref("ChatMessage"), minItems=1, maxItems=2048), **sampling,
        "max_completion_tokens": {"type": "integer", "minimum": 1}, "stream": B,
        "stream_options": obj({"include_usage": B}),
        "response_format": obj({"type": {"enum": ["text", "json_object", "json_schema"]}, "json_schema": {"type": "object"}},
                               ("type",)),
        "tools": arr(obj({"type": {"const": "function"}, "function": function}, ("type", "function"))),
        "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]},
                                  obj({"type": {"const": "function"}, "function": obj({"name": S}, ("name",))},
                                      ("type", "function"))]},
        "parallel_tool_calls": B, "user": S,
        "provider": {**S, "description": "Tollgate: route to this configured provider only"},
        "strategy": {"enum": STRATEGIES, "description": "Tollgate: the routing strategy for this request"},
    }, ("model", "messages"))
    usage = obj({"prompt_tokens": I, "completion_tokens": I, "total_tokens": I}, ("prompt_tokens", "completion_tokens",
                                                                                    "total_tokens"))
    completion = obj({
        "id": S, "object": {"const": "chat.completion"}, "created": I, "model": S,
        "choices": arr(obj({"index": I, "finish_reason": S, "message": obj({"role": {"const": "assistant"},
                            "content": nullable(S), "tool_calls": arr(tool_call)}, ("role", "content"))},
                           ("index", "message", "finish_reason")), minItems=1),
        "usage": usage}, ("id", "object", "created", "model", "choices", "usage"))
    chunk = obj({"id": S, "object": {"const": "chat.completion.chunk"}, "created": I, "model": S,
                 "choices": arr(obj({"index": I, "delta": {"type": "object"}, "finish_reason": nullable(S)}, ("index", "delta"))),
                 "usage": usage}, ("id", "object", "created", "model", "choices"))
    text_block = obj({"type": {"const": "text"}, "text": S}, ("type", "text"))
    image_block = obj({"type": {"const": "image"}, "source": {"oneOf": [
        obj({"type": {"const": "base64"}, "media_type": {"enum": ["image/jpeg", "image/png", "image/gif", "image/webp"]},
             "data": {"type": "string", "pattern": "^([A-Za-z0-9+/]{4})+$"}}, ("type", "media_type", "data")),
        obj({"type": {"const": "url"}, "url": {"type": "string", "pattern": "^https?://[^\\s]+$"}}, ("type", "url"))]}},
        ("type", "source"))
    tool_result = obj({"type": {"const": "tool_result"}, "tool_use_id": {"type": "string", "minLength": 1},
                       "content": {"anyOf": [S, arr(text_block)]}}, ("type", "tool_use_id"))
    tool_use = obj({"type": {"const": "tool_use"}, "id": S, "name": {"type": "string", "minLength": 1},
                    "input": {"type": "object"}}, ("type", "id", "name"))
    anthropic_request = obj({
        "model": MODEL, "max_tokens": {"type": "integer", "minimum": 1},
        "messages": arr({"oneOf": [
            obj({"role": {"const": "user"}, "content": {"anyOf": [S, arr({"oneOf": [text_block, image_block, tool_result]})]}},
                ("role", "content")),
            obj({"role": {"const": "assistant"}, "content": {"anyOf": [S, arr({"oneOf": [text_block, tool_use]})]}},
                ("role", "content"))]}, minItems=1, maxItems=2048),
        "system": {"anyOf": [S, arr(text_block)]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1}, "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "stop_sequences": arr(S), "stream": B, "metadata": obj({"user_id": S}),
        "tools": arr(obj({"name": {"type": "string", "minLength": 1}, "description": S, "input_schema": {"type": "object"}},
                         ("name", "input_schema"))),
        "tool_choice": {"oneOf": [obj({"type": {"enum": ["auto", "any", "none"]}}, ("type",)),
                                  obj({"type": {"const": "tool"}, "name": {"type": "string", "minLength": 1}}, ("type", "name"))]},
        "thinking": obj({"type": {"enum": ["enabled", "disabled"]}, "budget_tokens": I}, ("type",)),
    }, ("model", "max_tokens", "messages"))
    item = {"type": "object", "description": "A Responses API input item: a message ({role, content}), "
                                              "function_call, function_call_output or reasoning"}
    resp_tool = obj({"type": S, "name": S, "description": S, "parameters": {"type": "object"}, "strict": B}, ("type",))
    responses_request = obj({
        "model": MODEL, "input": {"anyOf": [S, arr(item, maxItems=2048)]}, "instructions": nullable(S),
        "previous_response_id": {"type": "string", "minLength": 1}, "stream": B, "store": B,
        "max_output_tokens": {"type": "integer", "minimum": 1}, "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1}, "tools": arr(resp_tool), "parallel_tool_calls": B,
        "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]},
                                  obj({"type": {"const": "function"}, "name": S}, ("type", "name"))]},
        "text": obj({"format": obj({"type": {"enum": ["text", "json_object", "json_schema"]}, "name": S,
                                    "schema": {"type": "object"}, "strict": B}, ("type",))}),
        "reasoning": obj({"effort": nullable({"enum": ["none", "minimal", "low", "medium", "high", "xhigh"]}),
                          "summary": nullable(S)}),
        "metadata": {"type": "object", "additionalProperties": S}, "user": S,
    }, ("model",))
    response_obj = obj({
        "id": {"type": "string", "pattern": "^resp_"}, "object": {"const": "response"}, "created_at": I,
        "status": {"enum": ["completed", "incomplete", "in_progress", "failed"]}, "model": S,
        "output": arr(obj({"type": S, "id": S}, ("type",))), "usage": nullable(obj({
            "input_tokens": I, "output_tokens": I, "total_tokens": I}, ("input_tokens", "output_tokens", "total_tokens")))},
        ("id", "object", "created_at", "status", "model", "output"))
    api_key = obj({"id": S, "prefix": S, "name": S, "email": S, "tier": S, "createdAt": I, "revokedAt": nullable(I),
                   "lastUsedAt": nullable(I), "active": B}, ("id", "prefix", "name", "tier", "createdAt", "active"))
    details = arr(obj({"field": S, "message": S}, ("field", "message")))
    return {
        "ChatMessage": message,
        "ChatCompletionRequest": chat_request,
        "ChatCompletion": completion,
        "ChatCompletionChunk": chunk,
        # A stream's events: chunks then [DONE], or an in-band error and no [DONE] (RELIABILITY A6).
        "ChatCompletionEvent": sse_event({"anyOf": [{"const": "[DONE]"},
                                                    json_text({"anyOf": [ref("ChatCompletionChunk"), ref("OpenAIError")]})]}),
        "Seed004Event": sse_event({"anyOf": [{"const": "[DONE]"},
                                             json_text({"anyOf": [ref("ChatCompletionChunk"), ref("Seed004Error")]})]}),
        "AnthropicEvent": sse_event(json_text(obj({"type": {"enum": [
            "message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop", "message_delta",
            "message_stop", "error"]}}, ("type",)))),
        "Usage": usage,
        "CompletionRequest": obj({
            "model": MODEL, "prompt": {"anyOf": [S, arr(S, minItems=1, maxItems=1)]}, "suffix": S,
            "max_tokens": {"type": "integer", "minimum": 1}, "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1}, "stop": {"anyOf": [S, arr(S, maxItems=4)]},
            "seed": I, "stream": B, "stream_options": obj({"include_usage": B}), "user": S}, ("model", "prompt")),
        "Completion": obj({"id": S, "object": {"const": "text_completion"}, "created": I, "model": S,
                           "choices": arr(obj({"text": S, "index": I, "finish_reason": nullable(S)}, ("text", "index"))),
                           "usage": usage}, ("id", "object", "created", "model", "choices")),
        "CompletionEvent": sse_event({"anyOf": [{"const": "[DONE]"}, json_text({"type": "object"})]}),
        "ResponsesRequest": responses_request,
        "Response": response_obj,
        # Each event names its type in `event:` and in the data; an in-band `error` event ends a broken stream.
        "ResponsesEvent": sse_event(json_text(obj({"type": S, "sequence_number": I}, ("type", "sequence_number")))),
        "ResponseDeleted": obj({"id": S, "object": {"const": "response"}, "deleted": {"const": True}},
                               ("id", "object", "deleted")),
        "EmbeddingRequest": obj({"model": MODEL, "input": {"anyOf": [S, arr(S, minItems=1)]},
                                 "encoding_format": {"enum": ["float", "base64"]},
                                 "dimensions": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}, "user": S},
                                ("model", "input")),
        "EmbeddingList": obj({"object": {"const": "list"}, "model": S, "usage": obj({"prompt_tokens": I, "total_tokens": I}),
                              "data": arr(obj({"object": {"const": "embedding"}, "index": I,
                                               "embedding": {"anyOf": [arr(N), S]}}, ("object", "index", "embedding")))},
                             ("object", "data", "model", "usage")),
        "Model": obj({"id": S, "object": {"const": "model"}, "created": I, "owned_by": S}, ("id", "object", "created", "owned_by")),
        "ModelList": obj({"object": {"const": "list"}, "data": arr(ref("Model"))}, ("object", "data")),
        "AnthropicRequest": anthropic_request,
        "AnthropicMessage": obj({"id": S, "type": {"const": "message"}, "role": {"const": "assistant"}, "model": S,
                                 "content": arr({"type": "object"}), "stop_reason": nullable(S),
                                 "usage": obj({"input_tokens": I, "output_tokens": I})},
                                ("id", "type", "role", "model", "content", "usage")),
        "TokenCount": obj({"input_tokens": I}, ("input_tokens",)),
        "ApiChatRequest": obj({
            "messages": arr(ref("ChatMessage"), minItems=1, maxItems=2048), "model": MODEL, "provider": S,
            "strategy": {"enum": STRATEGIES}, "keyId": S, "maxTokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2}, "topP": {"type": "number", "minimum": 0, "maximum": 1},
            "stop": {"anyOf": [S, arr(S, maxItems=4)]}, "user": S}, ("messages",)),
        "ApiUsage": obj({"promptTokens": I, "completionTokens": I, "totalTokens": I}, ("promptTokens", "completionTokens",
                                                                                        "totalTokens")),
        "ApiChatResponse": obj({"id": S, "object": S, "created": I, "provider": S, "model": S, "usage": ref("ApiUsage"),
                                "choices": arr(obj({"index": I, "finishReason": S, "message": obj(
                                    {"role": S, "content": S}, ("role", "content"))}, ("index", "message", "finishReason")))},
                               ("id", "model", "provider", "choices", "usage")),
        "QuickRequest": obj({"prompt": {"type": "string", "minLength": 1}, "model": MODEL, "provider": S,
                             "maxTokens": {"type": "integer", "minimum": 1},
                             "temperature": {"type": "number", "minimum": 0, "maximum": 2}}, ("prompt",)),
        "QuickResponse": obj({"id": S, "text": S, "model": S, "provider": S, "finishReason": S, "usage": ref("ApiUsage")},
                             ("id", "text", "model", "provider", "finishReason", "usage")),
        "ApiModelList": obj({"models": arr(obj({"id": S, "name": S, "provider": S, "providers": arr(S), "type": S,
                                                "contextLength": I, "maxCompletionTokens": I}, ("id", "name", "providers"))),
                             "total": I}, ("models", "total")),
        # Issue 19: seed 000's POST /api/models/load (Accept: text/event-stream or application/x-ndjson streams
        # the same progress objects, then {"status": "success", "model", "loaded"}).
        "LoadModelRequest": obj({"source": {"type": "string", "minLength": 1, "maxLength": 2048},
                                 "format": {"enum": ["gguf", "ollama", "openai"]},
                                 "name": {"type": "string", "minLength": 1, "maxLength": 128},
                                 "model": {"type": "string", "maxLength": 128}, "api_key": {"type": "string", "maxLength": 4096},
                                 "stream": {"const": False}}, ("source", "format", "name")),
        "LoadedModel": obj({"model": obj({"id": S, "name": S, "provider": S, "providers": arr(S), "loaded": B,
                                          "contextLength": I}, ("id", "name", "loaded")),
                            "loaded": B, "progress": arr(obj({"status": S, "digest": S, "total": I, "completed": I},
                                                             ("status",)))}, ("model", "loaded")),
        "UnloadedModel": obj({"model": obj({"id": S, "name": S, "loaded": B}, ("id", "name")), "unloaded": B},
                             ("model", "unloaded")),
        "CreateKeyRequest": obj({"name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "[A-Za-z0-9]"},
                                 "email": {"type": "string", "maxLength": 320, "pattern": "^([^@]+@[^@]+)?$"},
                                 "tier": {"enum": TIERS}}, ("name",)),
        "ApiKey": api_key,
        "CreatedKey": {"allOf": [api_key, obj({"key": {"type": "string", "minLength": 16}}, ("key",))]},
        "KeyList": obj({"keys": arr(api_key), "total": I}, ("keys", "total")),
        "Revoked": obj({"revoked": {"const": True}, "id": S}, ("revoked", "id")),
        "ModelAlias": obj({"name": S, "models": arr(S), "source": {"type": "string", "enum": ["config", "runtime"]}},
                          ("name", "models", "source")),
        "ModelAliasList": obj({"aliases": arr(ref("ModelAlias"))}, ("aliases",)),
        "SetModelAliasRequest": obj({"models": arr(MODEL, minItems=1, maxItems=16)}, ("models",)),
        "Stats": obj({"totalRequests": I, "promptTokens": I, "completionTokens": I, "totalTokens": I, "costUsd": N,
                      "activeKeys": I, "uptimeSeconds": N,
                      "byModel": {"type": "object", "additionalProperties": obj({"requests": I, "tokens": I, "costUsd": N})},
                      "byStatus": {"type": "object", "additionalProperties": I}},
                     ("totalRequests", "promptTokens", "completionTokens", "totalTokens", "costUsd", "activeKeys")),
        "UsagePage": obj({"data": arr(obj({"request_id": S, "key_id": S, "surface": S, "provider": S, "model": S,
                                           "status": S, "prompt_tokens": I, "completion_tokens": I, "estimated": B,
                                           "cost_usd": N, "latency_ms": N, "attempts": I, "created_at": N},
                                          ("request_id", "status", "created_at"))),
                          "pagination": obj({"total": I, "limit": I, "offset": I, "hasMore": B})}, ("data", "pagination")),
        "Seed004Model": obj({"id": S, "name": S, "context_length": I, "pricing": obj({"prompt": S, "completion": S}),
                             "supported_parameters": arr(S), "providers": arr(S)}, ("id", "name", "pricing")),
        "Seed004ModelPage": obj({"data": arr(ref("Seed004Model")),
                                 "pagination": obj({"total": I, "limit": I, "offset": I, "hasMore": B},
                                                   ("total", "limit", "offset", "hasMore"))}, ("data", "pagination")),
        "Health": obj({"status": {"enum": ["healthy", "draining"]}, "timestamp": S, "uptime": N, "version": S,
                       "environment": S}, ("status", "timestamp", "uptime", "version")),
        "Live": obj({"status": {"const": "ok"}}, ("status",)),
        "Ready": obj({"status": {"enum": ["ready", "not_ready"]}, "checks": {"type": "object", "additionalProperties": S},
                      "draining": B}, ("status", "checks", "draining")),
        # Errors, one shape per surface (gateway_http/errors.py, anthropic/errors.py, seeds/api.py, seeds/inference.py).
        "OpenAIError": obj({"error": obj({"message": S, "type": S, "param": nullable(S), "code": nullable(S)},
                                         ("message", "type", "param", "code"))}, ("error",)),
        "AnthropicError": obj({"type": {"const": "error"}, "error": obj({"type": S, "message": S}, ("type", "message"))},
                              ("type", "error")),
        # The router's own 404 / 405 (no route matched at all) are OpenAI-shaped on every surface.
        "ApiError": {"anyOf": [obj({"error": S, "message": S, "code": S, "resetTime": S, "details": details},
                                   ("error", "message", "code")), ref("OpenAIError")]},
        # Seed 001's /api/auth, /api/tokens, /api/keys, /api/usage shape; a CSRF refusal is {"error": "csrf"}.
        "Seed001Error": {"anyOf": [obj({"error": obj({"code": S, "message": S, "details": details}, ("code", "message")),
                                        "requestId": S}, ("error",)),
                                   obj({"error": {"const": "csrf"}, "message": S, "code": S}, ("error", "message")),
                                   ref("OpenAIError")]},
        # Issue 16 (ACCOUNTS_API.md).
        "User": obj({"id": S, "email": S, "role": {"enum": ["admin", "user"]}, "plan": S, "tier": S,
                     "state": {"enum": ["active", "suspended", "deleted"]}, "created_at": nullable(S),
                     "budget_usd_day": N, "budget_usd_month": N}, ("id", "email", "role", "plan", "state")),
        "LoginRequest": {"anyOf": [
            obj({"email": {"type": "string", "maxLength": 254}, "password": {"type": "string", "maxLength": 1024}},
                ("email", "password")),
            obj({"admin_key": {"type": "string", "maxLength": 4096}}, ("admin_key",))]},
        "SignedIn": obj({"token": S, "user": ref("User"), "csrf_token": S, "expiresAt": nullable(S)},
                        ("token", "user", "csrf_token")),
        "Session": obj({"id": S, "created_at": nullable(S), "last_used_at": nullable(S), "expires_at": nullable(S),
                        "current": B, "user_agent": S, "ip": S}, ("id", "created_at", "current")),
        "Registration": obj({"enabled": B}, ("enabled",)),
        "UserPage": obj({"items": arr({"allOf": [ref("User"), obj({"tokens": I, "spend_month_usd": N},
                                                                  ("tokens", "spend_month_usd"))]}),
                         "total": I}, ("items", "total")),
        "CreateUserRequest": obj({"email": {"type": "string", "maxLength": 254}, "plan": {"enum": TIERS},
                                  "role": {"enum": ["admin", "user"]}, "password": {"type": "string", "maxLength": 1024}},
                                 ("email", "plan")),
        "Bucket": obj({"requests": I, "prompt_tokens": I, "completion_tokens": I, "cost_usd": N, "model": S, "date": S},
                      ("requests", "prompt_tokens", "completion_tokens", "cost_usd")),
        "Statement": obj({"user_id": S, "email": S, "month": S, "plan": S, "state": S, "plan_price_usd": nullable(N),
                          "lines": arr(ref("Bucket")), "requests": I, "prompt_tokens": I, "completion_tokens": I,
                          "usage_cost_usd": N, "total_usd": N},
                         ("user_id", "month", "plan", "plan_price_usd", "lines", "usage_cost_usd", "total_usd")),
        "Quota": obj({"plan": S, "limits": arr(obj({"name": S, "label": S, "limit": N, "used": N, "remaining": N,
                                                    "reset_at": nullable(S)}, ("name", "limit", "used", "remaining")))},
                     ("plan", "limits")),
        "UsageSummary": obj({"period": obj({"since": nullable(S), "until": nullable(S)}), "requests": I,
                             "prompt_tokens": I, "completion_tokens": I, "cost_usd": N, "by_day": arr(ref("Bucket")),
                             "by_model": arr(ref("Bucket"))}, ("period", "requests", "cost_usd", "by_day", "by_model")),
        "Plan": obj({"name": S, "description": S, "rpm": I, "rpd": I, "tpd": I, "tpm_month": I,
                     "price_usd_month": nullable(N), "budget_usd_day": N, "budget_usd_month": N, "users": I},
                    ("name", "rpm", "price_usd_month", "users")),
        "PlanBody": obj({"name": {"type": "string", "maxLength": 64}, "description": {"type": "string", "maxLength": 500},
                         **{f: nullable({"type": "integer", "minimum": 0, "maximum": 1_000_000_000_000})
                            for f in ("rpm", "rpd", "tpd", "tpm_month")},
                         "price_usd_month": nullable({"type": "number", "minimum": 0, "maximum": 1e6}),
                         "budget_usd_day": nullable({"type": "number", "minimum": 0, "maximum": 1e9}),
                         "budget_usd_month": nullable({"type": "number", "minimum": 0, "maximum": 1e9})}),
        "CreatedUser": obj({"user": ref("User"), "invite_token": S}, ("user",)),
        "Seed004Error": {"anyOf": [obj({"error": obj({"code": I, "message": S, "type": S, "details": {"type": "object"}},
                                                     ("code", "message", "type"))}, ("error",)), ref("OpenAIError")]},
    }


def document(version: str) -> dict[str, Any]:
    key_header = [param("X-API-Key", "header", S)]  # also a security scheme; declared so links can set it
    paths = {
        "/v1/chat/completions": {"post": op("createChatCompletion", "OpenAI chat completion (stream or not)", USER,
                                            responses({200: ref("ChatCompletion")}, "OpenAIError", CHAT_ERRORS,
                                                      sse=ref("ChatCompletionEvent")),
                                            ref("ChatCompletionRequest"), key_header, examples=CHAT_EXAMPLES)},
        "/v1/embeddings": {"post": op("createEmbedding", "OpenAI embeddings", USER,
                                      responses({200: ref("EmbeddingList")}, "OpenAIError", CHAT_ERRORS),
                                      ref("EmbeddingRequest"))},
        "/v1/images/generations": {"post": op("createImage", "OpenAI image generation on a route that has it", USER,
                                              responses({200: {"type": "object"}}, "OpenAIError", CHAT_ERRORS),
                                              obj({"model": MODEL, "prompt": {"type": "string", "minLength": 1},
                                                   "n": {"type": "integer", "minimum": 1, "maximum": 10}, "size": S,
                                                   "quality": S}, ("model", "prompt")), key_header)},
        "/v1/audio/speech": {"post": op("createSpeech", "OpenAI text to speech on a route that has it", USER,
                                        media_responses("audio/mpeg"),
                                        obj({"model": MODEL, "input": {"type": "string", "minLength": 1}, "voice": S,
                                             "response_format": S}, ("model", "input", "voice")), key_header)},
        "/v1/audio/transcriptions": {"post": transcription_op(key_header)},
        "/v1/completions": {"post": op("createCompletion", "OpenAI legacy completions (prompt, suffix; stream or not)", USER,
                                       responses({200: ref("Completion")}, "OpenAIError", CHAT_ERRORS,
                                                 sse=ref("CompletionEvent")),
                                       ref("CompletionRequest"), key_header)},
        "/v1/responses": {
            "post": op("createResponse", "OpenAI Responses API (stream or not; previous_response_id)", USER,
                       responses({200: ref("Response")}, "OpenAIError", CHAT_ERRORS, sse=ref("ResponsesEvent")),
                       ref("ResponsesRequest"), key_header, examples=RESPONSES_EXAMPLES),
            "get": op("responsesWebSocket", "Codex's WebSocket transport: refused at once (426), use POST", USER,
                      {"426": {"description": "No WebSocket transport here", "headers": {"X-Request-Id": {
                          "required": True, "schema": {"type": "string", "pattern": "^req_[0-9a-f]+$"}}}, "content": {
                          "application/json": {"schema": ref("OpenAIError")}}}})},
        "/v1/responses/{id}": {
            "get": op("getResponse", "One of the caller's stored responses", USER,
                      responses({200: ref("Response")}, "OpenAIError", (401, 403, 404, 429, 503)),
                      params=[param("id", "path", {"type": "string", "minLength": 1})]),
            "delete": op("deleteResponse", "Delete one of the caller's stored responses", USER,
                         responses({200: ref("ResponseDeleted")}, "OpenAIError", (401, 403, 404, 429, 503)),
                         params=[param("id", "path", {"type": "string", "minLength": 1})])},
        "/v1/models": {"get": op("listModels", "Routable models (OpenAI shape)", USER,
                                 responses({200: ref("ModelList")}, "OpenAIError", (401, 403, 429, 503)), params=key_header)},
        "/v1/models/{id}": {"get": op("getModel", "One model (OpenAI shape)", USER,
                                      responses({200: ref("Model")}, "OpenAIError", (401, 403, 404, 429, 503)),
                                      params=[param("id", "path", {"type": "string", "minLength": 1})])},
        "/v1/messages": {"post": op("createMessage", "Anthropic Messages (stream or not), routed like any chat", USER,
                                    responses({200: ref("AnthropicMessage")}, "AnthropicError",
                                              (400, 401, 403, 404, 413, 429, 502, 503, 504), sse=ref("AnthropicEvent")),
                                    ref("AnthropicRequest"), examples=MESSAGES_EXAMPLES)},
        "/v1/messages/count_tokens": {"post": op("countTokens", "An estimate of a Messages request's input tokens", USER,
                                                 responses({200: ref("TokenCount")}, "AnthropicError", (400, 401, 403, 413, 429)),
                                                 {**ref("AnthropicRequest")})},
        "/api/chat": {"post": op("apiChat", "Seed 000/001 chat (camelCase)", USER,
                                 responses({200: ref("ApiChatResponse")}, "ApiError", (400, 401, 403, 404, 413, 429, 502, 503, 504)),
                                 ref("ApiChatRequest"))},
        "/api/quick": {"post": op("apiQuick", "Seed 000 one-prompt chat", USER,
                                  responses({200: ref("QuickResponse")}, "ApiError", (400, 401, 403, 404, 413, 429, 502, 503, 504)),
                                  ref("QuickRequest"))},
        "/api/models": {"get": op("apiModels", "Seed 000 model list", USER,
                                  responses({200: ref("ApiModelList")}, "ApiError", (401, 403, 429, 503)))},
        "/api/models/load": {"post": op("loadModel", "Seed 000: load a model (gguf file, Ollama library, OpenAI-compatible URL)",
                                        USER + ADMIN, responses({201: ref("LoadedModel")}, "ApiError",
                                                                (400, 401, 403, 404, 409, 413, 429, 503)),
                                        ref("LoadModelRequest"))},
        "/api/models/{name}": {"delete": op("unloadModel", "Remove a loaded model from routing (calls under way finish)",
                                            USER + ADMIN, responses({200: ref("UnloadedModel")}, "ApiError", (401, 403, 404, 429)),
                                            params=[param("name", "path", {"type": "string", "minLength": 1})])},
        "/api/admin/keys": {
            "post": op("createApiKey", "Issue an API key (shown once)", ADMIN,
                       responses({201: ref("CreatedKey")}, "ApiError", (400, 401, 403, 413)), ref("CreateKeyRequest"),
                       links={"UseKey": {"operationId": "listModels", "parameters": {"header.X-API-Key": "$response.body#/key"}},
                              "ChatWithKey": {"operationId": "createChatCompletion",
                                              "parameters": {"header.X-API-Key": "$response.body#/key"}},
                              "RevokeKey": {"operationId": "revokeApiKey", "parameters": {"path.id": "$response.body#/id"}}}),
            "get": op("listApiKeys", "API keys (never their secrets)", ADMIN,
                      responses({200: ref("KeyList")}, "ApiError", (401, 403)),
                      params=[param("include_revoked", "query", {"enum": ["true", "false", "1", "0", "yes", "no"]})]),
        },
        "/api/admin/aliases": {"get": op("listModelAliases", "Model aliases in effect (config and run time)", ADMIN,
                                         responses({200: ref("ModelAliasList")}, "ApiError", (401, 403)))},
        "/api/admin/aliases/{name}": {
            "put": op("setModelAlias", "Add or replace a run-time model alias (ordered fallback group)", ADMIN,
                      responses({200: ref("ModelAlias")}, "ApiError", (400, 401, 403, 413)), ref("SetModelAliasRequest"),
                      params=[param("name", "path", {"type": "string", "minLength": 1, "maxLength": 128})]),
            "delete": op("deleteModelAlias", "Remove a run-time model alias", ADMIN,
                         responses({200: ref("ModelAlias")}, "ApiError", (400, 401, 403, 404)),
                         params=[param("name", "path", {"type": "string", "minLength": 1, "maxLength": 128})])},
        "/api/admin/keys/{id}": {"delete": op("revokeApiKey", "Revoke an API key", ADMIN,
                                              responses({200: ref("Revoked")}, "ApiError", (401, 403, 404)),
                                              params=[param("id", "path", {"type": "string", "minLength": 1})])},
        "/api/auth/login": {"post": op("login", "Sign in (email and password, or the admin key); sets the console cookies",
                                       [], responses({200: ref("SignedIn")}, "Seed001Error", (400, 401, 403, 413, 429)),
                                       ref("LoginRequest"))},
        "/api/auth/me": {"get": op("getMe", "The account of the current session or token", USER,
                                   responses({200: ref("User")}, "Seed001Error", (401, 403)))},
        "/api/auth/sessions": {"get": op("listSessions", "The caller's live sessions, with last use", USER,
                                         responses({200: arr(ref("Session"))}, "Seed001Error", (401, 403)))},
        "/api/auth/registration": {"get": op("getRegistration", "Whether sign-up is open", [],
                                             responses({200: ref("Registration")}, "Seed001Error", ()))},
        "/api/admin/users": {
            "get": op("listUsers", "Users: search by email, filter by plan/role/state, pages", ADMIN,
                      responses({200: ref("UserPage")}, "Seed001Error", (400, 401, 403)), params=[
                          param("q", "query", {"type": "string", "maxLength": 254}), param("plan", "query", {"enum": TIERS}),
                          param("role", "query", {"enum": ["admin", "user"]}),
                          param("state", "query", {"enum": ["active", "suspended", "deleted"]}),
                          param("limit", "query", {"type": "integer", "minimum": 0, "maximum": 500}),
                          param("offset", "query", {"type": "integer", "minimum": 0})]),
            "post": op("createUser", "Create a user in a plan (an invite token when no password)", ADMIN,
                       responses({201: ref("CreatedUser")}, "Seed001Error", (400, 401, 403, 409, 413)),
                       ref("CreateUserRequest")),
        },
        "/api/admin/users/{id}": {"get": op("getUser", "One user: tokens, provider keys (masked), usage this month, sessions",
                                            ADMIN, responses({200: ref("User")}, "Seed001Error", (401, 403, 404)),
                                            params=[param("id", "path", {"type": "string", "minLength": 1,
                                                                         "maxLength": 64, "pattern": "^[A-Za-z0-9_]+$"})])},
        "/api/admin/provider-keys": {"get": op(
            "listGatewayKeys", "Gateway-wide provider keys: the config's (read-only) and run-time ones, masked", ADMIN,
            responses({200: arr(obj({"id": S, "name": S, "provider": S, "base_url": nullable(S), "mask": S,
                                     "models": arr(S), "priority": I, "disabled": B, "source": {"enum": ["config", "store"]}},
                                    ("id", "provider", "mask", "disabled", "source")))}, "Seed001Error", (401, 403)))},
        "/api/quota": {"get": op("getQuota", "The caller's plan and live limits, budgets included", USER,
                                 responses({200: ref("Quota")}, "Seed001Error", (401, 403)))},
        "/api/usage/summary": {"get": op("usageSummary", "The caller's usage by day and model (default: this month)", USER,
                                         responses({200: ref("UsageSummary")}, "Seed001Error", (400, 401, 403)), params=[
                                             param("since", "query", {"type": "number", "minimum": 0, "maximum": 4e9}),
                                             param("until", "query", {"type": "number", "minimum": 0, "maximum": 4e9})])},
        "/api/statements": {"get": op("getStatement", "The caller's statement for a month (CSV with format=csv)", USER,
                                      responses({200: ref("Statement")}, "Seed001Error", (400, 401, 403)),
                                      params=[param("month", "query", {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"})])},
        "/api/admin/plans": {
            "get": op("listPlans", "Plans: limits, monthly price (null = custom), budgets, users", ADMIN,
                      responses({200: arr(ref("Plan"))}, "Seed001Error", (401, 403))),
            "post": op("createPlan", "Create a plan at run time (every replica within seconds); 409 if the name exists",
                       ADMIN, responses({201: ref("Plan")}, "Seed001Error", (400, 401, 403, 409, 413)),
                       ref("PlanBody"))},
        "/api/admin/plans/{name}": {
            "put": op("updatePlan", "Replace a plan's description, limits, price and budgets (wins over the config's)",
                      ADMIN, responses({200: ref("Plan")}, "Seed001Error", (400, 401, 403, 404, 413)),
                      ref("PlanBody"), params=[PLAN_NAME]),
            "delete": op("deletePlan", "Delete a run-time plan nobody is on (409 if in use or declared in the config)",
                         ADMIN, no_content(responses({}, "Seed001Error", (401, 403, 404, 409))), params=[PLAN_NAME])},
        "/api/admin/statements": {"get": op("listStatements", "Every user's statement for a month", ADMIN,
                                            responses({200: arr(ref("Statement"))}, "Seed001Error", (400, 401, 403)),
                                            params=[param("month", "query", {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"})])},
        "/api/admin/audit": {"get": op("listAudit", "The audit log, newest first (who, what, when, from where, before/after)",
                                       ADMIN, responses({200: arr(obj({"id": S, "actor": S, "action": S, "target": S,
                                                                       "ip": S, "created_at": nullable(S), "before": {},
                                                                       "after": {}}, ("id", "actor", "action")))},
                                                        "Seed001Error", (400, 401, 403)), params=[
                                           param("actor", "query", {"type": "string", "maxLength": 100}),
                                           param("action", "query", {"type": "string", "maxLength": 100}),
                                           param("since", "query", {"type": "number", "minimum": 0, "maximum": 4e9}),
                                           param("until", "query", {"type": "number", "minimum": 0, "maximum": 4e9}),
                                           param("limit", "query", {"type": "integer", "minimum": 0, "maximum": 500}),
                                           param("offset", "query", {"type": "integer", "minimum": 0})])},
        "/api/admin/alerts": {"get": op("listAlerts", "Alerts, newest first", ADMIN,
                                        responses({200: arr(obj({"id": S, "kind": S, "subject": S, "message": S,
                                                                 "created_at": nullable(S), "delivered": B},
                                                                ("id", "kind", "delivered")))},
                                                  "Seed001Error", (400, 401, 403)), params=[
                                            param("limit", "query", {"type": "integer", "minimum": 0, "maximum": 500}),
                                            param("offset", "query", {"type": "integer", "minimum": 0})])},
        "/api/admin/stats": {"get": op("adminStats", "Totals from the ledger", ADMIN,
                                       responses({200: ref("Stats")}, "ApiError", (401, 403)))},
        "/api/admin/usage": {"get": op("adminUsage", "The ledger, newest first", ADMIN,
                                       responses({200: ref("UsagePage")}, "ApiError", (400, 401, 403)), params=[
                                           param("limit", "query", {"type": "integer", "minimum": 0, "maximum": 1000}),
                                           param("offset", "query", {"type": "integer", "minimum": 0}),
                                           param("key_id", "query", S), param("user", "query", S), param("model", "query", S),
                                           param("since", "query", {"type": "number", "minimum": 0}),
                                           param("until", "query", {"type": "number", "minimum": 0})])},
        "/api/v1/inference": {"post": op("seed004Inference", "Seed 004 inference (OpenAI body; stream honoured)", USER,
                                         responses({200: ref("ChatCompletion")}, "Seed004Error", CHAT_ERRORS,
                                                   sse=ref("Seed004Event")),
                                         ref("ChatCompletionRequest"), examples=CHAT_EXAMPLES)},
        "/api/v1/models": {"get": op("seed004Models", "Seed 004 catalogue page", USER,
                                     responses({200: ref("Seed004ModelPage")}, "Seed004Error", (400, 401, 403, 429, 503)),
                                     params=[param("provider", "query", S), param("search", "query", S),
                                             param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}),
                                             param("offset", "query", {"type": "integer", "minimum": 0})])},
        "/api/v1/models/{id}": {"get": op("seed004Model", "Seed 004 model (ids may hold slashes)", USER,
                                          responses({200: obj({"data": {"type": ["object", "array"]}}, ("data",))},
                                                    "Seed004Error", (400, 401, 403, 404, 429, 503)),
                                          params=[param("id", "path", {"type": "string", "minLength": 1})])},
        "/health": {"get": op("health", "Liveness with uptime (seeds 002, 004)", [],
                              responses({200: ref("Health")}, "OpenAIError", ()))},
        "/api/health": {"get": op("apiHealth", "Seed 000 health", [], responses({200: ref("Health")}, "OpenAIError", ()))},
        "/health/live": {"get": op("healthLive", "Liveness", [], responses({200: ref("Live")}, "OpenAIError", ()))},
        "/health/ready": {"get": op("healthReady", "Readiness: store and limiter", [],
                                    responses({200: ref("Ready")}, "OpenAIError", ()))},
        "/openapi.json": {"get": op("openapi", "This document", [], responses({200: {"type": "object"}}, "OpenAIError", ()))},
    }
    paths["/health/ready"]["get"]["responses"]["503"] = {
        "description": "Not ready", "headers": paths["/health/ready"]["get"]["responses"]["200"]["headers"],
        "content": {"application/json": {"schema": ref("Ready")}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tollgate HTTP bridge", "version": version,
                 "description": "OpenAI-, Anthropic- and seed-compatible surfaces over the Tollgate gRPC core."},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key as a bearer token"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "adminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"},
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def add_routes(app: web.Application) -> None:
    app[OPENAPI] = orjson.dumps(document(app[BRIDGE].settings.version))
    app.router.add_get("/openapi.json", openapi_json)
