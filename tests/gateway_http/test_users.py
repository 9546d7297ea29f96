"""Seed 001's user surface end to end: sign-up, login, tokens, provider keys, own usage."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.support.gateway import ADMIN_KEY, config, run_gateway

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signup(gw, email: str, password: str = PASSWORD) -> tuple[dict, str]:
    r = await gw.http.post("/api/auth/register", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["user"], body["token"]


async def open_registration(gw, is_open: bool = True) -> None:
    r = await gw.http.put("/api/admin/registration", headers={"X-Admin-Key": ADMIN_KEY}, json={"open": is_open})
    assert r.status_code == 200 and r.json() == {"open": is_open}, r.text


async def new_token(gw, session: str, name: str = "app", **extra) -> dict:
    r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": name, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    return err


@pytest.fixture
async def gw(tmp_path):
    async with run_gateway(config(tmp_path, demo="on")) as g:
        yield g


async def test_first_user_is_admin_and_registration_closes_until_reopened(gw) -> None:
    admin, admin_session = await signup(gw, "Root@Example.com")
    assert admin["role"] == "admin" and admin["email"] == "root@example.com" and admin["tier"]
    assert set(admin) == {"id", "email", "role", "tier", "plan", "state", "created_at"}
    assert admin["plan"] == admin["tier"] and admin["state"] == "active" and admin_session.startswith("tgs_")

    r = await gw.http.post("/api/auth/register", json={"email": "bob@example.com", "password": PASSWORD})
    assert_error(r, 403, "FORBIDDEN")

    # Only an admin may reopen it: the admin user's session (or the admin key).
    r = await gw.http.put("/api/admin/registration", headers=bearer(admin_session), json={"open": True})
    assert r.status_code == 200 and r.json() == {"open": True}
    bob, bob_session = await signup(gw, "bob@example.com")
    assert bob["role"] == "user"
    r = await gw.http.put("/api/admin/registration", headers=bearer(bob_session), json={"open": False})
    assert_error(r, 403, "FORBIDDEN")

    # The same email twice: CONFLICT, without echoing the address.
    r = await gw.http.post("/api/auth/register", json={"email": "BOB@example.com", "password": PASSWORD})
    err = assert_error(r, 409, "CONFLICT")
    assert "bob@" not in r.text.lower()

    r = await gw.http.post("/api/auth/register", json={"email": "not-an-email", "password": "short"})
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert {d["field"] for d in err["details"]} == {"email", "password"}
    assert "short" not in r.text
    for body in ([], "x", {"email": 5, "password": PASSWORD}):
        assert_error(await gw.http.post("/api/auth/register", json=body), 400, "VALIDATION_ERROR")
    r = await gw.http.put("/api/admin/registration", headers=bearer(admin_session), json={"open": "yes"})
    assert_error(r, 400, "VALIDATION_ERROR")
    await open_registration(gw, False)
    r = await gw.http.post("/api/auth/register", json={"email": "carol@example.com", "password": PASSWORD})
    assert_error(r, 403, "FORBIDDEN")


async def test_login_and_bounded_bad_logins(gw) -> None:
    user, _ = await signup(gw, "ann@example.com")
    r = await gw.http.post("/api/auth/login", json={"email": "ANN@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == user and body["token"].startswith("tgs_") and body["expiresAt"].endswith("Z")
    r = await gw.http.get("/api/tokens", headers=bearer(body["token"]))
    assert r.status_code == 200 and r.json() == {"tokens": [], "total": 0}

    wrong = await gw.http.post("/api/auth/login", json={"email": "ann@example.com", "password": "wrong password"})
    unknown = await gw.http.post("/api/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    for r in (wrong, unknown):
        err = assert_error(r, 401, "UNAUTHORIZED")
        assert err["message"] == "Invalid email or password"
        assert "wrong password" not in r.text and PASSWORD not in r.text
    assert_error(await gw.http.post("/api/auth/login", json={"email": "ann@example.com"}), 400, "VALIDATION_ERROR")

    # 10 failures per email per minute; then even the right password waits (no oracle).
    for _ in range(9):
        assert (await gw.http.post("/api/auth/login", json={"email": "ann@example.com", "password": "nope-nope"})).status_code == 401
    r = await gw.http.post("/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
    assert int(r.headers["Retry-After"]) >= 1
    # Other accounts are not locked out by it.
    r = await gw.http.post("/api/auth/login", json={"email": "nobody@example.com", "password": "x" * 9})
    assert_error(r, 401, "UNAUTHORIZED")


async def test_racing_bad_logins_never_exceed_the_bound(gw) -> None:
    await signup(gw, "ann@example.com")
    rs = await asyncio.gather(*(gw.http.post("/api/auth/login", json={"email": "ann@example.com", "password": f"bad-{i}-pw"})
                                for i in range(16)))
    codes = sorted(r.status_code for r in rs)
    assert codes.count(401) == 10 and codes.count(429) == 6


async def test_tokens_create_list_use_revoke(gw) -> None:
    _, session = await signup(gw, "ann@example.com")
    created = await new_token(gw, session, "laptop", ttlSeconds=3600)
    assert set(created) == {"id", "name", "prefix", "token", "key", "createdAt", "expiresAt", "lastUsedAt"}
    assert created["key"] == created["token"]  # ACCOUNTS_API.md calls it key, seed 001 token
    assert created["token"].startswith(created["prefix"]) and created["name"] == "laptop"
    assert created["expiresAt"] and created["createdAt"]
    forever = await new_token(gw, session, "ci")
    assert forever["expiresAt"] is None

    r = await gw.http.get("/api/tokens", headers=bearer(session))
    listed = r.json()
    assert listed["total"] == 2 and {t["id"] for t in listed["tokens"]} == {created["id"], forever["id"]}
    assert created["token"] not in r.text and all("token" not in t for t in listed["tokens"])

    # The token calls the OpenAI surface (demo model) and the seed's /api/chat.
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=created["token"], max_retries=0)
    resp = await client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hello"}])
    assert "hello" in resp.choices[0].message.content
    r = await gw.http.post("/api/chat", headers=bearer(created["token"]), json={"messages": [{"role": "user", "content": "x"}],
                                                                               "model": "demo"})
    assert r.status_code == 200, r.text

    # A token may list and revoke, but not mint more tokens (that would outlive its revocation).
    assert (await gw.http.get("/api/tokens", headers=bearer(created["token"]))).status_code == 200
    r = await gw.http.post("/api/tokens", headers=bearer(created["token"]), json={"name": "child"})
    assert_error(r, 403, "FORBIDDEN")
    assert_error(await gw.http.post("/api/tokens", headers=bearer(session), json={}), 400, "VALIDATION_ERROR")
    assert_error(await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "x", "ttlSeconds": -1}),
                 400, "VALIDATION_ERROR")

    r = await gw.http.delete(f"/api/tokens/{created['id']}", headers=bearer(session))
    assert r.status_code == 204, r.text
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "again"}])
    assert loop.time() - t0 < 1.0
    assert_error(await gw.http.delete(f"/api/tokens/{created['id']}", headers=bearer(session)), 404, "NOT_FOUND")
    r = await gw.http.get("/api/tokens", headers=bearer(session))
    assert [t["id"] for t in r.json()["tokens"]] == [forever["id"]]


async def test_expired_token_is_refused(gw) -> None:
    _, session = await signup(gw, "ann@example.com")
    tok = await new_token(gw, session, "brief", ttlSeconds=1)
    r = await gw.http.post("/api/chat", headers=bearer(tok["token"]), json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200, r.text
    await asyncio.sleep(1.1)
    r = await gw.http.post("/api/chat", headers=bearer(tok["token"]), json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401


async def _dump(gw) -> str:
    def dump(db):
        return "\n".join(f"{t}: {row!r}" for t in db.get_tables() for row in db.execute_sql(f'SELECT * FROM "{t}"').fetchall())
    return await gw.app.store.run(dump)


async def test_provider_keys_masked_encrypted_isolated(gw) -> None:
    ann, ann_session = await signup(gw, "ann@example.com")
    await open_registration(gw)
    _, bob_session = await signup(gw, "bob@example.com")
    secret = "sk-ann-0123456789abcdefWXYZ"
    r = await gw.http.post("/api/keys", headers=bearer(ann_session), json={
        "provider": "openai", "name": "mine", "key": secret, "baseUrl": "https://93.184.215.14/v1",
        "models": ["gpt-4o", "gpt-4o-mini"], "defaultModel": "gpt-4o-mini", "priority": 2, "dailyQuota": 100, "rpm": 10})
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["maskedKey"] == "sk-...WXYZ" and secret not in r.text
    assert (key["provider"], key["name"], key["baseUrl"], key["models"], key["defaultModel"], key["priority"],
            key["dailyQuota"], key["rpm"]) == ("openai", "mine", "https://93.184.215.14/v1", ["gpt-4o", "gpt-4o-mini"],
                                               "gpt-4o-mini", 2, 100, 10)
    # Seed 001's own spellings work too; the kind's default URL is used when none is given.
    r = await gw.http.post("/api/keys", headers=bearer(ann_session), json={
        "provider": "anthropic", "apiKey": "sk-ant-0123456789abcdef", "allowedModels": ["claude-sonnet-4"], "dailyLimit": 5})
    assert r.status_code == 201, r.text
    assert r.json()["baseUrl"] is None and r.json()["dailyQuota"] == 5 and r.json()["name"] == "anthropic"

    dump = await _dump(gw)
    assert secret not in dump and "sk-ant-0123456789abcdef" not in dump and PASSWORD not in dump
    # The row holds ciphertext and the mask, and the router can open it.
    assert await gw.app.provider_secrets.open(key["id"]) == secret

    r = await gw.http.get("/api/keys", headers=bearer(ann_session))
    assert r.json()["total"] == 2 and secret not in r.text
    r = await gw.http.get("/api/keys", headers=bearer(bob_session))
    assert r.json() == {"keys": [], "total": 0}
    assert_error(await gw.http.delete(f"/api/keys/{key['id']}", headers=bearer(bob_session)), 404, "NOT_FOUND")
    assert (await gw.http.delete(f"/api/keys/{key['id']}", headers=bearer(ann_session))).status_code == 204
    assert_error(await gw.http.delete(f"/api/keys/{key['id']}", headers=bearer(ann_session)), 404, "NOT_FOUND")
    assert (await gw.http.get("/api/keys", headers=bearer(ann_session))).json()["total"] == 1


async def test_provider_key_validation(gw) -> None:
    _, session = await signup(gw, "ann@example.com")
    cases = [
        ({"provider": "nope", "key": "sk-x"}, "provider"),
        ({"provider": "demo", "key": "sk-x"}, "provider"),
        ({"provider": "openai"}, "key"),
        ({"provider": "openai", "key": "sk x\r\nInjected: 1"}, "key"),
        ({"provider": "openai", "key": "sk-x", "models": ["a", "b c"]}, "models"),
        ({"provider": "openai", "key": "sk-x", "models": ["a"], "defaultModel": "b"}, "default_model"),
        ({"provider": "openai", "key": "sk-x", "rpm": -1}, "rpm"),
        ({"provider": "openai_compatible", "key": "sk-x"}, "base_url"),
        ({"provider": "openai", "key": "sk-x", "baseUrl": "http://10.0.0.8/v1"}, "base_url"),
        ({"provider": "openai", "key": "sk-x", "models": "gpt-4o"}, "models"),
        ({"provider": "openai", "key": "sk-x", "priority": 1.5}, "priority"),
    ]
    for body, field in cases:
        r = await gw.http.post("/api/keys", headers=bearer(session), json=body)
        err = assert_error(r, 400, "VALIDATION_ERROR")
        assert field in {d["field"] for d in err.get("details", [])} or field in err["message"], (body, r.text)
    assert (await gw.http.get("/api/keys", headers=bearer(session))).json()["total"] == 0


async def test_user_routes_need_a_user(gw) -> None:
    assert_error(await gw.http.get("/api/keys"), 401, "UNAUTHORIZED")
    assert_error(await gw.http.get("/api/tokens", headers=bearer("tgs_forged.signature")), 401, "UNAUTHORIZED")
    # The admin key and admin-issued API keys are not users: there is nothing of theirs here.
    assert_error(await gw.http.get("/api/keys", headers={"X-Admin-Key": ADMIN_KEY}), 403, "FORBIDDEN")
    api_key = await gw.new_key()
    assert_error(await gw.http.get("/api/usage", headers=bearer(api_key)), 403, "FORBIDDEN")


async def test_usage_shows_only_own_rows(gw) -> None:
    ann, ann_session = await signup(gw, "ann@example.com")
    await open_registration(gw)
    bob, bob_session = await signup(gw, "bob@example.com")
    ann_tok = (await new_token(gw, ann_session))["token"]
    bob_tok = (await new_token(gw, bob_session))["token"]
    for tok, n in ((ann_tok, 3), (bob_tok, 1)):
        for _ in range(n):
            r = await gw.http.post("/v1/chat/completions", headers=bearer(tok),
                                   json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
    admin_key_row = await gw.http.post("/v1/chat/completions", headers=bearer(await gw.new_key()),
                                       json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
    assert admin_key_row.status_code == 200

    r = await gw.http.get("/api/usage", headers=bearer(ann_session))
    body = r.json()
    assert body["pagination"] == {"total": 3, "limit": 100, "offset": 0, "hasMore": False}
    assert len(body["data"]) == 3 and all(row["user"] == ann["id"] for row in body["data"])
    assert all(row["model"] == "demo" and row["status"] == "ok" for row in body["data"])
    # The caller's token works too; filters cannot widen the view.
    r = await gw.http.get("/api/usage", headers=bearer(bob_tok), params={"user": ann["id"], "limit": 1})
    body = r.json()
    assert body["pagination"]["total"] == 1 and [row["user"] for row in body["data"]] == [bob["id"]]
    r = await gw.http.get("/api/usage", headers=bearer(ann_session), params={"limit": 2, "offset": 2})
    assert r.json()["pagination"] == {"total": 3, "limit": 2, "offset": 2, "hasMore": False}
    assert len(r.json()["data"]) == 1
    r = await gw.http.get("/api/usage", headers=bearer(ann_session), params={"limit": 2})
    assert r.json()["pagination"]["hasMore"] is True
    assert_error(await gw.http.get("/api/usage", headers=bearer(ann_session), params={"limit": "x"}), 400, "VALIDATION_ERROR")


async def test_bad_login_bound_is_shared_by_replicas_through_redis(tmp_path) -> None:
    import uuid

    from tests.support.redis_server import redis_url_or_skip

    base = dict(demo="on", redis_url=redis_url_or_skip(), secret_key="users-redis-" + uuid.uuid4().hex)
    async with run_gateway(config(tmp_path / "a", **base)) as one, run_gateway(config(tmp_path / "b", **base)) as two:
        email = f"ann-{uuid.uuid4().hex[:8]}@example.com"
        await signup(one, email)
        for i in range(10):
            r = await (one if i % 2 else two).http.post("/api/auth/login", json={"email": email, "password": f"bad-{i}-pw"})
            assert r.status_code == 401, r.text
        for g in (one, two):
            r = await g.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
            assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
