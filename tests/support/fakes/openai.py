"""A wire-faithful fake OpenAI Chat Completions upstream, with faults picked by model name.

Shapes follow the OpenAI API reference (chat.completion, chat.completion.chunk with a role
chunk, one chunk per token, a finish chunk, a usage chunk when stream_options.include_usage,
`data: [DONE]`; error bodies {"error": {message, type, param, code}}); the official openai
SDK parses every normal answer (tests/support/test_fakes.py). Model names pick faults:
  fault-503-xN        first N calls answer 503, then normal     fault-503 (always)
  fault-429-retry-S   429 with Retry-After: S                    fault-400 / fault-401 / fault-404
  fault-cut-after-N   stream N tokens, then close the connection without [DONE]
  fault-stall-after-N stream N tokens, then stay silent          fault-slow-first-S (first token after S s)
  fault-reset         close the connection before any headers    fault-garbage (200 with non-JSON)
  fault-error-chunk   an `error` object mid-stream               fault-context (400 context_length_exceeded)
  fault-no-usage      a stream with no usage chunk even when asked
Any other model answers "tok0 tok1 …" with `tokens` tokens (default 8; `tokens-N` picks N).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

import orjson
from aiohttp import web

from tests.support.fakes import openai_completions, openai_media, openai_responses

_ids = itertools.count(1)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class FakeOpenAI:
    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    disconnects: int = 0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    streams_started: int = 0
    tokens_sent: int = 0  # completion tokens written to clients, for ledger checks
    accepted_keys: set[str] | None = None
    listed_models: list[str] = field(default_factory=lambda: ["gpt-4o-mini"])  # what GET /v1/models lists
    prompt_tokens: int = 7
    # > 0: SO_SNDBUF of each streaming response's socket, so that a test sees backpressure reach
    # this fake before megabytes pile up in kernel buffers (RELIABILITY E7)
    stream_sndbuf: int = 0
    # When set, plain (non-stream) answers wait for it: a test decides when admitted requests finish.
    hold: asyncio.Event | None = None

    def count(self, model: str) -> int:
        self.counters[model] = self.counters.get(model, 0) + 1
        return self.counters[model]


def _error(status: int, message: str, etype: str, code: str | None = None, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, headers=headers, content_type="application/json",
                        body=orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}}))


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def make_app(state: FakeOpenAI) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state.requests.append(Recorded(request.path, dict(request.headers), body))
        if state.accepted_keys is not None:
            auth = request.headers.get("Authorization", "")
            if auth.removeprefix("Bearer ") not in state.accepted_keys:
                return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        model = str(body.get("model", ""))
        n = state.count(model)
        m = re.fullmatch(r"fault-503-x(\d+)", model)
        if model == "fault-503" or (m and n <= int(m.group(1))):
            return _error(503, "The server is overloaded.", "server_error")
        if m := re.fullmatch(r"fault-429-retry-([\d.]+)", model):
            return _error(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded",
                          headers={"Retry-After": m.group(1)})
        if model == "fault-400":
            return _error(400, "Invalid value for 'temperature'.", "invalid_request_error", "invalid_value")
        if model == "fault-context":
            return _error(400, "This model's maximum context length is 8 tokens.", "invalid_request_error", "context_length_exceeded")
        if model == "fault-401":
            return _error(401, "Incorrect API key provided: sk-****.", "invalid_request_error", "invalid_api_key")
        if model == "fault-404":
            return _error(404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found")
        if model == "fault-reset":
            request.transport.close()
            return web.Response(status=500)
        if model == "fault-garbage":
            return web.Response(status=200, body=b"<html>gateway error</html>", content_type="text/html")
        tokens = 8
        if m := re.fullmatch(r"tokens-(\d+)", model):
            tokens = int(m.group(1))
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int):
            tokens = min(tokens, max_tokens)
        pieces = [f"tok{i} " for i in range(tokens)]
        cid = f"chatcmpl-fake{next(_ids)}"
        if not body.get("stream"):
            await _slow_first(model)
            if state.hold is not None:
                await state.hold.wait()
            state.tokens_sent += len(pieces)
            return web.Response(content_type="application/json", body=orjson.dumps({
                "id": cid, "object": "chat.completion", "created": 1_700_000_000, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": _usage(state.prompt_tokens, len(pieces)), "system_fingerprint": "fp_fake"}))
        return await _stream(request, state, body, model, cid, pieces)

    async def models(request: web.Request) -> web.Response:
        state.requests.append(Recorded(request.path, dict(request.headers), {}))
        if state.accepted_keys is not None:
            if request.headers.get("Authorization", "").removeprefix("Bearer ") not in state.accepted_keys:
                return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return web.Response(content_type="application/json", body=orjson.dumps({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "openai"} for m in state.listed_models]}))

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        state.requests.append(Recorded(request.path, dict(request.headers), body))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = body.get("dimensions") or 4
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t) % 7) / 7 + j / 100 for j in range(dims)]}
                for i, t in enumerate(inputs)]
        pt = sum(len(t.split()) for t in inputs)
        return web.Response(content_type="application/json", body=orjson.dumps(
            {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": pt, "total_tokens": pt}}))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    openai_responses.add_routes(app, state)
    openai_completions.add_route(app, lambda r, body: state.requests.append(Recorded(r.path, dict(r.headers), body)))
    openai_media.add_routes(app, lambda r, body: state.requests.append(Recorded(r.path, dict(r.headers), body)))
    return app


async def _slow_first(model: str) -> None:
    if m := re.fullmatch(r"fault-slow-first-([\d.]+)", model):
        await asyncio.sleep(float(m.group(1)))


async def _stream(request: web.Request, state: FakeOpenAI, body: dict, model: str, cid: str, pieces: list[str]):
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    if state.stream_sndbuf and request.transport is not None:
        request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, state.stream_sndbuf)
    await resp.prepare(request)
    state.streams_started += 1
    head = {"id": cid, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "system_fingerprint": "fp_fake"}

    def chunk(delta: dict, finish=None) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}) + b"\n\n"

    cut = re.fullmatch(r"fault-cut-after-(\d+)", model)
    stall = re.fullmatch(r"fault-stall-after-(\d+)", model)
    try:
        await _slow_first(model)
        await resp.write(chunk({"role": "assistant", "content": "", "refusal": None}))
        for i, p in enumerate(pieces):
            if cut and i >= int(cut.group(1)):
                request.transport.close()
                return resp
            if stall and i >= int(stall.group(1)):
                await asyncio.sleep(3600)
            if model == "fault-error-chunk" and i == 2:
                await resp.write(b"data: " + orjson.dumps({"error": {"message": "overloaded mid-stream", "type": "server_error"}}) + b"\n\n")
                return resp
            await resp.write(chunk({"content": p}))
            state.tokens_sent += 1
            await asyncio.sleep(0)
        await resp.write(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage") and model != "fault-no-usage":
            await resp.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": _usage(state.prompt_tokens, len(pieces))}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
    except (asyncio.CancelledError, ConnectionResetError):
        state.disconnects += 1
        state.disconnected.set()
        raise
    return resp


@asynccontextmanager
async def run_fake_openai() -> AsyncIterator[FakeOpenAI]:
    state = FakeOpenAI()
    runner = web.AppRunner(make_app(state), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    try:
        yield state
    finally:
        await runner.cleanup()
