"""Seed 001's user surface: /api/auth/*, /api/keys, /api/tokens, /api/usage, PUT /api/admin/registration.

Issue 16 (ACCOUNTS_API.md): sign-in also sets the console's cookies (`tg_session` HttpOnly and
`tg_csrf` readable, both SameSite=Strict, Secure when configured); logout, /api/auth/me, the
session list, password change and GET /api/auth/registration are KeyService calls too. A write
authenticated by the cookie without its CSRF token is refused by the core: 403 {"error": "csrf"}.

Each handler parses the camelCase body, calls KeyService (or AdminService.SetRegistration) with
the caller's credentials, and renders seed 001's shapes; every decision is the servicer's.
Errors use seed 001's envelope: {"error": {"code": "VALIDATION_ERROR" | "UNAUTHORIZED" |
"FORBIDDEN" | "NOT_FOUND" | "CONFLICT" | "RATE_LIMIT_EXCEEDED" | ..., "message": …}}, with the
HTTP status from gateway_http/errors.py. Times are ISO 8601 UTC strings (null when unset).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError, error_headers, http_status
from gateway_http.state import BRIDGE
from gateway_http.seeds.admin import usage_json
from gateway_http.seeds.api import CODES
from tollgate.client import RpcErrorInfo, error_info
from tollgate.v1 import admin_service_pb2 as apb
from tollgate.v1 import key_service_pb2 as kpb

_INT32 = 2**31 - 1


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


def _error(status: int, message: str, details: list[dict[str, str]] | None = None, request_id: str = "",
           headers: dict[str, str] | None = None) -> web.Response:
    err: dict[str, Any] = {"code": CODES.get(status, "ERROR"), "message": message}
    if details:
        err["details"] = details
    body: dict[str, Any] = {"error": err}
    if request_id:
        body["requestId"] = request_id
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def rpc_error(info: RpcErrorInfo) -> web.Response:
    if info.reason == "CSRF":
        return csrf_error(info)
    details = [{"field": f, "message": m} for f, m in info.field_violations]
    return _error(http_status(info), info.message, details, info.request_id, error_headers(info))


def csrf_error(info: RpcErrorInfo) -> web.Response:
    """ACCOUNTS_API.md's CSRF refusal: 403 {"error": "csrf", "message": …}."""
    body = {"error": "csrf", "message": info.message, "code": "FORBIDDEN"}
    return web.Response(status=403, body=orjson.dumps(body), content_type="application/json", headers=error_headers(info))


def bad_request(e: BridgeError) -> web.Response:
    status = 413 if e.status == 413 else 400
    return _error(status, e.message, [{"field": e.param, "message": e.message}] if e.param else None)


def iso(epoch: float) -> str | None:
    if not epoch:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat().replace("+00:00", "Z")


async def _call(request: web.Request, method: Any, message: Any, status: int = 200,
                render: Any = None, metadata: tuple[tuple[str, str], ...] = ()) -> web.Response:
    call = method(message, metadata=calls.metadata(request) + metadata, timeout=calls.timeout(request))
    try:
        resp = await call
    except AioRpcError as e:
        return rpc_error(error_info(e))
    out = web.Response(status=204) if render is None else _json(render(resp), status)
    await calls.copy_headers(call, out)
    return out


# ------------------------------------------------------------------------------ body parsing

async def _body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise BridgeError(400, "The body must be valid JSON.") from None
    if not isinstance(body, dict):
        raise BridgeError(400, "The body must be a JSON object.")
    return body


def _pick(body: dict[str, Any], *names: str) -> tuple[str, Any]:
    """The first of `names` present (seed 001's own spellings are accepted as aliases)."""
    for n in names:
        if body.get(n) is not None:
            return n, body[n]
    return names[0], None


def _str(body: dict[str, Any], *names: str) -> str:
    name, v = _pick(body, *names)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BridgeError(400, f"'{name}' must be a string.", param=name)
    return v


def _int(body: dict[str, Any], *names: str, lo: int = -_INT32, hi: int = _INT32) -> int:
    name, v = _pick(body, *names)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or not lo <= v <= hi or int(v) != v:
        raise BridgeError(400, f"'{name}' must be an integer between {lo} and {hi}.", param=name)
    return int(v)


def _strs(body: dict[str, Any], *names: str) -> list[str]:
    name, v = _pick(body, *names)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise BridgeError(400, f"'{name}' must be a list of strings.", param=name)
    return v


def _query_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BridgeError(400, f"'{name}' must be an integer.", param=name) from None
    if not 0 <= v <= _INT32:
        raise BridgeError(400, f"'{name}' must be between 0 and {_INT32}.", param=name)
    return v


