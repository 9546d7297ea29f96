"""Issue 16, browser sessions (ACCOUNTS_API.md): cookies, CSRF, logout everywhere, me, session lists."""

from __future__ import annotations

import httpx
import pytest

from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tests.support.gateway import ADMIN_KEY, config, run_gateway

PASSWORD = "correct horse battery"


def shared(request) -> dict:
    """Each test runs on SQLite with the in-process limiter, and on PostgreSQL + Redis."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url"), "redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture(params=["sqlite", "postgres+redis"])
async def gw(request, tmp_path):
    async with run_gateway(config(tmp_path, demo="on", **shared(request))) as g:
        yield g


def browser(gw) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.url, timeout=30, headers={"User-Agent": "pytest-browser/1"})


async def test_login_sets_the_console_cookies_and_the_cookie_authenticates(gw) -> None:
    async with browser(gw) as b:
        r = await b.post("/api/auth/register", json={"email": "root@example.com", "password": PASSWORD})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["user"]["role"] == "admin" and body["token"].startswith("tgs_") and body["csrf_token"]
        cookies = {c.split("=", 1)[0]: c for c in r.headers.get_list("set-cookie")}
        assert "HttpOnly" in cookies["tg_session"] and "SameSite=Strict" in cookies["tg_session"]
        assert "Path=/" in cookies["tg_session"] and "Secure" not in cookies["tg_session"]
        assert "HttpOnly" not in cookies["tg_csrf"] and "SameSite=Strict" in cookies["tg_csrf"]
        assert b.cookies["tg_csrf"] == body["csrf_token"]

        me = await b.get("/api/auth/me")
        assert me.status_code == 200 and me.json()["email"] == "root@example.com" and me.json()["plan"]

        # A cookie write without the CSRF header, or with a wrong one: 403 {"error": "csrf"}, nothing made.
        for headers in ({}, {"X-CSRF-Token": "nope"}):
            r = await b.post("/api/tokens", json={"name": "app"}, headers=headers)
            assert r.status_code == 403 and r.json()["error"] == "csrf", r.text
        assert (await b.get("/api/tokens")).json()["total"] == 0
        r = await b.post("/api/tokens", json={"name": "app"}, headers={"X-CSRF-Token": body["csrf_token"]})
        assert r.status_code == 201, r.text
        # Admin routes through the cookie too, same CSRF rule.
        r = await b.put("/api/admin/registration", json={"open": True})
        assert r.status_code == 403 and r.json()["error"] == "csrf"
        r = await b.put("/api/admin/registration", json={"open": True}, headers={"X-CSRF-Token": body["csrf_token"]})
        assert r.status_code == 200 and r.json() == {"open": True}
    # A bearer client is not subject to CSRF.
    r = await gw.http.post("/api/tokens", json={"name": "cli"}, headers={"Authorization": f"Bearer {body['token']}"})
    assert r.status_code == 201


async def test_secure_cookies_when_configured(tmp_path) -> None:
    async with run_gateway(config(tmp_path, demo="on", cookie_secure=True)) as gw:
        r = await gw.http.post("/api/auth/register", json={"email": "a@example.com", "password": PASSWORD})
        assert all("Secure" in c for c in r.headers.get_list("set-cookie"))


async def test_logout_revokes_the_session_everywhere_and_clears_cookies(gw) -> None:
    async with browser(gw) as b:
        r = await b.post("/api/auth/register", json={"email": "root@example.com", "password": PASSWORD})
        token, csrf = r.json()["token"], r.json()["csrf_token"]
        # The same session used as a bearer token elsewhere.
        assert (await gw.http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        assert (await b.post("/api/auth/logout")).json()["error"] == "csrf"
        r = await b.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204
        assert all("Max-Age=0" in c or "expires=" in c.lower() for c in r.headers.get_list("set-cookie"))
        assert "tg_session" not in b.cookies
    r = await gw.http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert (await gw.http.get("/api/auth/me")).status_code == 401


async def test_session_list_revoke_and_password_change(gw) -> None:
    r = await gw.http.post("/api/auth/register", json={"email": "root@example.com", "password": PASSWORD})
    first = r.json()["token"]
    async with browser(gw) as b:
        r = await b.post("/api/auth/login", json={"email": "root@example.com", "password": PASSWORD})
        assert r.status_code == 200 and r.json()["csrf_token"]
        csrf = r.json()["csrf_token"]
        sessions = (await b.get("/api/auth/sessions")).json()
        assert len(sessions) == 2 and [s["current"] for s in sessions].count(True) == 1
        mine = next(s for s in sessions if s["current"])
        assert mine["user_agent"] == "pytest-browser/1" and mine["ip"] == "127.0.0.1" and mine["last_used_at"]
        other = next(s for s in sessions if not s["current"])

        # Another user cannot see or revoke these sessions: 404 like a missing one.
        await gw.http.put("/api/admin/registration", headers={"X-Admin-Key": ADMIN_KEY}, json={"open": True})
        bob = (await gw.http.post("/api/auth/register", json={"email": "bob@example.com", "password": PASSWORD})).json()
        bob_h = {"Authorization": f"Bearer {bob['token']}"}
        assert len((await gw.http.get("/api/auth/sessions", headers=bob_h)).json()) == 1
        r = await gw.http.delete(f"/api/auth/sessions/{other['id']}", headers=bob_h)
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        assert (await gw.http.get("/api/auth/me", headers={"Authorization": f"Bearer {first}"})).status_code == 200

        r = await b.delete(f"/api/auth/sessions/{other['id']}", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204
        assert (await gw.http.get("/api/auth/me", headers={"Authorization": f"Bearer {first}"})).status_code == 401

        # Password change: wrong current → 400 and nothing changes; right → 204, other sessions revoked.
        again = (await gw.http.post("/api/auth/login", json={"email": "root@example.com", "password": PASSWORD})).json()
        r = await b.put("/api/auth/password", json={"current_password": "wrong-wrong", "new_password": "n" * 12},
                        headers={"X-CSRF-Token": csrf})
        assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"
        r = await b.put("/api/auth/password", json={"current_password": PASSWORD, "new_password": "short"},
                        headers={"X-CSRF-Token": csrf})
        assert r.status_code == 400
        r = await b.put("/api/auth/password", json={"current_password": PASSWORD, "new_password": "n" * 12},
                        headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204, r.text
        assert (await b.get("/api/auth/me")).status_code == 200  # this session stays
        r = await gw.http.get("/api/auth/me", headers={"Authorization": f"Bearer {again['token']}"})
        assert r.status_code == 401
    r = await gw.http.post("/api/auth/login", json={"email": "root@example.com", "password": PASSWORD})
    assert r.status_code == 401
    r = await gw.http.post("/api/auth/login", json={"email": "root@example.com", "password": "n" * 12})
    assert r.status_code == 200


async def test_admin_key_sign_in_is_the_operator(gw) -> None:
    r = await gw.http.post("/api/auth/login", json={"admin_key": "wrong"})
    assert r.status_code == 401 and ADMIN_KEY not in r.text
    async with browser(gw) as b:
        r = await b.post("/api/auth/login", json={"admin_key": ADMIN_KEY})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"]["id"] == "operator" and body["user"]["role"] == "admin" and body["user"]["email"] == "operator"
        assert (await b.get("/api/auth/me")).json()["id"] == "operator"
        assert (await b.get("/api/admin/keys")).status_code == 200
        r = await b.post("/api/admin/keys", json={"name": "c", "email": "c@example.com", "tier": "basic"},
                         headers={"X-CSRF-Token": body["csrf_token"]})
        assert r.status_code == 201
        assert len((await b.get("/api/auth/sessions")).json()) == 1
        assert (await b.post("/api/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]})).status_code == 204
    r = await gw.http.get("/api/admin/keys", headers={"Authorization": f"Bearer {body['token']}"})
    assert r.status_code in (401, 403)


async def test_registration_state_is_public(gw) -> None:
    assert (await gw.http.get("/api/auth/registration")).json() == {"enabled": True}
    await gw.http.post("/api/auth/register", json={"email": "root@example.com", "password": PASSWORD})
    assert (await gw.http.get("/api/auth/registration")).json() == {"enabled": False}
