"""Seed 002's router and auth status routes: GET /, /backend/info, /router/stats, /router/health,
/router/rate-limits, /auth/status, /auth/metrics and POST /auth/reload-keys.

Each renders ModelService.ListProviders or AdminService.GetRouterStatus / GetAuthStatus /
ReloadAuthKeys. Provider keys appear by id only (the RPCs never carry a secret). Errors are
OpenAI-shaped, as seed 002's are: {"error": {"message", "type", ...}}.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import orjson
from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.console import routes as console
from gateway_http.errors import openai_error
from gateway_http.state import BRIDGE
from tollgate.client import error_info
from tollgate.v1 import admin_service_pb2 as apb
from tollgate.v1 import model_service_pb2 as mpb

LINKS = {"health": "/health", "backend_info": "/backend/info", "router_stats": "/router/stats",
         "router_health": "/router/health", "rate_limits": "/router/rate-limits", "auth_status": "/auth/status",
         "auth_metrics": "/auth/metrics", "models": "/v1/models", "chat": "/v1/chat/completions", "metrics": "/metrics"}


async def _call(request: web.Request, method: Any, message: Any) -> tuple[Any, Any]:
    call = method(message, metadata=calls.metadata(request), timeout=calls.timeout(request))
    return call, await call


async def _render(build) -> web.Response:
    try:
        obj, call = await build()
    except AioRpcError as e:
        return openai_error(error_info(e))
    out = web.Response(body=orjson.dumps(obj), content_type="application/json")
    await calls.copy_headers(call, out)
    return out


def _providers(request: web.Request):
    return _call(request, calls.client(request).models.ListProviders, mpb.ListProvidersRequest())


def _router(request: web.Request):
    return _call(request, calls.client(request).admin.GetRouterStatus, apb.GetRouterStatusRequest())


def _auth(request: web.Request):
    return _call(request, calls.client(request).admin.GetAuthStatus, apb.GetAuthStatusRequest())


def _iso(epoch: float) -> str | None:
    if not epoch:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _remaining(used: int, limit: int) -> int | None:
    return max(0, limit - used) if limit else None


async def root(request: web.Request) -> web.Response:
    if console.wants_html(request):  # a browser at / gets the console (issue 17); API clients keep the JSON
        return await console.index(request)
    # Seed 002: `curl http://localhost:8000/` answers without a key; ListProviders is public and
    # carries nothing secret. The /router/* and /auth/* routes below stay protected.
    async def build():
        call, provs = await _providers(request)
        return {
            "message": "Tollgate - OpenAI API compatible LLM gateway", "service": "tollgate",
            "version": request.app[BRIDGE].settings.version, "mode": "router", "strategy": provs.strategy,
            "services_count": len(provs.providers),
            "services": [{"name": p.name, "type": p.kind, "priority": p.priority} for p in provs.providers],
            "links": LINKS,
        }, call
    return await _render(build)


async def backend_info(request: web.Request) -> web.Response:
    async def build():
        call, provs = await _providers(request)
        return {"mode": "router", "status": "active", "backends": [
            {"name": p.name, "kind": p.kind, "base_url": p.base_url, "models": list(p.models), "priority": p.priority,
             "key_count": p.key_count, "unsupported": list(p.unsupported)} for p in provs.providers]}, call
    return await _render(build)


def _key(k: apb.KeyStatus) -> dict[str, Any]:
    return {"provider": k.provider, "key_id": k.key_id, "kind": k.kind, "priority": k.priority}


async def router_stats(request: web.Request) -> web.Response:
    async def build():
        call, rs = await _router(request)
        return {"strategy": rs.strategy, "total_requests": rs.total_requests, "failover_count": rs.failovers,
                "unroutable": rs.unroutable,
                "services": [{**_key(k), "requests": k.requests, "failures": k.failures,
                              "latency_ms": round(k.latency_ms, 1) if k.latency_ms else None} for k in rs.keys]}, call
    return await _render(build)


async def router_health(request: web.Request) -> web.Response:
    async def build():
        call, rs = await _router(request)
        up = sum(1 for k in rs.keys if k.available)
        overall = "healthy" if up == len(rs.keys) else "degraded" if up else "unhealthy"
        return {"overall_status": overall, "available_services": up, "total_services": len(rs.keys),
                "services": [{**_key(k), "status": "available" if k.available else "unavailable", "breaker": k.breaker,
                              "cooldown_s": round(k.cooldown_s, 3), "available": k.available} for k in rs.keys]}, call
    return await _render(build)


async def rate_limits(request: web.Request) -> web.Response:
    async def build():
        call, rs = await _router(request)
        return {"rate_limiting": [
            {**_key(k), "available": k.available, "cooldown_s": round(k.cooldown_s, 3),
             "rpm": {"used": k.rpm_used, "limit": k.rpm_limit or None, "remaining": _remaining(k.rpm_used, k.rpm_limit)},
             "daily": {"used": k.daily_used, "limit": k.daily_limit or None,
                       "remaining": _remaining(k.daily_used, k.daily_limit)}} for k in rs.keys],
            "current_time": time.time()}, call
    return await _render(build)


async def auth_status(request: web.Request) -> web.Response:
    async def build():
        call, a = await _auth(request)
        total = a.static_keys + a.api_keys
        return {"enabled": a.enabled, "valid_keys_count": total, "static_keys": a.static_keys, "api_keys": a.api_keys,
                "auth_header": request.app[BRIDGE].auth_header or "Authorization",
                "system_status": "active" if total else "no_keys_loaded"}, call
    return await _render(build)


async def auth_metrics(request: web.Request) -> web.Response:
    async def build():
        call, a = await _auth(request)
        total = a.successes + a.failures
        return {"total_requests": total, "successful_requests": a.successes, "failed_requests": a.failures,
                "success_rate": round(a.successes / total, 4) if total else None,
                "keys": [{"key_id": k.key_id, "successes": k.successes, "last_used_at": _iso(k.last_used_at)}
                         for k in a.keys]}, call
    return await _render(build)


async def reload_keys(request: web.Request) -> web.Response:
    async def build():
        call, r = await _call(request, calls.client(request).admin.ReloadAuthKeys, apb.ReloadAuthKeysRequest())
        return {"status": "success", "message": "Authentication keys reloaded", "static_keys": r.static_keys,
                "api_keys": r.api_keys, "valid_keys_count": r.static_keys + r.api_keys}, call
    return await _render(build)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", root)
    r.add_get("/backend/info", backend_info)
    r.add_get("/router/stats", router_stats)
    r.add_get("/router/health", router_health)
    r.add_get("/router/rate-limits", rate_limits)
    r.add_get("/auth/status", auth_status)
    r.add_get("/auth/metrics", auth_metrics)
    r.add_post("/auth/reload-keys", reload_keys)
