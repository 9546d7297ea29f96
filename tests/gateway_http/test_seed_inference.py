"""Seed 004 (OpenRouter proxy): /api/v1/inference, its SSE stream, the /api/v1/models catalogue,
and seed 004's error shape {"error": {"code", "message", "type", "details"?}}."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from services.config.defaults import DEMO_PROVIDER
from tests.support.gateway import config, provider, run_gateway

HI = [{"role": "user", "content": "Hello, world!"}]
CATALOGUE = ("gpt-4o-mini", "gpt-4o", "openai/gpt-4o")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


@pytest.fixture
async def catalogue(tmp_path, fake_openai):
    """primary serves three catalogued models (one with a slash in its id); demo serves two."""
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url, models=CATALOGUE), DEMO_PROVIDER))
    async with run_gateway(cfg) as g:
        g.key = await g.new_key()
        yield g


async def test_inference_is_a_chat_completion(gateway, fake_openai):
    key = await gateway.new_key()
    r = await gateway.http.post("/api/v1/inference", headers=bearer(key), json={
        "model": "tokens-3", "messages": HI, "temperature": 0.7, "max_tokens": 100, "stream": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tokens-3" and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {**choice["message"], "role": "assistant", "content": "tok0 tok1 tok2 "}
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert fake_openai.requests[-1].body["max_tokens"] == 100
    assert r.headers["X-LLM-Provider"] == "primary" and "X-RateLimit-Remaining" in r.headers
    assert [(x.surface, x.status) for x in await gateway.ledger()] == [("api_v1", "ok")]


async def test_stream_is_exactly_the_seeds_sse(gateway):
    key = await gateway.new_key()
    r = await gateway.http.post("/api/v1/inference/stream", headers=bearer(key), json={
        "model": "tokens-3", "messages": [{"role": "user", "content": "Tell me a story"}], "temperature": 0.7,
        "max_tokens": 500, "stream": True})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["X-LLM-Model"] == "tokens-3"
    events = sse_events(r.text)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [orjson.loads(e) for e in events[:-1]]
    for c in chunks:
        assert list(c) == ["id", "object", "created", "model", "choices"]
        assert (c["object"], c["model"], c["id"]) == ("chat.completion.chunk", "tokens-3", chunks[0]["id"])
        assert list(c["choices"][0]) == ["index", "delta", "finish_reason"]
    assert chunks[0]["choices"][0] == {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    middle = [c["choices"][0] for c in chunks[1:-1]]
    assert [m["delta"] for m in middle] == [{"content": "tok0 "}, {"content": "tok1 "}, {"content": "tok2 "}]
    assert all(m["finish_reason"] is None for m in middle)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}


async def test_stream_usage_when_asked_and_stream_flag_on_inference(gateway):
    key = await gateway.new_key()
    body = {"model": "tokens-2", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    for path in ("/api/v1/inference/stream", "/api/v1/inference"):
        r = await gateway.http.post(path, headers=bearer(key), json=body)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(r.text)
        usage = orjson.loads(events[-2])
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2
        assert events[-1] == "[DONE]"


async def test_stream_cut_mid_answer_is_in_band_error_without_done(gateway):
    key = await gateway.new_key()
    r = await gateway.http.post("/api/v1/inference/stream", headers=bearer(key),
                                json={"model": "fault-cut-after-2", "messages": HI})
    assert r.status_code == 200
    events = sse_events(r.text)
    assert "[DONE]" not in events
    err = orjson.loads(events[-1])["error"]
    assert (err["code"], err["type"]) == (502, "upstream")
    assert not any(orjson.loads(e).get("choices", [{}])[0].get("finish_reason") == "stop" for e in events[:-1])


@pytest.mark.parametrize("path", ["/api/v1/inference", "/api/v1/inference/stream"])
async def test_inference_errors_in_seed004_shape(gateway, path):
    key = await gateway.new_key()
    r = await gateway.http.post(path, headers=bearer(key), json={"model": "tokens-2"})
    assert r.status_code == 400
    assert r.json() == {"error": {"code": 400, "message": "Missing required parameter: 'messages'.", "type": "validation",
                                  "details": {"field": "messages", "message": "Missing required parameter: 'messages'."}}}
    r = await gateway.http.post(path, json={"model": "tokens-2", "messages": HI})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication" and r.json()["error"]["code"] == 401
    r = await gateway.http.post(path, headers=bearer(key), json={"model": "fault-503", "messages": HI})
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "upstream" and "Retry-After" in r.headers
    r = await gateway.http.post(path, headers=bearer(key), json={"model": "fault-404", "messages": HI})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = await gateway.http.post(path, headers=bearer(key), json={"model": "tokens-2", "messages": HI, "stream": "yes"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "stream"


async def test_stream_client_hangup_cancels_upstream_and_meters_once(gateway, fake_openai):
    key = await gateway.new_key()
    got = ""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        async with http.stream("POST", "/api/v1/inference/stream", headers=bearer(key),
                               json={"model": "fault-stall-after-3", "messages": HI}) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                got += line
                if "tok2" in got:
                    break
        t0 = time.monotonic()
    await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
    assert time.monotonic() - t0 < 1.0
    rows = await gateway.ledger()
    for _ in range(40):
        if rows:
            break
        await asyncio.sleep(0.05)
        rows = await gateway.ledger()
    assert [(x.status, x.surface) for x in rows] == [("client_cancelled", "api_v1")]


# -- the catalogue

async def test_models_list_pagination_and_model_shape(catalogue):
    r = await catalogue.http.get("/api/v1/models", headers=bearer(catalogue.key))
    assert r.status_code == 200
    body = r.json()
    assert [m["id"] for m in body["data"]] == ["demo", "gpt-4o", "gpt-4o-mini", "openai/gpt-4o", "tollgate-demo"]
    assert body["pagination"] == {"total": 5, "limit": 50, "offset": 0, "hasMore": False}
    m = next(x for x in body["data"] if x["id"] == "openai/gpt-4o")
    assert {"id", "name", "description", "context_length", "pricing", "supported_parameters", "is_moderated",
            "max_completion_tokens"} <= set(m)
    assert (m["name"], m["context_length"], m["max_completion_tokens"]) == ("GPT-4o (OpenRouter)", 128000, 16384)
    assert m["pricing"] == {"prompt": "0.0000025", "completion": "0.00001"}  # USD per token, as OpenRouter shows it
    assert "temperature" in m["supported_parameters"] and m["is_moderated"] is True
    r = await catalogue.http.get("/api/v1/models?limit=2&offset=1", headers=bearer(catalogue.key))
    body = r.json()
    assert [m["id"] for m in body["data"]] == ["gpt-4o", "gpt-4o-mini"]
    assert body["pagination"] == {"total": 5, "limit": 2, "offset": 1, "hasMore": True}
    r = await catalogue.http.get("/api/v1/models?limit=2&offset=4", headers=bearer(catalogue.key))
    assert r.json()["pagination"]["hasMore"] is False and len(r.json()["data"]) == 1
    assert "X-RateLimit-Limit" in r.headers


async def test_models_filters(catalogue):
    get = lambda q: catalogue.http.get("/api/v1/models" + q, headers=bearer(catalogue.key))  # noqa: E731
    # Seed 004's provider is the vendor (issue 19 point 3): the demo models are tollgate's.
    assert [m["id"] for m in (await get("?provider=tollgate")).json()["data"]] == ["demo", "tollgate-demo"]
    assert [m["id"] for m in (await get("?provider=openai")).json()["data"]] == ["gpt-4o", "gpt-4o-mini", "openai/gpt-4o"]
    assert (await get("?provider=primary")).json()["data"] == []  # our provider instance is not a vendor
    assert [m["id"] for m in (await get("?provider=openai&search=mini")).json()["data"]] == ["gpt-4o-mini"]
    body = (await get("?search=GPT-4O")).json()
    assert body["pagination"]["total"] == 3
    assert (await get("?search=nothing-like-this")).json() == {
        "data": [], "pagination": {"total": 0, "limit": 50, "offset": 0, "hasMore": False}}


@pytest.mark.parametrize("query,field", [("?limit=101", "limit"), ("?limit=0", "limit"), ("?limit=ten", "limit"),
                                         ("?offset=-1", "offset"), ("?offset=x", "offset")])
async def test_models_bad_paging_is_400_validation(catalogue, query, field):
    r = await catalogue.http.get("/api/v1/models" + query, headers=bearer(catalogue.key))
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["code"], err["type"], err["details"]["field"]) == (400, "validation", field)


async def test_models_top_search_providers(catalogue):
    h = bearer(catalogue.key)
    top = (await catalogue.http.get("/api/v1/models/top?limit=3", headers=h)).json()["data"]
    assert [m["context_length"] for m in top] == sorted((m["context_length"] for m in top), reverse=True)
    assert [m["id"] for m in top] == ["gpt-4o", "gpt-4o-mini", "openai/gpt-4o"]
    assert len((await catalogue.http.get("/api/v1/models/top", headers=h)).json()["data"]) == 5
    r = await catalogue.http.get("/api/v1/models/top?limit=500", headers=h)
    assert r.status_code == 400 and r.json()["error"]["type"] == "validation"

    r = await catalogue.http.get("/api/v1/models/search?q=cheap&limit=5", headers=h)
    assert r.status_code == 200
    assert r.json() == {"data": r.json()["data"], "query": "cheap", "total": 1}
    assert r.json()["data"][0]["id"] == "gpt-4o-mini"
    assert (await catalogue.http.get("/api/v1/models/search?q=gpt&limit=1", headers=h)).json()["total"] == 3
    r = await catalogue.http.get("/api/v1/models/search", headers=h)
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "q"

    r = await catalogue.http.get("/api/v1/models/providers", headers=h)
    assert r.json() == {"data": ["openai", "tollgate"]}  # vendors: seed 004 order, then by name
    r = await catalogue.http.get("/api/v1/models/providers/openai", headers=h)
    body = r.json()
    assert body["provider"] == "openai" and [m["id"] for m in body["data"]] == ["gpt-4o", "gpt-4o-mini", "openai/gpt-4o"]
    r = await catalogue.http.get("/api/v1/models/providers/tollgate", headers=h)
    assert [m["id"] for m in r.json()["data"]] == ["demo", "tollgate-demo"]
    # Our own provider instances stay visible where our own API lists them.
    r = await catalogue.http.get("/backend/info", headers=h)
    assert [b["name"] for b in r.json()["backends"]] == ["primary", "demo"]


async def test_model_by_id_parameters_and_pricing(catalogue):
    h = bearer(catalogue.key)
    r = await catalogue.http.get("/api/v1/models/openai/gpt-4o", headers=h)
    assert r.status_code == 200
    assert r.json()["data"]["id"] == "openai/gpt-4o" and r.json()["data"]["pricing"]["prompt"] == "0.0000025"
    r = await catalogue.http.get("/api/v1/models/openai/gpt-4o/parameters", headers=h)
    assert r.json()["data"]["model"] == "openai/gpt-4o"
    assert "max_tokens" in r.json()["data"]["supported_parameters"]
    r = await catalogue.http.get("/api/v1/models/openai/gpt-4o/pricing", headers=h)
    assert r.json() == {"data": {"model": "openai/gpt-4o", "pricing": {"prompt": "0.0000025", "completion": "0.00001"}}}
    r = await catalogue.http.get("/api/v1/models/demo/pricing", headers=h)
    assert r.json()["data"]["pricing"] == {"prompt": "0.0000001", "completion": "0.0000002"}
    for path in ("/api/v1/models/no/such-model", "/api/v1/models/no-such/pricing", "/api/v1/models/x/parameters"):
        r = await catalogue.http.get(path, headers=h)
        assert r.status_code == 404
        assert (r.json()["error"]["code"], r.json()["error"]["type"]) == (404, "not_found")


async def test_catalogue_needs_a_key(catalogue):
    for path in ("/api/v1/models", "/api/v1/models/top", "/api/v1/models/openai/gpt-4o", "/api/v1/models/providers"):
        r = await catalogue.http.get(path)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication"
