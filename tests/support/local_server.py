"""A throwaway aiohttp server on 127.0.0.1 for a test's own upstream handler."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve_app(app: web.Application, **runner_kw: Any) -> AsyncIterator[str]:
    """Serves `app` on 127.0.0.1 (a free port); yields the origin (http://127.0.0.1:port)."""
    runner = web.AppRunner(app, **runner_kw)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve(handler: Handler, path: str) -> AsyncIterator[str]:
    """Serves POST `path` with `handler`; yields the origin (http://127.0.0.1:port)."""
    app = web.Application()
    app.router.add_post(path, handler)
    async with serve_app(app) as origin:
        yield origin


@asynccontextmanager
async def serve_chat(handler: Handler) -> AsyncIterator[str]:
    """Serves POST /v1/chat/completions with `handler`; yields the base URL (ending in /v1)."""
    async with serve(handler, "/v1/chat/completions") as origin:
        yield origin + "/v1"
