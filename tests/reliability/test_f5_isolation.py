"""RELIABILITY F5: user A vs user B, every object × verb × surface, by id / prefix / filter / body.

Every attempt of A on B's objects answers 404 / NOT_FOUND (exactly like an id that never
existed), leaks nothing of B's, and leaves B's objects intact; A never spends B's quota.
"""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from tests.support.gateway import ADMIN_KEY, config, run_gateway
from tollgate.client import TollgateClient, error_info
from tollgate.v1 import chat_pb2
from tollgate.v1 import key_service_pb2 as kpb

PASSWORD = "correct horse battery"
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclasses.dataclass
class Tenant:
    id: str
    session: str
    token: str
    token_id: str
    token_prefix: str
    key_id: str
    key_secret: str


async def tenant(gw, email: str) -> Tenant:
    r = await gw.http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    user, session = r.json()["user"], r.json()["token"]
    r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": f"{email}-app"})
    tok = r.json()
    secret = f"sk-{email.split('@')[0]}-provider-0123456789"
    r = await gw.http.post("/api/keys", headers=bearer(session), json={
        "provider": "openai", "key": secret, "baseUrl": "https://93.184.215.14/v1", "models": ["demo-byok"]})
    assert r.status_code == 201, r.text
    return Tenant(user["id"], session, tok["token"], tok["id"], tok["prefix"], r.json()["id"], secret)


@pytest.fixture
async def world(tmp_path):
    async with run_gateway(config(tmp_path, demo="on")) as gw:
        a = await tenant(gw, "alice@example.com")
        r = await gw.http.put("/api/admin/registration", headers={"X-Admin-Key": ADMIN_KEY}, json={"open": True})
        assert r.status_code == 200
        b = await tenant(gw, "bob@example.com")
        for t in (a, b):
            r = await gw.http.post("/v1/chat/completions", headers=bearer(t.token), json=CHAT)
            assert r.status_code == 200, r.text
        yield gw, a, b


def _not_found(r) -> None:
    assert r.status_code == 404, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.json()["error"]["code"] == "NOT_FOUND"


def _leaks(text: str, victim: Tenant) -> bool:
    return any(s in text for s in (victim.id, victim.token_id, victim.key_id, victim.key_secret, victim.token,
                                   victim.token_prefix, victim.session, "bob@"))


async def test_rest_every_object_and_verb(world) -> None:
    gw, a, b = world
    for cred in (a.session, a.token):
        h = bearer(cred)
        # Tokens: revoke by id, by prefix, by the full secret, by the user's id.
        for ident in (b.token_id, b.token_prefix, b.token, b.id, b.key_id):
            _not_found(await gw.http.delete(f"/api/tokens/{ident}", headers=h))
        # Provider keys: delete by id, by B's token id and user id.
        for ident in (b.key_id, b.token_id, b.id):
            _not_found(await gw.http.delete(f"/api/keys/{ident}", headers=h))
        # Lists hold only A's objects.
        for path in ("/api/tokens", "/api/keys", "/api/usage"):
            r = await gw.http.get(path, headers=h)
            assert r.status_code == 200 and not _leaks(r.text, b), (path, r.text)
        # Filters and paging cannot widen the usage view.
        for params in ({"user": b.id}, {"key_id": b.token_id}, {"user_id": b.id}, {"offset": 0, "limit": 1000}):
            r = await gw.http.get("/api/usage", headers=h, params=params)
            rows = r.json()["data"]
            assert rows and all(row["user"] == a.id for row in rows) and not _leaks(r.text, b)
    # X-API-Key works the same way as Bearer.
    _not_found(await gw.http.delete(f"/api/tokens/{b.token_id}", headers={"X-API-Key": a.session}))


async def test_rest_body_fields_cannot_claim_another_owner(world) -> None:
    gw, a, b = world
    r = await gw.http.post("/api/keys", headers=bearer(a.session), json={
        "provider": "openai", "key": "sk-alice-second-0123456789", "userId": b.id, "user_id": b.id, "owner": b.id})
    assert r.status_code == 201
    r = await gw.http.post("/api/tokens", headers=bearer(a.session), json={"name": "x", "userId": b.id, "user": b.id})
    assert r.status_code == 201
    r = await gw.http.get("/api/keys", headers=bearer(b.session))
    assert [k["id"] for k in r.json()["keys"]] == [b.key_id]
    r = await gw.http.get("/api/tokens", headers=bearer(b.session))
    assert [t["id"] for t in r.json()["tokens"]] == [b.token_id]


async def test_b_is_intact_and_a_never_spends_bs_keys_or_quota(world) -> None:
    gw, a, b = world
    # After every attempt above and here, B's token and key still work and are still listed.
    for ident in (b.token_id, b.key_id):
        await gw.http.delete(f"/api/tokens/{ident}", headers=bearer(a.session))
        await gw.http.delete(f"/api/keys/{ident}", headers=bearer(a.session))
    assert (await gw.http.post("/v1/chat/completions", headers=bearer(b.token), json=CHAT)).status_code == 200
    assert [k["id"] for k in (await gw.http.get("/api/keys", headers=bearer(b.session))).json()["keys"]] == [b.key_id]

    # A's requests never route through B's provider key, even for the model only B's key allows.
    r = await gw.http.post("/v1/chat/completions", headers=bearer(a.token), json={**CHAT, "model": "demo-byok"})
    assert b.key_id not in r.headers.get("X-Tollgate-Route", "") and b.key_secret not in r.text
    rows = await gw.ledger()
    assert all(row.provider_key_id != b.key_id for row in rows if row.user_id == a.id)

    # A's quota is A's: A's token exhausting its tier leaves B's untouched (basic: 60 rpm).
    statuses = [(await gw.http.post("/v1/chat/completions", headers=bearer(a.token), json=CHAT)).status_code
                for _ in range(62)]
    assert 429 in statuses
    assert (await gw.http.post("/v1/chat/completions", headers=bearer(b.token), json=CHAT)).status_code == 200


async def test_grpc_surface(world) -> None:
    gw, a, b = world
    client = TollgateClient.connect(gw.rt.grpc_target)
    try:
        for cred in (a.session, a.token):
            md = (("authorization", f"Bearer {cred}"),)
            for call, msg in ((client.keys.RevokeToken, kpb.RevokeTokenRequest(id=b.token_id)),
                              (client.keys.RevokeToken, kpb.RevokeTokenRequest(id=b.token_prefix)),
                              (client.keys.DeleteProviderKey, kpb.DeleteProviderKeyRequest(id=b.key_id))):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call(msg, metadata=md)
                info = error_info(e.value)
                assert info.code == grpc.StatusCode.NOT_FOUND and not _leaks(str(info), b)
            tokens = await client.keys.ListTokens(kpb.ListTokensRequest(), metadata=md)
            keys = await client.keys.ListProviderKeys(kpb.ListProviderKeysRequest(), metadata=md)
            usage = await client.keys.GetUsage(kpb.GetUsageRequest(page_size=1000), metadata=md)
            assert b.token_id not in {t.id for t in tokens.tokens} and b.key_id not in {k.id for k in keys.keys}
            assert usage.rows and all(r.user == a.id for r in usage.rows)
        # B's token through gRPC inference still works: nothing of B's was touched.
        b_client = TollgateClient(client.channel, api_key=b.token)
        resp = await b_client.chat(chat_pb2.ChatInput(model="demo", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")]))
        assert resp.text
    finally:
        await client.close()
