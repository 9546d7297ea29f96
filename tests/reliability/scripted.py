"""Harness for the routing scenarios: a scripted OpenAI-shaped upstream, a Router on a FakeClock,
and a whole gateway on a FakeClock.

fakes/openai.py picks its fault by model name, so a primary and a fallback asked for the same
model fail alike. Failover scenarios need the opposite: one upstream failing (by turn, by key,
or from a switch the test flips) while another answers the very same model. `Scripted` answers
each call with a `Reply` taken from, in order: `answer(seen)` if set, the per-key table
`by_key` (keyed by the bearer secret), the queue `script`, then `default`. Bodies and streams
use OpenAI's documented shapes (chat.completion, chat.completion.chunk, `data: [DONE]`, error
JSON {"error": {message, type, param, code}}).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import httpx
import orjson
from aiohttp import web

from services.app import build_app
from services.catalog.pricing import Catalog
from services.clock import FakeClock
from services.config.schema import Config
from services.core.types import ChatRequest, Message, RouteHints
from services.limits.memory import MemoryLimiter
from services.providers.upstreams import Upstreams
from services.routing.candidates import CandidateIndex
from services.routing.router import RouteLog, Router
from services.runtime import Runtime
from tests.support.gateway import Gateway

_ids = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    """One answer. mode: "" (normal), reset, garbage, silent, cut (after `tokens`), stall (after `tokens`)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    mode: str = ""
    tokens: int = 4
    delay_s: float = 0.0  # before anything is sent (headers included)
    code: str | None = None
    message: str = ""


def ok(tokens: int = 4, delay_s: float = 0.0) -> Reply:
    return Reply(tokens=tokens, delay_s=delay_s)


def err(status: int, headers: dict[str, str] | None = None, code: str | None = None, message: str = "") -> Reply:
    return Reply(status=status, headers=dict(headers or {}), code=code, message=message)


RESET = Reply(mode="reset")
GARBAGE = Reply(mode="garbage")
SILENT = Reply(mode="silent")


def cut(after: int, tokens: int = 8) -> Reply:
    return Reply(mode="cut", tokens=tokens, code=str(after))


def stall(after: int, tokens: int = 8) -> Reply:
    return Reply(mode="stall", tokens=tokens, code=str(after))


@dataclass
class Seen:
    key: str  # the bearer secret the gateway sent
    model: str
    stream: bool


@dataclass
class Scripted:
    default: Reply = field(default_factory=ok)
    script: deque[Reply] = field(default_factory=deque)
    by_key: dict[str, Reply] = field(default_factory=dict)
    answer: Callable[[Seen], Reply] | None = None
    calls: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    base_url: str = ""

    def reply_for(self, seen: Seen) -> Reply:
        if self.answer is not None:
            return self.answer(seen)
        if seen.key in self.by_key:
            return self.by_key[seen.key]
        if self.script:
            return self.script.popleft()
        return self.default

    def keys(self) -> list[str]:
        return [c.key for c in self.calls]


def _error_body(status: int, reply: Reply) -> bytes:
    etype = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
             429: "requests"}.get(status, "server_error")
    message = reply.message or {401: "Incorrect API key provided.", 429: "Rate limit reached for requests.",
                                400: "Invalid request."}.get(status, f"upstream error {status}")
    return orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": reply.code}})