def _query_float(request: web.Request, name: str) -> float:
    raw = request.query.get(name)
    if not raw:
        return 0.0
    try:
        v = float(raw)
    except ValueError:
        raise BridgeError(400, f"'{name}' must be a number (epoch seconds).", param=name) from None
    if v != v or v < 0 or v == float("inf"):
        raise BridgeError(400, f"'{name}' must be a number (epoch seconds).", param=name)
    return v


# ------------------------------------------------------------------------------ renderers

def user_json(u: kpb.User) -> dict[str, Any]:
    # "tier" is seed 001's word, "plan" ACCOUNTS_API.md's: the same value.
    out: dict[str, Any] = {"id": u.id, "email": u.email, "role": u.role, "tier": u.tier, "plan": u.tier,
                           "state": u.state or "active", "created_at": iso(u.created)}
    if u.budget_usd_day:
        out["budget_usd_day"] = u.budget_usd_day
    if u.budget_usd_month:
        out["budget_usd_month"] = u.budget_usd_month
    return out


def session_json(x: kpb.Session) -> dict[str, Any]:
    return {"id": x.id, "created_at": iso(x.created_at), "last_used_at": iso(x.last_used_at),
            "expires_at": iso(x.expires_at), "current": x.current, "user_agent": x.user_agent, "ip": x.ip}


def signed_in(request: web.Request, r: Any, status: int) -> web.Response:
    """A sign-in's answer: the body (token, user, csrf_token) and the console's two cookies."""
    body = {"user": user_json(r.user), "token": r.session_token, "expiresAt": iso(r.expires_at),
            "csrf_token": r.csrf_token}
    out = _json(body, status)
    secure = request.app[BRIDGE].settings.cookie_secure
    max_age = max(0, int(r.expires_at - dt.datetime.now(dt.timezone.utc).timestamp()))
    out.set_cookie(calls.SESSION_COOKIE, r.session_token, max_age=max_age, path="/", httponly=True,
                   samesite="Strict", secure=secure)
    out.set_cookie(calls.CSRF_COOKIE, r.csrf_token, max_age=max_age, path="/", httponly=False,
                   samesite="Strict", secure=secure)
    return out


async def _sign_in(request: web.Request, method: Any, message: Any, status: int) -> web.Response:
    call = method(message, metadata=calls.metadata(request) + calls.client_info(request), timeout=calls.timeout(request))
    try:
        resp = await call
    except AioRpcError as e:
        return rpc_error(error_info(e))
    out = signed_in(request, resp, status)
    await calls.copy_headers(call, out)
    return out


def _clear_cookies(out: web.Response) -> web.Response:
    for name in (calls.SESSION_COOKIE, calls.CSRF_COOKIE):
        out.del_cookie(name, path="/")
    return out


def key_json(k: kpb.ProviderKey) -> dict[str, Any]:
    return {"id": k.id, "provider": k.provider, "name": k.name, "maskedKey": k.masked_key, "baseUrl": k.base_url or None,
            "models": list(k.models), "defaultModel": k.default_model or None, "priority": k.priority,
            "dailyQuota": k.daily_quota, "rpm": k.rpm, "createdAt": iso(k.created)}


def token_json(t: kpb.Token) -> dict[str, Any]:
    out: dict[str, Any] = {"id": t.id, "name": t.name, "prefix": t.prefix, "createdAt": iso(t.created),
                           "expiresAt": iso(t.expires_at), "lastUsedAt": iso(t.last_used_at)}
    for name in ("rpm", "rpd", "tpd", "tpm_month", "budget_usd_day", "budget_usd_month"):  # issue 16: only when set
        if v := getattr(t, name):
            out[name] = v
    return out


# ------------------------------------------------------------------------------ handlers

async def register(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        msg = kpb.RegisterRequest(email=_str(body, "email"), password=_str(body, "password"))
    except BridgeError as e:
        return bad_request(e)
    return await _sign_in(request, calls.client(request).keys.Register, msg, 201)


async def login(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        msg = kpb.LoginRequest(email=_str(body, "email"), password=_str(body, "password"),
                               admin_key=_str(body, "admin_key", "adminKey"))
    except BridgeError as e:
        return bad_request(e)
    return await _sign_in(request, calls.client(request).keys.Login, msg, 200)


async def logout(request: web.Request) -> web.Response:
    out = await _call(request, calls.client(request).keys.Logout, kpb.LogoutRequest())
    return _clear_cookies(out) if out.status == 204 else out


async def me(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).keys.GetMe, kpb.GetMeRequest(), 200, lambda r: user_json(r.user))


async def list_sessions(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).keys.ListSessions, kpb.ListSessionsRequest(), 200,
                       lambda r: [session_json(x) for x in r.sessions])


async def revoke_session(request: web.Request) -> web.Response:
    msg = kpb.RevokeSessionRequest(id=request.match_info["id"])
    return await _call(request, calls.client(request).keys.RevokeSession, msg)


