"""Issue 16's admin user routes (ACCOUNTS_API.md): /api/admin/users[/{id}[/sessions]] and the invite.

Each handler parses, calls UserService (or KeyService.AcceptInvite), renders; every rule (last
admin, unknown plan, budgets) is the core's. Errors use the /api/auth shape of seeds/users.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.errors import BridgeError
from gateway_http.seeds.users import (
    _body,
    _call,
    _int,
    _query_float,
    _query_int,
    _sign_in,
    _str,
    _strs,
    bad_request,
    iso,
    key_json,
    rpc_error,
    session_json,
    token_json,
    user_json,
)
from tollgate.client import error_info
from tollgate.statements import statement_dict, statements_csv
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
    add_money_routes(app)


# ------------------------------------------------------------------------------ money (issue 16 points 4, 5)

def _wants_csv(request: web.Request) -> bool:
    fmt = request.query.get("format", "")
    if fmt not in ("", "json", "csv"):
        raise BridgeError(400, "'format' must be json or csv.", param="format")
    return fmt == "csv" or (not fmt and "text/csv" in request.headers.get("Accept", ""))


def _bucket(b: kpb.UsageBucket, key: str) -> dict[str, Any]:
    return {key: b.name, "requests": b.requests, "prompt_tokens": b.prompt_tokens,
            "completion_tokens": b.completion_tokens, "cost_usd": round(b.cost_usd, 6)}


async def _statements(request: web.Request, method: Any, message: Any, pick: Any, single: bool) -> web.Response:
    try:
        as_csv = _wants_csv(request)
    except BridgeError as e:
        return bad_request(e)
    if not as_csv:
        render = (lambda r: statement_dict(pick(r)[0])) if single else (lambda r: [statement_dict(s) for s in pick(r)])
        return await _call(request, method, message, 200, render)
    call = method(message, metadata=calls.metadata(request), timeout=calls.timeout(request))
    try:
        resp = await call
    except AioRpcError as e:
        return rpc_error(error_info(e))
    month = pick(resp)[0].month if pick(resp) else "statements"
    out = web.Response(text=statements_csv(pick(resp)), content_type="text/csv",
                       headers={"Content-Disposition": f'attachment; filename="statement-{month}.csv"'})
    await calls.copy_headers(call, out)
    return out


async def statement(request: web.Request) -> web.Response:
    msg = kpb.GetStatementRequest(month=request.query.get("month", ""))
    return await _statements(request, calls.client(request).keys.GetStatement, msg, lambda r: [r.statement], True)


async def admin_statements(request: web.Request) -> web.Response:
    user = request.query.get("user", "")
    msg = upb.ListStatementsRequest(month=request.query.get("month", ""), user=user)
    return await _statements(request, calls.client(request).users.ListStatements, msg, lambda r: list(r.statements),
                             bool(user))


async def quota(request: web.Request) -> web.Response:
    def limit(x: kpb.QuotaLimit) -> dict[str, Any]:
        num = float if "budget" in x.name else int  # USD for budgets, counts otherwise
        return {"name": x.name, "label": x.label, "limit": num(x.limit), "used": num(x.used),
                "remaining": num(x.remaining), "reset_at": iso(x.reset_at)}

    return await _call(request, calls.client(request).keys.GetQuota, kpb.GetQuotaRequest(), 200,
                       lambda r: {"plan": r.plan, "limits": [limit(x) for x in r.limits]})


async def usage_summary(request: web.Request) -> web.Response:
    try:
        msg = kpb.GetUsageSummaryRequest(since=_query_float(request, "since"), until=_query_float(request, "until"))
    except BridgeError as e:
        return bad_request(e)

    def render(r: kpb.GetUsageSummaryResponse) -> dict[str, Any]:
        t = r.total
        return {"period": {"since": iso(r.since), "until": iso(r.until)}, "requests": t.requests,
                "prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens,
                "cost_usd": round(t.cost_usd, 6), "by_day": [_bucket(b, "date") for b in r.by_day],
                "by_model": [_bucket(b, "model") for b in r.by_model]}

    return await _call(request, calls.client(request).keys.GetUsageSummary, msg, 200, render)


def plan_json(p: upb.Plan) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "description": p.description, "rpm": p.rpm, "rpd": p.rpd, "tpd": p.tpd,
                           "tpm_month": p.tpm_month,
                           "price_usd_month": p.price_usd_month if p.HasField("price_usd_month") else None,
                           "users": p.users}
    if p.budget_usd_day:
        out["budget_usd_day"] = p.budget_usd_day
    if p.budget_usd_month:
        out["budget_usd_month"] = p.budget_usd_month
    return out


async def plans(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).users.ListPlans, upb.ListPlansRequest(), 200,
                       lambda r: [plan_json(p) for p in r.plans])


def _usd(body: dict[str, Any], name: str) -> float | None:
    """A plan's $ field: absent or null = None, else a number (the core checks its range)."""
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise BridgeError(400, f"'{name}' must be a number of USD, or null.", param=name)
    return float(v)


