"""An OpenAI-shaped upstream that answers every chat call with one fixed error, whatever the model.

The fake in fakes/openai.py picks its fault by model name, so two instances of it given the
same model fail alike; failover tests need a primary that fails (503, 429 + Retry-After, 401)
while the fallback — a real fake OpenAI — answers the very same model. Bodies use OpenAI's
error shape {"error": {message, type, param, code}}.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

import orjson
from aiohttp import web

from tests.support.local_server import serve_chat


@dataclass
class FaultUpstream:
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    base_url: str = ""
    calls: int = 0
    auth_headers: list[str] = field(default_factory=list)


@asynccontextmanager
async def run_fault_upstream(status: int, message: str, headers: dict[str, str] | None = None,
                             etype: str = "server_error", code: str | None = None) -> AsyncIterator[FaultUpstream]:
    state = FaultUpstream(status, message, dict(headers or {}))

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        state.calls += 1
        state.auth_headers.append(request.headers.get("Authorization", ""))
        return web.Response(status=status, headers=state.headers, content_type="application/json",
                            body=orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}}))

    async with serve_chat(chat) as base_url:
        state.base_url = base_url
        yield state