async def _answer(request: web.Request, state: Scripted) -> web.StreamResponse:
    body = await request.json()
    seen = Seen(request.headers.get("Authorization", "").removeprefix("Bearer "), str(body.get("model", "")),
                bool(body.get("stream")))
    state.calls.append(seen)
    reply = state.reply_for(seen)
    if reply.delay_s:
        await asyncio.sleep(reply.delay_s)
    if reply.mode == "silent":
        await asyncio.sleep(3600)
    if reply.mode == "reset":
        request.transport.close()
        return web.Response(status=500)
    if reply.mode == "garbage":
        return web.Response(status=200, body=b"<html>bad gateway</html>", content_type="text/html")
    if reply.status != 200:
        return web.Response(status=reply.status, headers=reply.headers, content_type="application/json",
                            body=_error_body(reply.status, reply))
    cid = f"chatcmpl-scripted{next(_ids)}"
    pieces = [f"tok{i} " for i in range(reply.tokens)]
    if not seen.stream:
        return web.Response(content_type="application/json", body=orjson.dumps({
            "id": cid, "object": "chat.completion", "created": 1_700_000_000, "model": seen.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(pieces), "total_tokens": 7 + len(pieces)}}))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    head = {"id": cid, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": seen.model}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"

    await resp.write(chunk({"role": "assistant", "content": ""}))
    for i, p in enumerate(pieces):
        if reply.mode == "cut" and i >= int(reply.code or 0):
            request.transport.close()
            return resp
        if reply.mode == "stall" and i >= int(reply.code or 0):
            await asyncio.sleep(3600)
        await resp.write(chunk({"content": p}))
        await asyncio.sleep(0)
    await resp.write(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        await resp.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": {
            "prompt_tokens": 7, "completion_tokens": len(pieces), "total_tokens": 7 + len(pieces)}}) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


@asynccontextmanager
async def run_scripted(default: Reply | None = None) -> AsyncIterator[Scripted]:
    state = Scripted(default=default or ok())

    async def chat(request: web.Request) -> web.StreamResponse:
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            return await _answer(request, state)
        finally:
            state.in_flight -= 1

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    try:
        yield state
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    """A 127.0.0.1 URL nobody listens on (bound, then released): connection refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---------------------------------------------------------------------------- a Router on a FakeClock

def router_config(*providers, **kw) -> Config:
    kw.setdefault("strategy", "priority")
    return Config(providers=tuple(providers), **kw)


@asynccontextmanager
async def make_router(cfg: Config, clock: FakeClock | None = None, jitter: tuple[float, float] = (0.1, 1.0),
                      seed: int = 7) -> AsyncIterator[Router]:
    """The router as services/app.py builds it, on a FakeClock (retry pauses cost no real time)."""
    clock = clock or FakeClock()
    upstreams = Upstreams()
    router = Router(cfg, CandidateIndex(cfg, Catalog.builtin()), upstreams, MemoryLimiter(clock), clock, random.Random(seed))
    router.retry_jitter_s = jitter
    try:
        yield router
    finally:
        await upstreams.close()


def request(model: str = "gpt-4o-mini", strategy: str = "", provider: str = "") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message("user", "hi")], route=RouteHints(provider=provider, strategy=strategy))


async def chat(router: Router, model: str = "gpt-4o-mini", deadline_s: float = 30.0, strategy: str = ""):
    """(result or the raised error, RouteLog) for one routed chat."""
    log = RouteLog()
    try:
        result = await router.chat(request(model, strategy), router.clock.monotonic() + deadline_s, log)
    except Exception as e:  # the test looks at which one
        return e, log
    return result, log


async def stream(router: Router, model: str = "gpt-4o-mini", deadline_s: float = 30.0):
    """(text, the raised error or None, RouteLog) for one routed stream."""
    log = RouteLog()
    text, error = "", None
    try:
        async for batch in router.stream(request(model), router.clock.monotonic() + deadline_s, log):
            text += "".join(c.text for c in batch)
    except Exception as e:
        error = e
    return text, error, log


# ---------------------------------------------------------------------------- a gateway on a FakeClock

@asynccontextmanager
async def run_gateway_on(cfg: Config, clock: FakeClock, jitter: tuple[float, float] = (0.0, 0.0)) -> AsyncIterator[Gateway]:
    """tests/support/gateway.run_gateway, with the App built on `clock` (long waits cost nothing)."""
    rt = Runtime(cfg, app=build_app(cfg, clock=clock, rng=random.Random(7)))
    rt.app.router.retry_jitter_s = jitter
    await rt.start()
    async with httpx.AsyncClient(base_url=rt.http_url, timeout=30) as http:
        try:
            yield Gateway(rt, http)
        finally:
            await rt.shutdown(grace_s=1.0)


def replace(cfg: Config, **kw) -> Config:
    return dataclasses.replace(cfg, **kw)
