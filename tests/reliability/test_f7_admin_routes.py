"""RELIABILITY F7: every admin route and RPC refuses user credentials (API keys, tokens, sessions
of non-admin users); the admin key is never read from a query string; CORS is off by default."""

from __future__ import annotations

import grpc
import pytest

from tests.support.gateway import ADMIN_KEY, config, run_gateway
from tollgate.client import TollgateClient
from tollgate.v1 import admin_service_pb2 as apb

PASSWORD = "correct horse battery"
ADMIN_ROUTES = [
    ("POST", "/api/admin/keys", {"name": "x", "email": "x@example.com", "tier": "basic"}),
    ("GET", "/api/admin/keys", None),
    ("DELETE", "/api/admin/keys/ak_whatever", None),
    ("GET", "/api/admin/stats", None),
    ("GET", "/api/admin/usage", None),
    ("PUT", "/api/admin/registration", {"open": True}),
    ("POST", "/auth/reload-keys", None),
]
# Seed 002's status RPCs are open to any authenticated caller by design (ids and states only).
OPEN_ADMIN_RPCS = {"GetRouterStatus", "GetAuthStatus"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def world(tmp_path):
    async with run_gateway(config(tmp_path, demo="on")) as gw:
        r = await gw.http.post("/api/auth/register", json={"email": "root@example.com", "password": PASSWORD})
        admin_session = r.json()["token"]
        await gw.http.put("/api/admin/registration", headers=bearer(admin_session), json={"open": True})
        r = await gw.http.post("/api/auth/register", json={"email": "ann@example.com", "password": PASSWORD})
        user_session = r.json()["token"]
        user_token = (await gw.http.post("/api/tokens", headers=bearer(user_session), json={"name": "t"})).json()["token"]
        admin_token = (await gw.http.post("/api/tokens", headers=bearer(admin_session), json={"name": "t"})).json()["token"]
        creds = {"user session": user_session, "user token": user_token, "admin user's token": admin_token,
                 "issued api key": await gw.new_key()}
        yield gw, admin_session, creds


async def _send(gw, method: str, path: str, body, headers=None, params=None):
    return await gw.http.request(method, path, headers=headers, params=params, json=body)


async def test_every_admin_route_refuses_user_credentials(world) -> None:
    gw, _, creds = world
    for method, path, body in ADMIN_ROUTES:
        for label, cred in creds.items():
            for headers in (bearer(cred), {"X-API-Key": cred}):
                r = await _send(gw, method, path, body, headers)
                assert r.status_code == 403, (method, path, label, r.status_code, r.text)
            # A user credential in the admin header is simply a wrong admin key.
            r = await _send(gw, method, path, body, {"X-Admin-Key": cred})
            assert r.status_code == 401, (method, path, label, r.status_code, r.text)
        r = await _send(gw, method, path, body)
        assert r.status_code == 401, (method, path, r.text)
    # Nothing changed: no key was created by any of those calls.
    keys = (await gw.http.get("/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY})).json()["keys"]
    assert "x" not in [k["name"] for k in keys] and len(keys) == 3  # the issued key and the two users' tokens


async def test_admin_key_and_admin_users_session_pass(world) -> None:
    gw, admin_session, _ = world
    for headers in ({"X-Admin-Key": ADMIN_KEY}, bearer(admin_session)):
        for method, path, body in ADMIN_ROUTES:
            if method == "DELETE":
                continue  # an unknown id is 404 for the admin, checked elsewhere
            r = await _send(gw, method, path, body, headers)
            assert r.status_code in (200, 201), (method, path, headers.keys(), r.text)


async def test_every_admin_rpc_refuses_user_credentials(world) -> None:
    gw, admin_session, creds = world
    client = TollgateClient.connect(gw.rt.grpc_target)
    try:
        methods = apb.DESCRIPTOR.services_by_name["AdminService"].methods
        guarded = [m for m in methods if m.name not in OPEN_ADMIN_RPCS]
        assert {m.name for m in guarded} >= {"CreateApiKey", "ListApiKeys", "RevokeApiKey", "ListTiers", "GetStats",
                                            "ListUsage", "ReloadAuthKeys", "SetRegistration"}
        for m in guarded:
            request = getattr(apb, m.input_type.name)()
            stub = getattr(client.admin, m.name)
            for label, cred in creds.items():
                for md in ((("authorization", f"Bearer {cred}"),), (("x-api-key", cred),)):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await stub(request, metadata=md)
                    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, (m.name, label, e.value.code())
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub(request, metadata=(("x-admin-key", cred),))
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub(request)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, m.name
        # The admin user's session is an admin here too.
        resp = await client.admin.ListTiers(apb.ListTiersRequest(), metadata=(("authorization", f"Bearer {admin_session}"),))
        assert resp.tiers
    finally:
        await client.close()


async def test_admin_key_is_never_read_from_a_query_string(world) -> None:
    gw, admin_session, _ = world
    names = ("admin_key", "adminKey", "X-Admin-Key", "x-admin-key", "key", "api_key", "apiKey", "token", "access_token",
             "auth", "authorization")
    for method, path, body in ADMIN_ROUTES:
        for name in names:
            for secret in (ADMIN_KEY, admin_session):
                r = await _send(gw, method, path, body, params={name: secret})
                assert r.status_code == 401, (method, path, name, r.text)
                assert secret not in r.text
    # Nor on user routes: a session in the query string is no session.
    for name in names:
        r = await gw.http.get("/api/keys", params={name: admin_session})
        assert r.status_code == 401


async def test_cors_is_off_by_default(world) -> None:
    gw, admin_session, _ = world
    assert gw.rt.app.config.cors_origins == ()
    origin = {"Origin": "https://evil.example"}
    for method, path, _ in ADMIN_ROUTES + [("GET", "/api/keys", None), ("POST", "/api/auth/login", None),
                                           ("POST", "/v1/chat/completions", None)]:
        r = await gw.http.options(path, headers={**origin, "Access-Control-Request-Method": method,
                                                 "Access-Control-Request-Headers": "authorization,x-admin-key"})
        assert not any(h.lower().startswith("access-control-") for h in r.headers), (path, dict(r.headers))
    r = await gw.http.get("/api/admin/keys", headers={**origin, "X-Admin-Key": ADMIN_KEY})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = await gw.http.get("/api/keys", headers={**origin, **bearer(admin_session)})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
