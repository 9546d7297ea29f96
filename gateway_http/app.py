"""make_app(): the aiohttp bridge over a TollgateClient (in-process or remote)."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from aiohttp import web, web_response

from gateway_http.anthropic import routes as anthropic_routes
from gateway_http.console import routes as console
from gateway_http import logsafe
from gateway_http.middleware import guard
from gateway_http.native import routes as native_routes
from gateway_http import openapi
from gateway_http.openai import completions as openai_completions
from gateway_http.openai import media as openai_media
from gateway_http.openai import responses as openai_responses
from gateway_http.openai import routes as openai_routes
from gateway_http.seeds import admin, health
from gateway_http.seeds import api, inference, router_status, ws
from gateway_http.seeds import model_load, users
from gateway_http.seeds import accounts
from gateway_http.seeds import aliases as model_aliases
from gateway_http.settings import BridgeSettings
from gateway_http.traced import traced
from gateway_http.stall import StallGuard
from gateway_http.state import BRIDGE, Bridge


SERVER_NAME = "tollgate"


def make_app(
    settings: BridgeSettings,
    client: Any,
    ready: Callable[[], Awaitable[dict[str, str]]] | None = None,
    metrics: Callable[[], bytes] | None = None,
    auth_header: str = "",
    tracing: Any = None,
) -> web.Application:
    logsafe.install()
    _quiet_server_banner()
    # Traces on: a span per request around everything else; off: no middleware, nothing per request.
    middlewares = [traced(tracing), guard] if tracing is not None else [guard]
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app[BRIDGE] = Bridge(settings=settings, client=client, ready=ready, metrics=metrics,
                         auth_header=auth_header, started_at=time.monotonic(),
                         stalls=StallGuard(settings.stream_stall_s), tracing=tracing)
    health.add_routes(app)
    openai_routes.add_routes(app)
    openai_responses.add_routes(app)
    openai_completions.add_routes(app)
    openai_media.add_routes(app)
    anthropic_routes.add_routes(app)
    native_routes.add_routes(app)
    admin.add_routes(app)
    api.add_routes(app)
    users.add_routes(app)
    accounts.add_routes(app)
    inference.add_routes(app)
    router_status.add_routes(app)
    ws.add_routes(app)
    model_load.add_routes(app)
    model_aliases.add_routes(app)
    openapi.add_routes(app)
    console.add_routes(app)
    app.router.add_get("/api/health", health.health)
    app.on_cleanup.append(_stop_watching)
    return app


def _quiet_server_banner() -> None:
    """Issue 19 point 7: aiohttp announces "Python/3.x aiohttp/x" in every response's Server
    header, its own parser-error pages included (they never reach on_response_prepare). The
    runtime and its version are nobody's business: aiohttp reads this name when it fills in
    the default, so it is replaced once, for every response this process writes."""
    web_response.SERVER_SOFTWARE = SERVER_NAME


async def _stop_watching(app: web.Application) -> None:
    app[BRIDGE].stalls.close()
