"""A failover wall: an OpenAI-shaped upstream whose model name picks a Failover Bench fault (RELIABILITY A9).

Two routes on one server: /primary/v1 (the faulty provider) and /fallback/v1 (the healthy one).
Each model `fb-sNN-…` injects scenario NN's fault on the primary, as the Failover Bench
catalogue describes it (failoverbench/failoverbench scenarios/catalogue.yaml, methodology 0.1);
the fallback answers the canonical 60-token answer, naming the model it was asked for, as a real
provider does (the bench's own fallback is the model `fb-ok`, also served here). Shapes are OpenAI's
(chat.completion.chunk with a role chunk, one chunk per token, a finish chunk, a usage chunk
when stream_options.include_usage, `data: [DONE]`; error JSON {"error": {message, type, param,
code}}). Every attempt is recorded with its route, model and arrival time, which is what the
bench scores attempts and gaps on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

import orjson
from aiohttp import web

TOKENS = [f"w{i} " for i in range(60)]
CANONICAL = "".join(TOKENS)
FALLBACK_MODEL = "fb-ok"
_ids = itertools.count(1)
WALL: web.AppKey["Wall"] = web.AppKey("wall")


@dataclass
class Attempt:
    route: str  # "primary" | "fallback"
    model: str
    t: float  # time.monotonic() on arrival
    prefill: bool  # the last message was the assistant's (a continuation)


@dataclass
class Wall:
    base_url: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    flap_until: dict[str, float] = field(default_factory=dict)  # model -> monotonic end of its 503 spell (S15)
    silent_s: float = 120.0  # S06: how long the primary stays silent
    slow_first_s: float = 20.0  # S07: first token after this
    stall_s: float = 30.0  # S09: silence after 20 tokens, then the connection closes

    def of(self, model: str, route: str) -> list[Attempt]:
        return [a for a in self.attempts if a.model == model and a.route == route]

    def prefill_rejected(self, model: str) -> bool:
        return any(a.prefill for a in self.of(model, "fallback"))


def _error(status: int, message: str, etype: str, code: str | None = None, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, headers=headers, content_type="application/json",
                        body=orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}}))


def make_app(wall: Wall) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        route = request.match_info["route"]
        body = await request.json()
        model = str(body.get("model", ""))
        msgs = body.get("messages") or [{}]
        prefill = (msgs[-1] or {}).get("role") == "assistant"
        wall.attempts.append(Attempt(route, model, time.monotonic(), prefill))
        n = len(wall.of(model, route))
        if route == "fallback":
            if prefill and model.startswith("fb-s14"):
                return _error(400, "This model does not support assistant message prefill.", "invalid_request_error",
                              "prefill_not_supported")
            return await _answer(request, body, model)
        s = model[:6]
        if s == "fb-s01" and n == 1:
            return _error(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded", {"Retry-After": "2"})
        if s == "fb-s02":
            return _error(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded")
        if s == "fb-s03" and n == 1:
            return _error(500, "The server had an error while processing your request.", "server_error")
        if s in ("fb-s04", "fb-s16"):
            return _error(503, "The server is overloaded.", "server_error")
        if s == "fb-s05" and n == 1:
            request.transport.close()
            return web.Response(status=500)
        if s == "fb-s06":
            await asyncio.sleep(wall.silent_s)
            return _error(504, "silent too long", "server_error")
        if s == "fb-s12":
            return _error(400, "This model's maximum context length is 128 tokens.", "invalid_request_error",
                          "context_length_exceeded")
        if s == "fb-s13":
            return _error(400, "The response was filtered due to the prompt triggering content management policy.",
                          "invalid_request_error", "content_policy_violation")
        if s == "fb-s15" and time.monotonic() < wall.flap_until.get(model, 0.0):
            return _error(503, "The server is overloaded.", "server_error")
        return await _answer(request, body, model, fault=s)

    app = web.Application()
    app.router.add_post("/{route:primary|fallback}/v1/chat/completions", chat)
    return app


async def _answer(request: web.Request, body: dict, model: str, fault: str = "") -> web.StreamResponse:
    wall: Wall = request.app[WALL]
    cid = f"chatcmpl-wall{next(_ids)}"
    usage = {"prompt_tokens": 20, "completion_tokens": len(TOKENS), "total_tokens": 20 + len(TOKENS)}
    if not body.get("stream"):
        return web.Response(content_type="application/json", body=orjson.dumps({
            "id": cid, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": CANONICAL}, "logprobs": None,
                         "finish_reason": "stop"}], "usage": usage}))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    head = {"id": cid, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                             "finish_reason": finish}]}) + b"\n\n"

    await resp.write(chunk({"role": "assistant", "content": ""}))
    if fault == "fb-s07":
        await asyncio.sleep(wall.slow_first_s)
    for i, tok in enumerate(TOKENS):
        if fault in ("fb-s08", "fb-s14") and i == 40:
            request.transport.close()
            return resp
        if fault == "fb-s09" and i == 20:
            await asyncio.sleep(wall.stall_s)
            request.transport.close()
            return resp
        if fault == "fb-s10" and i == 8:  # the role chunk is event 1: this is the tenth
            await resp.write(b"data: {\"id\": \"broken\", \"choices\": [{\"delta\": \n\n")
        await resp.write(chunk({"content": tok}))
    await resp.write(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        await resp.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
    if fault != "fb-s11":
        await resp.write(b"data: [DONE]\n\n")
    return resp


@asynccontextmanager
async def run_wall(**kw) -> AsyncIterator[Wall]:
    wall = Wall(**kw)
    app = make_app(wall)
    app[WALL] = wall
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    wall.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield wall
    finally:
        await runner.cleanup()
