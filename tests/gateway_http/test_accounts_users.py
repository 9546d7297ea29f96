"""Issue 16: the admin's users (list, create/invite, plan, role, suspend, delete) and one plan per user."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import anthropic
import grpc
import openai
import pytest

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tests.support.gateway import ADMIN_KEY, config, run_gateway
from tollgate.client import TollgateClient
from tollgate.v1 import chat_pb2

PASSWORD = "correct horse battery"
ADMIN = {"X-Admin-Key": ADMIN_KEY}
TINY = TierConfig("tiny", rpm=4, description="4 requests/min")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def shared(request) -> dict:
    """Each test runs on SQLite with the in-process limiter, and on PostgreSQL + Redis."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url"), "redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture(params=["sqlite", "postgres+redis"])
async def gw(request, tmp_path):
    async with run_gateway(config(tmp_path, demo="on", tiers=DEFAULT_TIERS + (TINY,), **shared(request))) as g:
        yield g


async def make_user(gw, email: str, plan: str = "basic", role: str = "user") -> tuple[dict, str]:
    r = await gw.http.post("/api/admin/users", headers=ADMIN, json={"email": email, "plan": plan, "role": role,
                                                                     "password": PASSWORD})
    assert r.status_code == 201, r.text
    assert "invite_token" not in r.json()
    login = await gw.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return r.json()["user"], login.json()["token"]


async def token(gw, session: str, **extra) -> str:
    r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "t", **extra})
    assert r.status_code == 201, r.text
    assert r.json()["key"] == r.json()["token"]
    return r.json()["key"]


