"""OpenAI's legacy Completions API: POST /v1/completions (prompt, suffix for fill-in-the-middle, stream).

The prompt travels as one user turn of a ChatInput with the body along (raw_body), so an
OpenAI-shaped or Ollama route gets the body as sent (suffix included) and its answer back
unchanged, and any other route is translated to chat (services/fidelity.py: suffix, echo,
best_of, logprobs there are a 400 naming them). The answer is rendered here as a
`text_completion` when it was translated.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError, openai_bridge_error, openai_error, stream_error_event
from gateway_http.openai import codec
from gateway_http.openai.routes import chat_answer
from gateway_http.sse import SSE_HEADERS, start_stream
from tollgate.client import error_info
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb

SURFACE = "openai_completions"
# What the translation honours; anything else goes along for an OpenAI-shaped route.
KNOWN_FIELDS = frozenset({"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream",
                          "stream_options", "user", "presence_penalty", "frequency_penalty"})
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions


def completion_input(body: dict, raw: bytes, into: pb.ChatInput) -> pb.ChatInput:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise codec.invalid("Invalid value for 'prompt': expected a string (one prompt per request here).", "prompt")
    chat = {k: v for k, v in body.items() if k in KNOWN_FIELDS and k not in ("prompt", "stream", "stream_options")}
    chat["messages"] = [{"role": "user", "content": prompt}]
    chat.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    inp = codec.chat_input(chat, SURFACE, into)
    inp.raw_body = raw
    inp.extra_fields.extend([k for k in body if k not in KNOWN_FIELDS])
    return inp


def _finish(f: int) -> str:
    return codec.FINISH.get(f, "stop")


def _completion_json(resp: ipb.ChatResponse, model: str) -> bytes:
    return orjson.dumps({
        "id": "cmpl-" + resp.id.removeprefix("req_"), "object": "text_completion", "created": resp.created,
        "model": resp.route.model or model,
        "choices": [{"text": resp.text, "index": 0, "logprobs": None, "finish_reason": _finish(resp.finish_reason)}],
        "usage": {"prompt_tokens": resp.usage.prompt_tokens, "completion_tokens": resp.usage.completion_tokens,
                  "total_tokens": resp.usage.total_tokens}})


async def completions(request: web.Request) -> web.StreamResponse:
    t0 = time.monotonic()
    try:
        raw = await read_body(request)
        body = codec.load_json(raw)
        stream = body.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            raise codec.invalid("Invalid type for 'stream': expected a boolean.", "stream", 422)
        req = ipb.StreamChatRequest() if stream else ipb.ChatRequest()
        inp = completion_input(body, raw, req.input)
        include_usage = codec.stream_options(body)
    except BridgeError as e:
        return openai_bridge_error(e)
    if not stream:
        return await chat_answer(request, req, _completion_json, inp.model, None)

    req.include_usage = include_usage
    call = calls.client(request).inference.StreamChat(req, metadata=calls.metadata(request), timeout=calls.timeout(request))
    response: web.StreamResponse | None = None
    head: dict = {}
    relayed = False
    try:
        async for msg in call:
            kind = msg.WhichOneof("event")
            if kind == "raw":
                await response.write(msg.raw)  # type: ignore[union-attr]
            elif kind == "delta":
                for d in msg.delta.deltas:
                    if d.text or d.finish_reason:
                        chunk = {**head, "choices": [{"text": d.text, "index": 0, "logprobs": None,
                                                      "finish_reason": _finish(d.finish_reason) if d.finish_reason else None}]}
                        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")  # type: ignore[union-attr]
            elif kind == "start":
                st = msg.start
                relayed = st.raw
                head = {"id": "cmpl-" + st.id.removeprefix("req_"), "object": "text_completion", "created": st.created,
                        "model": st.route.model or inp.model}
                response = await start_stream(request, call, t0, SSE_HEADERS)
            elif kind == "usage":
                u = msg.usage
                await response.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": {  # type: ignore[union-attr]
                    "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                    "total_tokens": u.total_tokens}}) + b"\n\n")
        if response is None:
            raise BridgeError(502, "upstream returned an empty stream")
        await response.write_eof(b"" if relayed else codec.DONE)
    except AioRpcError as e:
        info = error_info(e)
        if response is None:
            return openai_error(info)
        await response.write(stream_error_event(info))
    except BridgeError as e:
        return openai_bridge_error(e)
    finally:
        call.cancel()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/completions", completions)