async def change_password(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        msg = kpb.ChangePasswordRequest(current_password=_str(body, "current_password", "currentPassword"),
                                        new_password=_str(body, "new_password", "newPassword"))
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).keys.ChangePassword, msg)


async def registration(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).keys.GetRegistration, kpb.GetRegistrationRequest(), 200,
                       lambda r: {"enabled": r.enabled})


async def list_keys(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).keys.ListProviderKeys, kpb.ListProviderKeysRequest(), 200,
                       lambda r: {"keys": [key_json(k) for k in r.keys], "total": len(r.keys)})


async def create_key(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        msg = kpb.CreateProviderKeyRequest(
            provider=_str(body, "provider"), name=_str(body, "name"), key=_str(body, "key", "apiKey"),
            base_url=_str(body, "baseUrl", "base_url"), models=_strs(body, "models", "allowedModels"),
            default_model=_str(body, "defaultModel", "default_model"), priority=_int(body, "priority"),
            daily_quota=_int(body, "dailyQuota", "dailyLimit", "daily_quota", lo=0),
            rpm=_int(body, "rpm", lo=0))
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).keys.CreateProviderKey, msg, 201, lambda r: key_json(r.key))


async def delete_key(request: web.Request) -> web.Response:
    msg = kpb.DeleteProviderKeyRequest(id=request.match_info["id"])
    return await _call(request, calls.client(request).keys.DeleteProviderKey, msg)


async def list_tokens(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).keys.ListTokens, kpb.ListTokensRequest(), 200,
                       lambda r: {"tokens": [token_json(t) for t in r.tokens], "total": len(r.tokens)})


async def create_token(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        ttl = _int(body, "ttlSeconds", "ttl_seconds", lo=0)
        if not ttl and body.get("expiresInDays") is not None:  # seed 001's own field
            ttl = _int(body, "expiresInDays", lo=0, hi=3650) * 86400
        own = {n: _int(body, n, lo=0, hi=2**53) for n in ("rpm", "rpd", "tpd", "tpm_month")}
        for n in ("budget_usd_day", "budget_usd_month"):
            v = body.get(n)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or not 0 <= v <= 1e9):
                raise BridgeError(400, f"'{n}' must be a number of USD from 0 to 1000000000.", param=n)
            own[n] = float(v or 0)
        msg = kpb.CreateTokenRequest(name=_str(body, "name"), ttl_seconds=ttl, **own)
    except BridgeError as e:
        return bad_request(e)

    def render(r: kpb.CreateTokenResponse) -> dict[str, Any]:
        # ACCOUNTS_API.md calls the one-time plaintext `key`; seed 001 calls it `token`: both.
        return {**token_json(r.token), "token": r.secret, "key": r.secret}

    return await _call(request, calls.client(request).keys.CreateToken, msg, 201, render)


async def revoke_token(request: web.Request) -> web.Response:
    msg = kpb.RevokeTokenRequest(id=request.match_info["id"])
    return await _call(request, calls.client(request).keys.RevokeToken, msg)


async def usage(request: web.Request) -> web.Response:
    try:
        limit, offset = _query_int(request, "limit", 100), _query_int(request, "offset", 0)
        msg = kpb.GetUsageRequest(page_size=limit, skip=offset, model=request.query.get("model", ""),
                                  since=_query_float(request, "since"), until=_query_float(request, "until"))
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).keys.GetUsage, msg, 200, lambda r: {
        "data": [usage_json(row) for row in r.rows],
        "pagination": {"total": r.total_size, "limit": limit, "offset": offset, "hasMore": bool(r.next_page_token)}})


async def set_registration(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        is_open = body.get("open")
        if not isinstance(is_open, bool):
            raise BridgeError(400, "'open' must be true or false.", param="open")
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).admin.SetRegistration, apb.SetRegistrationRequest(open=is_open),
                       200, lambda r: {"open": r.open})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/auth/register", register)
    r.add_post("/api/auth/login", login)
    r.add_post("/api/auth/logout", logout)
    r.add_get("/api/auth/me", me)
    r.add_get("/api/auth/sessions", list_sessions)
    r.add_delete("/api/auth/sessions/{id}", revoke_session)
    r.add_put("/api/auth/password", change_password)
    r.add_get("/api/auth/registration", registration)
    r.add_get("/api/keys", list_keys)
    r.add_post("/api/keys", create_key)
    r.add_delete("/api/keys/{id}", delete_key)
    r.add_get("/api/tokens", list_tokens)
    r.add_post("/api/tokens", create_token)
    r.add_delete("/api/tokens/{id}", revoke_token)
    r.add_get("/api/usage", usage)
    r.add_put("/api/admin/registration", set_registration)
