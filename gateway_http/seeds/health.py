"""Health and metrics: /health (seeds 002, 004), /health/live, /health/ready (seed 001),
/api/health (seed 000), /metrics (Prometheus text)."""

from __future__ import annotations

import datetime as dt
import time

import orjson
from aiohttp import web

from gateway_http.state import BRIDGE


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    b = request.app[BRIDGE]
    return _json({
        "status": "draining" if b.draining else "healthy",
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "uptime": round(time.monotonic() - b.started_at, 3),
        "version": b.settings.version,
        "environment": b.settings.environment,
    }, 503 if b.draining else 200)


async def live(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    b = request.app[BRIDGE]
    checks = await b.ready() if b.ready else {}
    bad = b.draining or any(v in ("unreachable", "unavailable", "down") for v in checks.values())
    return _json({"status": "not_ready" if bad else "ready", "checks": checks, "draining": b.draining}, 503 if bad else 200)


async def metrics(request: web.Request) -> web.Response:
    b = request.app[BRIDGE]
    body = b.metrics() if b.metrics else b""
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
