"""The bridge alone, over a real gRPC channel to a running gateway: every answer matches what
the default in-process bridge gives for the same request (status, body, route headers)."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
from aiohttp import web

from gateway_http.app import make_app
from gateway_http.settings import BridgeSettings
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body, read_events, stream_text
from tollgate.client import TollgateClient


@asynccontextmanager
async def remote_bridge(grpc_target: str):
    client = TollgateClient.connect(grpc_target)
    app = make_app(BridgeSettings(http_addr="127.0.0.1:0", grpc_target=grpc_target), client)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http
    finally:
        await runner.cleanup()
        await client.close()


@pytest.fixture
async def pair(tmp_path, fake_openai):
    """(gateway, in-process bridge client, remote bridge client, auth headers)."""
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url, models=("gpt-4o-mini", "tokens-5", "tokens-3")),))
    async with run_gateway(cfg) as gw, remote_bridge(gw.rt.grpc_target) as remote:
        yield gw, gw.http, remote, bearer(await gw.new_key())


def normalized(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("id", "created")}


async def test_chat_same_through_both(pair):
    gw, local, remote, auth = pair
    a = await local.post(CHAT, json=chat_body("tokens-5"), headers=auth)
    b = await remote.post(CHAT, json=chat_body("tokens-5"), headers=auth)
    assert (a.status_code, b.status_code) == (200, 200)
    assert normalized(b.json()) == normalized(a.json())
    assert b.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "
    for h in ("X-LLM-Provider", "X-LLM-Model", "X-LLM-Key-ID", "X-Tollgate-Route"):
        assert b.headers[h] == a.headers[h], h
    assert b.headers["X-Request-Id"].startswith("req_") and b.headers["X-Request-Id"] != a.headers["X-Request-Id"]
    assert b.json()["id"] == "chatcmpl-" + b.headers["X-Request-Id"].removeprefix("req_")
    rows = await gw.ledger()
    assert sorted(r.surface for r in rows) == ["openai", "openai"]
    assert {r.request_id for r in rows} == {a.headers["X-Request-Id"], b.headers["X-Request-Id"]}


async def test_stream_same_through_both(pair):
    _, local, remote, auth = pair
    out = []
    for http in (local, remote):
        body = chat_body("tokens-3", stream=True, stream_options={"include_usage": True})
        async with http.stream("POST", CHAT, json=body, headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["X-LLM-Provider"] == "primary"
            out.append(await read_events(r))
    a, b = out
    assert stream_text(b) == stream_text(a) == "tok0 tok1 tok2 "
    assert b[-1] == a[-1] == "[DONE]"
    strip = [[normalized(orjson.loads(e)) for e in evs[:-1]] for evs in out]
    assert strip[0] == strip[1]
    assert strip[1][-1]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("headers", [{}, bearer("tg_not-a-real-key")])
async def test_401_same_through_both(pair, headers):
    _, local, remote, _ = pair
    a = await local.post(CHAT, json=chat_body("tokens-3"), headers=headers)
    b = await remote.post(CHAT, json=chat_body("tokens-3"), headers=headers)
    assert (a.status_code, b.status_code) == (401, 401)
    assert b.json() == a.json()
    assert b.headers["X-Request-Id"].startswith("req_")
    a = await local.get("/v1/models", headers=headers)
    b = await remote.get("/v1/models", headers=headers)
    assert (a.status_code, b.status_code) == (401, 401) and b.json() == a.json()


async def test_404_same_through_both(pair):
    _, local, remote, auth = pair
    for stream in (False, True):
        a = await local.post(CHAT, json=chat_body("no-such-model", stream=stream), headers=auth)
        b = await remote.post(CHAT, json=chat_body("no-such-model", stream=stream), headers=auth)
        assert (a.status_code, b.status_code) == (404, 404)
        assert b.json() == a.json()
        assert b.json()["error"]["code"] == "model_not_found"
    a = await local.get("/v1/models/no-such-model", headers=auth)
    b = await remote.get("/v1/models/no-such-model", headers=auth)
    assert (a.status_code, b.status_code) == (404, 404) and b.json() == a.json()


async def test_models_and_bad_input_same_through_both(pair):
    _, local, remote, auth = pair
    a = await local.get("/v1/models", headers=auth)
    b = await remote.get("/v1/models", headers=auth)
    assert (a.status_code, b.status_code) == (200, 200) and b.json() == a.json()
    for body in ({"model": "tokens-3"}, {"model": "tokens-3", "messages": "x"}, {"model": "tokens-3", "messages": []}):
        a = await local.post(CHAT, json=body, headers=auth)
        b = await remote.post(CHAT, json=body, headers=auth)
        assert b.status_code == a.status_code and b.json() == a.json()


async def test_upstream_errors_same_through_both(tmp_path, fake_openai):
    # A provider 401 benches that key, so each side gets a fresh gateway for the same request.
    for i, (model, stream, status) in enumerate((("fault-400", False, 400), ("fault-401", False, 502),
                                                  ("fault-401", True, 502))):
        seen = []
        for via in ("local", "remote"):
            cfg = config(tmp_path / f"{i}-{via}", providers=(provider("primary", fake_openai.base_url),))
            async with run_gateway(cfg) as gw, remote_bridge(gw.rt.grpc_target) as remote:
                http = gw.http if via == "local" else remote
                r = await http.post(CHAT, json=chat_body(model, stream=stream), headers=bearer(await gw.new_key()))
                seen.append((r.status_code, r.json()))
        assert seen[0] == seen[1], (model, stream, seen)
        assert seen[0][0] == status


async def test_cut_stream_in_band_error_through_remote(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as gw, remote_bridge(gw.rt.grpc_target) as remote:
        auth = bearer(await gw.new_key())
        async with remote.stream("POST", CHAT, json=chat_body("fault-cut-after-2", stream=True), headers=auth) as r:
            assert r.status_code == 200
            events = await read_events(r)
        assert "[DONE]" not in events
        text = stream_text(events)
        assert text.startswith("tok0 ") and "tok0 tok1 ".startswith(text), text
        assert "error" in orjson.loads(events[-1])
        rows = await gw.ledger()
        assert [x.status for x in rows] == ["upstream_error"]


async def test_client_hang_up_through_remote_bridge_cancels_upstream(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as gw, remote_bridge(gw.rt.grpc_target) as remote:
        auth = bearer(await gw.new_key())
        async with remote.stream("POST", CHAT, json=chat_body("fault-stall-after-3", stream=True), headers=auth) as r:
            got = ""
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    got += stream_text([line[6:]])
                if got.count("tok") == 3:
                    break
        t0 = time.monotonic()
        await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
        assert time.monotonic() - t0 < 1.0
        end = time.monotonic() + 2
        rows = await gw.ledger()
        while not rows and time.monotonic() < end:
            await asyncio.sleep(0.05)
            rows = await gw.ledger()
        assert [(x.status, x.estimated) for x in rows] == [("client_cancelled", True)]
