"""Issue 16's admin user routes (ACCOUNTS_API.md): /api/admin/users[/{id}[/sessions]] and the invite.

Each handler parses, calls UserService (or KeyService.AcceptInvite), renders; every rule (last
admin, unknown plan, budgets) is the core's. Errors use the /api/auth shape of seeds/users.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway_http import calls
from gateway_http.errors import BridgeError
from gateway_http.seeds.users import (
    _body,
    _call,
    _query_int,
    _sign_in,
    _str,
    bad_request,
    key_json,
    session_json,
    token_json,
    user_json,
)
from tollgate.v1 import key_service_pb2 as kpb
from tollgate.v1 import user_service_pb2 as upb

BUDGET_MAX = 1e9


def _money(body: dict[str, Any], name: str) -> float | None:
    """A $ amount: absent = None (unchanged), null = 0 (none), else a number >= 0."""
    if name not in body:
        return None
    v = body[name]
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or not 0 <= v <= BUDGET_MAX:
        raise BridgeError(400, f"'{name}' must be a number of USD from 0 to {BUDGET_MAX:.0f}, or null.", param=name)
    return float(v)


def summary_json(s: upb.UserSummary) -> dict[str, Any]:
    return {**user_json(s.user), "tokens": s.tokens, "spend_month_usd": round(s.spend_month_usd, 6)}


async def list_users(request: web.Request) -> web.Response:
    try:
        limit, offset = _query_int(request, "limit", 50), _query_int(request, "offset", 0)
        if limit > 500:
            raise BridgeError(400, "'limit' must be at most 500.", param="limit")
        q = request.query
        msg = upb.ListUsersRequest(page_size=limit, skip=offset, query=q.get("q", ""), plan=q.get("plan", ""),
                                   role=q.get("role", ""), state=q.get("state", ""))
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).users.ListUsers, msg, 200,
                       lambda r: {"items": [summary_json(s) for s in r.users], "total": r.total_size})


async def create_user(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        msg = upb.CreateUserRequest(email=_str(body, "email"), plan=_str(body, "plan"), role=_str(body, "role"),
                                    password=_str(body, "password"))
    except BridgeError as e:
        return bad_request(e)

    def render(r: upb.CreateUserResponse) -> dict[str, Any]:
        out: dict[str, Any] = {"user": user_json(r.user)}
        if r.invite_token:
            out["invite_token"] = r.invite_token
        return out

    return await _call(request, calls.client(request).users.CreateUser, msg, 201, render)


async def get_user(request: web.Request) -> web.Response:
    msg = upb.GetUserRequest(id=request.match_info["id"])

    def render(r: upb.GetUserResponse) -> dict[str, Any]:
        u = r.usage
        return {**user_json(r.user), "tokens": [token_json(t) for t in r.tokens],
                "provider_keys": [key_json(k) for k in r.provider_keys],
                "usage": {"requests": u.requests, "prompt_tokens": u.prompt_tokens,
                          "completion_tokens": u.completion_tokens, "cost_usd": round(u.cost_usd, 6)},
                "sessions": r.sessions}

    return await _call(request, calls.client(request).users.GetUser, msg, 200, render)


async def update_user(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        kw: dict[str, Any] = {}
        for name in ("budget_usd_day", "budget_usd_month"):
            v = _money(body, name)
            if v is not None:
                kw[name] = v
        msg = upb.UpdateUserRequest(id=request.match_info["id"], plan=_str(body, "plan"), role=_str(body, "role"),
                                    state=_str(body, "state"), **kw)
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).users.UpdateUser, msg, 200, lambda r: user_json(r.user))


async def delete_user(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).users.DeleteUser, upb.DeleteUserRequest(id=request.match_info["id"]))


async def user_sessions(request: web.Request) -> web.Response:
    msg = upb.ListUserSessionsRequest(id=request.match_info["id"])
    return await _call(request, calls.client(request).users.ListUserSessions, msg, 200,
                       lambda r: [session_json(x) for x in r.sessions])


async def revoke_user_sessions(request: web.Request) -> web.Response:
    msg = upb.RevokeUserSessionsRequest(id=request.match_info["id"])
    return await _call(request, calls.client(request).users.RevokeUserSessions, msg)


async def accept_invite(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        msg = kpb.AcceptInviteRequest(invite_token=_str(body, "invite_token", "inviteToken"),
                                      password=_str(body, "password"))
    except BridgeError as e:
        return bad_request(e)
    return await _sign_in(request, calls.client(request).keys.AcceptInvite, msg, 200)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/admin/users", list_users)
    r.add_post("/api/admin/users", create_user)
    r.add_get("/api/admin/users/{id}", get_user)
    r.add_patch("/api/admin/users/{id}", update_user)
    r.add_delete("/api/admin/users/{id}", delete_user)
    r.add_get("/api/admin/users/{id}/sessions", user_sessions)
    r.add_delete("/api/admin/users/{id}/sessions", revoke_user_sessions)
    r.add_post("/api/auth/invite/accept", accept_invite)