async def chat(gw, key: str) -> int:
    r = await gw.http.post("/v1/chat/completions", headers=bearer(key),
                           json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
    return r.status_code


async def test_list_search_filter_and_pages(gw) -> None:
    for i in range(5):
        await make_user(gw, f"u{i}@example.com", plan="startup" if i % 2 else "growth")
    r = await gw.http.get("/api/admin/users", headers=ADMIN, params={"limit": 2, "offset": 1})
    body = r.json()
    assert r.status_code == 200 and body["total"] == 5 and [u["email"] for u in body["items"]] == ["u1@example.com",
                                                                                                     "u2@example.com"]
    assert {"tokens", "spend_month_usd", "plan", "state", "role"} <= set(body["items"][0])
    r = await gw.http.get("/api/admin/users", headers=ADMIN, params={"plan": "startup"})
    assert {u["email"] for u in r.json()["items"]} == {"u1@example.com", "u3@example.com"}
    r = await gw.http.get("/api/admin/users", headers=ADMIN, params={"q": "U4@"})
    assert [u["email"] for u in r.json()["items"]] == ["u4@example.com"]
    for bad in ({"plan": "nope"}, {"role": "king"}, {"state": "asleep"}, {"limit": "501"}, {"offset": "-1"}):
        r = await gw.http.get("/api/admin/users", headers=ADMIN, params=bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR", (bad, r.text)
    # A user gets 403, never data.
    _, session = await make_user(gw, "plain@example.com")
    r = await gw.http.get("/api/admin/users", headers=bearer(session))
    assert r.status_code == 403 and "items" not in r.text


async def test_invite_flow_and_bad_input(gw) -> None:
    r = await gw.http.post("/api/admin/users", headers=ADMIN, json={"email": "new@example.com", "plan": "startup"})
    assert r.status_code == 201, r.text
    invite = r.json()["invite_token"]
    assert r.json()["user"]["plan"] == "startup"
    # No password yet: nothing signs in.
    assert (await gw.http.post("/api/auth/login", json={"email": "new@example.com", "password": PASSWORD})).status_code == 401
    r = await gw.http.post("/api/auth/invite/accept", json={"invite_token": invite, "password": "short"})
    assert r.status_code == 400
    r = await gw.http.post("/api/auth/invite/accept", json={"invite_token": invite, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["user"]["email"] == "new@example.com" and r.json()["csrf_token"]
    r = await gw.http.post("/api/auth/invite/accept", json={"invite_token": invite, "password": "another-pass"})
    assert r.status_code == 401  # one-time
    assert (await gw.http.post("/api/auth/login", json={"email": "new@example.com", "password": PASSWORD})).status_code == 200
    for body in ({"email": "x@example.com", "plan": "gold"}, {"email": "not-an-email", "plan": "basic"},
                 {"email": "y@example.com", "plan": "basic", "role": "king"}):
        r = await gw.http.post("/api/admin/users", headers=ADMIN, json=body)
        assert r.status_code == 400, r.text
    r = await gw.http.post("/api/admin/users", headers=ADMIN, json={"email": "NEW@example.com", "plan": "basic"})
    assert r.status_code == 409
    assert (await gw.http.get("/api/admin/users", headers=ADMIN)).json()["total"] == 1


async def test_plan_role_changes_revoke_sessions_and_last_admin_is_protected(gw) -> None:
    user, session = await make_user(gw, "ann@example.com")
    key = await token(gw, session)
    r = await gw.http.patch(f"/api/admin/users/{user['id']}", headers=ADMIN, json={"plan": "gold"})
    assert r.status_code == 400
    for bad in ({"budget_usd_month": -1}, {"budget_usd_day": "lots"}, {"state": "deleted"}):
        assert (await gw.http.patch(f"/api/admin/users/{user['id']}", headers=ADMIN, json=bad)).status_code == 400
    assert (await gw.http.get("/api/auth/me", headers=bearer(session))).status_code == 200  # nothing changed
    r = await gw.http.patch(f"/api/admin/users/{user['id']}", headers=ADMIN, json={"plan": "growth", "budget_usd_month": 25})
    assert r.status_code == 200 and r.json()["plan"] == "growth" and r.json()["budget_usd_month"] == 25
    assert (await gw.http.get("/api/auth/me", headers=bearer(session))).status_code == 401  # sessions revoked
    assert (await gw.http.get("/api/tokens", headers=bearer(key))).status_code == 200  # tokens stay
    detail = (await gw.http.get(f"/api/admin/users/{user['id']}", headers=ADMIN)).json()
    assert detail["plan"] == "growth" and len(detail["tokens"]) == 1 and detail["sessions"] == 0
    assert set(detail["usage"]) == {"requests", "prompt_tokens", "completion_tokens", "cost_usd"}

    # Promote ann, then the last-admin rule: demote one admin fine, the last one 409.
    root, root_session = await make_user(gw, "root@example.com", role="admin")
    r = await gw.http.patch(f"/api/admin/users/{root['id']}", headers=ADMIN, json={"role": "user"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    assert (await gw.http.patch(f"/api/admin/users/{root['id']}", headers=ADMIN, json={"state": "suspended"})).status_code == 409
    assert (await gw.http.delete(f"/api/admin/users/{root['id']}", headers=ADMIN)).status_code == 409
    r = await gw.http.patch(f"/api/admin/users/{user['id']}", headers=ADMIN, json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    r = await gw.http.patch(f"/api/admin/users/{root['id']}", headers=ADMIN, json={"role": "user"})
    assert r.status_code == 200 and r.json()["role"] == "user"
    assert (await gw.http.get("/api/admin/users", headers=bearer(root_session))).status_code == 401  # re-sign-in


async def test_suspension_stops_tokens_with_a_403_on_every_surface_within_a_second(gw) -> None:
    user, session = await make_user(gw, "ann@example.com")
    key = await token(gw, session)
    assert await chat(gw, key) == 200
    t0 = time.monotonic()
    r = await gw.http.patch(f"/api/admin/users/{user['id']}", headers=ADMIN, json={"state": "suspended"})
    assert r.status_code == 200 and r.json()["state"] == "suspended"
    assert await chat(gw, key) == 403 and time.monotonic() - t0 < 1.0  # same replica: at once
    oa = openai.AsyncOpenAI(api_key=key, base_url=gw.url + "/v1", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        await oa.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    assert "suspended" in str(e.value.body)
    an = anthropic.AsyncAnthropic(api_key=key, base_url=gw.url, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        await an.messages.create(model="demo", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    client = TollgateClient.connect(gw.rt.grpc_target, api_key=key)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as ge:
            await client.chat(chat_pb2.ChatInput(model="demo", messages=[chat_pb2.Message(
                role=chat_pb2.ROLE_USER, text="hi")]))
        assert ge.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await client.close()
    r = await gw.http.post("/api/chat", headers=bearer(key), json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    # Reactivate: the token works again (the sessions were revoked by the change).
    await gw.http.patch(f"/api/admin/users/{user['id']}", headers=ADMIN, json={"state": "active"})
    assert await chat(gw, key) == 200
    assert (await gw.http.get("/api/auth/me", headers=bearer(session))).status_code == 401


async def test_a_suspended_user_signing_in_gets_a_403_only_with_the_right_password(gw) -> None:
    from tollgate.v1 import key_service_pb2 as kpb

    user, _ = await make_user(gw, "ann@example.com")
    await make_user(gw, "bob@example.com")
    r = await gw.http.patch(f"/api/admin/users/{user['id']}", headers=ADMIN, json={"state": "suspended"})
    assert r.status_code == 200 and r.json()["state"] == "suspended"

    # REST (seed 001's shape): the right password says "suspended" with a 403 ...
    r = await gw.http.post("/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "FORBIDDEN" and "suspended" in err["message"]
    assert PASSWORD not in r.text and "token" not in r.json()
    # ... a wrong one answers exactly like a wrong password on an active account or an unknown email.
    wrong = await gw.http.post("/api/auth/login", json={"email": "ann@example.com", "password": "wrong password"})
    active_wrong = await gw.http.post("/api/auth/login", json={"email": "bob@example.com", "password": "wrong password"})
    unknown = await gw.http.post("/api/auth/login", json={"email": "nobody@example.com", "password": "wrong password"})
    assert wrong.status_code == active_wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"] == active_wrong.json()["error"] == unknown.json()["error"]  # requestId aside
    assert "suspended" not in wrong.text

    # gRPC: PERMISSION_DENIED with the right password, UNAUTHENTICATED without it.
    client = TollgateClient.connect(gw.rt.grpc_target)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as ge:
            await client.keys.Login(kpb.LoginRequest(email="ann@example.com", password=PASSWORD))
        assert ge.value.code() == grpc.StatusCode.PERMISSION_DENIED and "suspended" in ge.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as ge:
            await client.keys.Login(kpb.LoginRequest(email="ann@example.com", password="wrong password"))
        assert ge.value.code() == grpc.StatusCode.UNAUTHENTICATED and "suspended" not in ge.value.details()
    finally:
        await client.close()

    # Reactivated: the same password signs in again.
    await gw.http.patch(f"/api/admin/users/{user['id']}", headers=ADMIN, json={"state": "active"})
    r = await gw.http.post("/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert r.status_code == 200 and r.json()["token"].startswith("tgs_")


async def test_delete_revokes_tokens_and_keeps_ledger_rows(gw) -> None:
    user, session = await make_user(gw, "ann@example.com")
    key = await token(gw, session)
    assert await chat(gw, key) == 200
    assert (await gw.http.delete(f"/api/admin/users/{user['id']}", headers=ADMIN)).status_code == 204
    assert await chat(gw, key) == 401
    assert (await gw.http.get(f"/api/admin/users/{user['id']}", headers=ADMIN)).status_code == 404
    assert (await gw.http.delete(f"/api/admin/users/{user['id']}", headers=ADMIN)).status_code == 404
    rows = [r for r in await gw.ledger() if r.user_id == user["id"]]
    assert len(rows) == 1 and rows[0].status == "ok"
    r = await gw.http.get("/api/admin/users", headers=ADMIN, params={"state": "deleted"})
    assert [u["id"] for u in r.json()["items"]] == [user["id"]]


async def test_one_plan_shared_by_all_of_a_users_tokens(gw) -> None:
    user, session = await make_user(gw, "ann@example.com", plan="tiny")  # 4 requests/minute
    keys = [await token(gw, session) for _ in range(3)]
    codes = [await chat(gw, keys[i % 3]) for i in range(7)]
    assert codes.count(200) == 4 and codes.count(429) == 3, codes
    # A seed-000 admin API key (no user) keeps its own limits.
    r = await gw.http.post("/api/admin/keys", headers=ADMIN, json={"name": "c", "email": "c@example.com", "tier": "tiny"})
    solo = r.json()["key"]
    assert [await chat(gw, solo) for _ in range(5)].count(200) == 4


async def test_a_tokens_own_tighter_limit_and_the_plan_both_admit(gw) -> None:
    _, session = await make_user(gw, "ann@example.com", plan="tiny")
    tight = await token(gw, session, rpm=2)
    loose = await token(gw, session)
    r = await gw.http.get("/api/tokens", headers=bearer(session))
    assert sorted(t.get("rpm", 0) for t in r.json()["tokens"]) == [0, 2]
    assert [await chat(gw, tight) for _ in range(3)] == [200, 200, 429]
    assert [await chat(gw, loose) for _ in range(3)] == [200, 200, 429]  # the plan's 4 are shared
    for bad in ({"rpm": -1}, {"budget_usd_day": -5}, {"budget_usd_month": "x"}):
        r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "b", **bad})
        assert r.status_code == 400, (bad, r.text)


async def test_admin_user_sessions(gw) -> None:
    user, session = await make_user(gw, "ann@example.com")
    r = await gw.http.get(f"/api/admin/users/{user['id']}/sessions", headers=ADMIN)
    assert r.status_code == 200 and len(r.json()) == 1
    assert (await gw.http.delete(f"/api/admin/users/{user['id']}/sessions", headers=ADMIN)).status_code == 204
    assert (await gw.http.get("/api/auth/me", headers=bearer(session))).status_code == 401
    assert (await gw.http.get("/api/admin/users/usr_nope/sessions", headers=ADMIN)).status_code == 404
