"""Seed 000's admin routes: POST|GET /api/admin/keys, DELETE /api/admin/keys/{id}, GET /api/admin/stats,
GET /api/admin/usage (SPEC's ledger view). Admin key in X-Admin-Key, never in a query string (F7)."""

from __future__ import annotations

import orjson
from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError, error_headers, http_status
from tollgate.client import RpcErrorInfo, error_info
from tollgate.v1 import admin_service_pb2 as apb


def seed_error(info: RpcErrorInfo) -> web.Response:
    """Seed 000's error shape: {"error": title, "message": detail}, plus resetTime on 429."""
    status = http_status(info)
    titles = {401: "API key required" if info.reason in ("API_KEY_REQUIRED", "ADMIN_KEY_REQUIRED") else "Invalid API key",
              403: "Forbidden", 404: "Not found", 429: "Rate limit exceeded", 400: "Validation error"}
    # ACCOUNTS_API.md: a cookie write without its CSRF token is {"error": "csrf"}.
    body = {"error": "csrf" if info.reason == "CSRF" else titles.get(status, "Error"), "message": info.message,
            "code": info.reason}
    if "reset_time" in info.metadata:
        body["resetTime"] = info.metadata["reset_time"]
    if info.field_violations:
        body["details"] = [{"field": f, "message": m} for f, m in info.field_violations]
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=error_headers(info))


def bad_request(message: str) -> web.Response:
    return web.Response(status=400, body=orjson.dumps({"error": "Validation error", "message": message, "code": "VALIDATION_ERROR"}),
                        content_type="application/json")


def key_json(k: apb.ApiKey) -> dict:
    return {"id": k.id, "prefix": k.prefix, "name": k.name, "email": k.email, "tier": k.tier,
            "createdAt": k.created, "revokedAt": k.revoked_at or None, "lastUsedAt": k.last_used_at or None,
            "active": not k.revoked_at}


async def _call(request: web.Request, method, message) -> tuple[object | None, web.Response | None]:
    call = method(message, metadata=calls.metadata(request))
    try:
        return await call, None
    except AioRpcError as e:
        return None, seed_error(error_info(e))


async def create_key(request: web.Request) -> web.Response:
    try:
        raw = await read_body(request)
        body = orjson.loads(raw) if raw else {}
    except BridgeError as e:
        if e.status == 413:
            return web.Response(status=413, content_type="application/json", body=orjson.dumps(
                {"error": "Payload too large", "message": e.message, "code": "PAYLOAD_TOO_LARGE"}))
        return bad_request(e.message)
    except orjson.JSONDecodeError:
        return bad_request("The body must be a JSON object.")
    if not isinstance(body, dict):
        return bad_request("The body must be a JSON object.")
    fields = {k: body.get(k, "") for k in ("name", "email", "tier")}
    if not all(isinstance(v, str) for v in fields.values()):
        return bad_request("name, email and tier must be strings.")
    resp, err = await _call(request, calls.client(request).admin.CreateApiKey, apb.CreateApiKeyRequest(**fields))
    if err:
        return err
    out = {**key_json(resp.api_key), "key": resp.key}
    return web.Response(status=201, body=orjson.dumps(out), content_type="application/json")


async def list_keys(request: web.Request) -> web.Response:
    inc = request.query.get("include_revoked", "false").lower() in ("1", "true", "yes")
    resp, err = await _call(request, calls.client(request).admin.ListApiKeys, apb.ListApiKeysRequest(include_revoked=inc))
    if err:
        return err
    return web.Response(body=orjson.dumps({"keys": [key_json(k) for k in resp.api_keys], "total": len(resp.api_keys)}),
                        content_type="application/json")


async def revoke_key(request: web.Request) -> web.Response:
    resp, err = await _call(request, calls.client(request).admin.RevokeApiKey, apb.RevokeApiKeyRequest(id=request.match_info["id"]))
    if err:
        return err
    return web.Response(body=orjson.dumps({"revoked": True, "id": request.match_info["id"]}), content_type="application/json")


async def stats(request: web.Request) -> web.Response:
    resp, err = await _call(request, calls.client(request).admin.GetStats, apb.GetStatsRequest())
    if err:
        return err
    return web.Response(body=orjson.dumps({
        "totalRequests": resp.total_requests, "promptTokens": resp.prompt_tokens, "completionTokens": resp.completion_tokens,
        "totalTokens": resp.prompt_tokens + resp.completion_tokens, "costUsd": round(resp.cost_usd, 6),
        "activeKeys": resp.active_keys, "uptimeSeconds": round(resp.uptime_s, 1),
        "byModel": {c.name: {"requests": c.requests, "tokens": c.tokens, "costUsd": round(c.cost_usd, 6)} for c in resp.by_model},
        "byStatus": {c.name: c.requests for c in resp.by_status},
    }), content_type="application/json")


def _float(q, name: str) -> float:
    try:
        return float(q.get(name) or 0)
    except ValueError:
        raise BridgeError(400, f"{name} must be a number (epoch seconds)") from None


def usage_json(r) -> dict:
    return {f: getattr(r, f) for f in ("request_id", "key_id", "user", "surface", "provider", "provider_key_id", "model",
                                        "status", "prompt_tokens", "completion_tokens", "estimated", "cost_usd",
                                        "latency_ms", "attempts", "created_at")}


USAGE_FIELDS = ("request_id", "key_id", "user", "surface", "provider", "provider_key_id", "model", "status",
                "prompt_tokens", "completion_tokens", "estimated", "cost_usd", "latency_ms", "attempts", "created_at")


def usage_csv(rows) -> str:
    """The ledger explorer's export (issue 16): one line per row, the JSON's fields in order."""
    import csv
    import io

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(USAGE_FIELDS)
    for r in rows:
        w.writerow([getattr(r, f) for f in USAGE_FIELDS])
    return out.getvalue()


async def usage(request: web.Request) -> web.Response:
    q = request.query
    try:
        limit, offset = int(q.get("limit") or 100), int(q.get("offset") or 0)
        req = apb.ListUsageRequest(page_size=limit, skip=offset, key_id=q.get("key_id", ""), user=q.get("user", ""),
                                   model=q.get("model", ""), since=_float(q, "since"), until=_float(q, "until"),
                                   status=q.get("status", ""))
        fmt = q.get("format", "")
        if fmt not in ("", "json", "csv"):
            raise BridgeError(400, "format must be json or csv")
    except (ValueError, BridgeError) as e:
        return bad_request(getattr(e, "message", "limit and offset must be integers"))
    resp, err = await _call(request, calls.client(request).admin.ListUsage, req)
    if err:
        return err
    if fmt == "csv" or (not fmt and "text/csv" in request.headers.get("Accept", "")):
        return web.Response(text=usage_csv(resp.rows), content_type="text/csv",
                            headers={"Content-Disposition": 'attachment; filename="usage.csv"'})
    return web.Response(body=orjson.dumps({
        "data": [usage_json(r) for r in resp.rows],
        "pagination": {"total": resp.total_size, "limit": limit, "offset": offset, "hasMore": bool(resp.next_page_token)}}),
        content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/admin/keys", create_key)
    app.router.add_get("/api/admin/keys", list_keys)
    app.router.add_delete("/api/admin/keys/{id}", revoke_key)
    app.router.add_get("/api/admin/stats", stats)
    app.router.add_get("/api/admin/usage", usage)