def _plan_msg(body: dict[str, Any], name: str) -> upb.Plan:
    """ACCOUNTS_API.md's plan body: limits (null/absent = 0 = no limit), price (null = custom), budgets."""
    plan = upb.Plan(name=name, description=_str(body, "description"),
                    **{f: _int(body, f, lo=-(2 ** 63), hi=2 ** 63 - 1) for f in ("rpm", "rpd", "tpd", "tpm_month")},
                    budget_usd_day=_usd(body, "budget_usd_day") or 0.0,
                    budget_usd_month=_usd(body, "budget_usd_month") or 0.0)
    price = _usd(body, "price_usd_month")
    if price is not None:
        plan.price_usd_month = price
    return plan


async def create_plan(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        msg = upb.CreatePlanRequest(plan=_plan_msg(body, _str(body, "name")))
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).users.CreatePlan, msg, 201, lambda r: plan_json(r.plan))


async def update_plan(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        msg = upb.UpdatePlanRequest(plan=_plan_msg(body, request.match_info["name"]))
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).users.UpdatePlan, msg, 200, lambda r: plan_json(r.plan))


async def delete_plan(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).users.DeletePlan,
                       upb.DeletePlanRequest(name=request.match_info["name"]))


def _page(request: web.Request) -> tuple[int, int]:
    limit, offset = _query_int(request, "limit", 50), _query_int(request, "offset", 0)
    if limit > 500:
        raise BridgeError(400, "'limit' must be at most 500.", param="limit")
    return limit, offset


def _maybe_json(text: str) -> Any:
    import json

    return json.loads(text) if text else None


async def audit(request: web.Request) -> web.Response:
    try:
        limit, offset = _page(request)
        q = request.query
        msg = upb.ListAuditRequest(page_size=limit, skip=offset, actor=q.get("actor", ""), action=q.get("action", ""),
                                   since=_query_float(request, "since"), until=_query_float(request, "until"))
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).users.ListAudit, msg, 200, lambda r: [
        {"id": x.id, "actor": x.actor, "action": x.action, "target": x.target, "ip": x.ip,
         "created_at": iso(x.created_at), "before": _maybe_json(x.before), "after": _maybe_json(x.after)}
        for x in r.entries])


async def alerts(request: web.Request) -> web.Response:
    try:
        limit, offset = _page(request)
    except BridgeError as e:
        return bad_request(e)
    msg = upb.ListAlertsRequest(page_size=limit, skip=offset)
    return await _call(request, calls.client(request).users.ListAlerts, msg, 200, lambda r: [
        {"id": x.id, "kind": x.kind, "subject": x.subject, "message": x.message, "created_at": iso(x.created_at),
         "delivered": x.delivered} for x in r.alerts])


def gateway_key_json(k: upb.GatewayKey) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "provider": k.provider, "base_url": k.base_url or None, "mask": k.mask,
            "models": list(k.models), "priority": k.priority, "disabled": k.disabled, "source": k.source}


async def list_gateway_keys(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).users.ListGatewayKeys, upb.ListGatewayKeysRequest(), 200,
                       lambda r: [gateway_key_json(k) for k in r.keys])


async def create_gateway_key(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        msg = upb.CreateGatewayKeyRequest(provider=_str(body, "provider"), name=_str(body, "name"),
                                          api_key=_str(body, "api_key", "apiKey", "key"),
                                          base_url=_str(body, "base_url", "baseUrl"), models=_strs(body, "models"),
                                          priority=_int(body, "priority", lo=-1_000_000, hi=1_000_000),
                                          default_model=_str(body, "default_model", "defaultModel"))
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).users.CreateGatewayKey, msg, 201,
                       lambda r: gateway_key_json(r.key))


async def update_gateway_key(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        kw: dict[str, Any] = {}
        if "disabled" in body:
            if not isinstance(body["disabled"], bool):
                raise BridgeError(400, "'disabled' must be true or false.", param="disabled")
            kw["disabled"] = body["disabled"]
        msg = upb.UpdateGatewayKeyRequest(id=request.match_info["id"], **kw)
    except BridgeError as e:
        return bad_request(e)
    return await _call(request, calls.client(request).users.UpdateGatewayKey, msg, 200,
                       lambda r: gateway_key_json(r.key))


async def delete_gateway_key(request: web.Request) -> web.Response:
    return await _call(request, calls.client(request).users.DeleteGatewayKey,
                       upb.DeleteGatewayKeyRequest(id=request.match_info["id"]))


def add_money_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/statements", statement)
    r.add_get("/api/admin/statements", admin_statements)
    r.add_get("/api/quota", quota)
    r.add_get("/api/usage/summary", usage_summary)
    r.add_get("/api/admin/plans", plans)
    r.add_post("/api/admin/plans", create_plan)
    r.add_put("/api/admin/plans/{name}", update_plan)
    r.add_delete("/api/admin/plans/{name}", delete_plan)
    r.add_get("/api/admin/audit", audit)
    r.add_get("/api/admin/alerts", alerts)
    r.add_get("/api/admin/provider-keys", list_gateway_keys)
    r.add_post("/api/admin/provider-keys", create_gateway_key)
    r.add_patch("/api/admin/provider-keys/{id}", update_gateway_key)
    r.add_delete("/api/admin/provider-keys/{id}", delete_gateway_key)
