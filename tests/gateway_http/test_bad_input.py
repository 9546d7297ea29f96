"""Bad input through the bridge (RELIABILITY E1, E2, F6, F7): each gets its status and an OpenAI
error body, nothing reaches the upstream, and the gateway keeps serving afterwards."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body

ADMIN = {"X-Admin-Key": ADMIN_KEY}


@pytest.fixture
async def gw(tmp_path, fake_openai):
    cfg = config(tmp_path, max_body_bytes=1024,
                 providers=(provider("primary", fake_openai.base_url, models=("gpt-4o-mini", "tokens-3")),))
    async with run_gateway(cfg) as g:
        yield g


@pytest.fixture
async def auth(gw):
    return bearer(await gw.new_key())


def openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


async def test_malformed_json_is_400(gw, auth, fake_openai):
    r = await gw.http.post(CHAT, content=b'{"model": "gpt-4o-mini", "messages": [', headers={**auth, "Content-Type": "application/json"})
    err = openai_error(r, 400)
    assert err["type"] == "invalid_request_error"
    for body in (b"", b"[1, 2]", b"\xff\xfe not utf-8"):
        openai_error(await gw.http.post(CHAT, content=body, headers=auth), 400)
    assert fake_openai.requests == []


@pytest.mark.parametrize("field,value,param", [
    ("messages", "hello", "messages"),
    ("temperature", "hot", "temperature"),
    ("max_tokens", "ten", "max_tokens"),
    ("stream", "yes", "stream"),
    ("model", 42, "model"),
])
async def test_wrong_types_are_422(gw, auth, fake_openai, field, value, param):
    body = {**chat_body("gpt-4o-mini"), field: value}
    err = openai_error(await gw.http.post(CHAT, json=body, headers=auth), 422)
    assert err["param"] == param
    assert fake_openai.requests == []


async def test_missing_messages_is_400_naming_the_param(gw, auth):
    err = openai_error(await gw.http.post(CHAT, json={"model": "gpt-4o-mini"}, headers=auth), 400)
    assert err["param"] == "messages"
    err = openai_error(await gw.http.post(CHAT, json={"model": "gpt-4o-mini", "messages": []}, headers=auth), 400)
    assert err["param"] == "messages"


async def test_unknown_model_with_allow_listed_provider_is_404(gw, auth, fake_openai):
    for stream in (False, True):
        err = openai_error(await gw.http.post(CHAT, json=chat_body("no-such-model", stream=stream), headers=auth), 404)
        assert err["code"] == "model_not_found"
    assert fake_openai.requests == []


async def test_body_over_the_limit_is_413_fast(gw, auth, fake_openai):
    big = chat_body("gpt-4o-mini", text="x" * 4096)
    t0 = time.monotonic()
    r = await gw.http.post(CHAT, json=big, headers=auth)
    assert time.monotonic() - t0 < 0.5
    err = openai_error(r, 413)
    assert err["code"] == "request_too_large"

    async def chunked():  # no Content-Length: the limit applies while reading
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}]}'

    openai_error(await gw.http.post(CHAT, content=chunked(), headers={**auth, "Content-Type": "application/json"}), 413)
    assert fake_openai.requests == []


async def test_huge_declared_body_is_refused_before_it_is_sent(gw, auth):
    """E1: a 16 MiB Content-Length is answered from the headers; the body is never read."""
    host, port = gw.url.removeprefix("http://").split(":")
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth['Authorization']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {16 * 1024 * 1024}\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        t0 = time.monotonic()
        writer.write(head + b'{"model": "gpt-4o-mini"')
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 1.0)
        took = time.monotonic() - t0
    finally:
        writer.close()
    assert status_line.split()[1] == b"413", status_line
    assert took < 0.1, took


async def test_missing_bad_and_revoked_keys_are_401(gw):
    openai_error(await gw.http.post(CHAT, json=chat_body("gpt-4o-mini")), 401)
    err = openai_error(await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=bearer("tg_not-a-real-key")), 401)
    assert err["type"] == "authentication_error"
    openai_error(await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers={"X-API-Key": "garbage"}), 401)

    created = await gw.http.post("/api/admin/keys", headers=ADMIN, json={"name": "doomed", "email": "d@example.com", "tier": "pro"})
    assert created.status_code == 201
    key, key_id = created.json()["key"], created.json()["id"]
    assert key not in str((await gw.http.get("/api/admin/keys", headers=ADMIN)).json())  # shown once
    r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=bearer(key))
    assert r.status_code == 200, r.text

    r = await gw.http.delete(f"/api/admin/keys/{key_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    while True:
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=bearer(key))
        if r.status_code == 401 or time.monotonic() - t0 > 1.5:
            break
        await asyncio.sleep(0.05)
    openai_error(r, 401)
    assert time.monotonic() - t0 <= 1.2
    openai_error(await gw.http.get("/v1/models", headers=bearer(key)), 401)


async def test_api_key_on_admin_route_is_403(gw, auth):
    r = await gw.http.get("/api/admin/keys", headers=auth)
    assert r.status_code == 403, r.text
    r = await gw.http.post("/api/admin/keys", headers=auth, json={"name": "x", "email": "x@example.com", "tier": "pro"})
    assert r.status_code == 403
    r = await gw.http.get("/api/admin/keys")
    assert r.status_code == 401
    # The admin key never comes from a query string (F7).
    r = await gw.http.get("/api/admin/keys", params={"admin_key": ADMIN_KEY})
    assert r.status_code == 401


async def test_2049_messages_is_400_and_2048_is_fine(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as g:
        auth = bearer(await g.new_key())
        msgs = [{"role": "user", "content": "x"}] * 2049
        err = openai_error(await g.http.post(CHAT, json={"model": "tokens-2", "messages": msgs}, headers=auth), 400)
        assert "2048" in err["message"]
        assert fake_openai.requests == []
        r = await g.http.post(CHAT, json={"model": "tokens-2", "messages": msgs[:2048]}, headers=auth)
        assert r.status_code == 200, r.text


async def test_gateway_still_serves_after_bad_input(gw, auth, fake_openai):
    bad = [
        dict(content=b"{", headers=auth),
        dict(json={"model": "gpt-4o-mini", "messages": "x"}, headers=auth),
        dict(json=chat_body("gpt-4o-mini", text="y" * 5000), headers=auth),
        dict(json=chat_body("gpt-4o-mini"), headers=bearer("nope")),
        dict(json={"model": "gpt-4o-mini", "messages": [[[[]]]]}, headers=auth),
        dict(json={"model": "gpt-4o-mini\r\nX-Evil: 1", "messages": [{"role": "user", "content": "x"}]}, headers=auth),
    ]
    for kw in bad:
        r = await gw.http.post(CHAT, **kw)
        assert 400 <= r.status_code < 500, (kw, r.status_code, r.text)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"  # CRLF in a model name (E9)
    r = await gw.http.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    r = await gw.http.post(CHAT, json=chat_body("tokens-3"), headers=auth)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    rows = await gw.ledger()
    assert [x.status for x in rows] == ["ok"]  # bridge-rejected input never reached the core


async def test_errors_from_the_core_carry_a_request_id(gw, auth):
    for kw in (dict(json=chat_body("gpt-4o-mini")), dict(json=chat_body("no-such-model"), headers=auth),
               dict(json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}] * 3}, headers=bearer("x"))):
        r = await gw.http.post(CHAT, **kw)
        assert r.status_code in (401, 404)
        assert r.headers["X-Request-Id"].startswith("req_")


async def test_errors_from_the_bridge_carry_a_request_id(gw, auth):
    for kw in (dict(content=b"{", headers=auth), dict(json={"model": "gpt-4o-mini", "messages": "x"}, headers=auth),
               dict(json=chat_body("gpt-4o-mini", text="y" * 5000), headers=auth)):
        r = await gw.http.post(CHAT, **kw)
        assert r.status_code in (400, 413, 422)
        assert r.headers.get("X-Request-Id", "").startswith("req_"), r.status_code
    r = await gw.http.get("/v1/no-such-route", headers=auth)
    assert r.status_code == 404 and r.headers.get("X-Request-Id", "").startswith("req_")
