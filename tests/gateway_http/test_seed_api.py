"""Seeds 000 and 001 under /api: /api/chat (both body shapes), /api/quick, /api/models,
/api/models/load, and the one error shape every /api route answers with."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from services.config.defaults import DEMO_PROVIDER
from tests.gateway_http.test_ws import remote_bridge
from tests.support.gateway import config, provider, run_gateway

MISSING_KEY = {"error": "API key required", "message": "Provide API key via Authorization: Bearer <key> or X-API-Key header",
               "code": "UNAUTHORIZED"}
HI = [{"role": "user", "content": "Hello, how are you?"}]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


@pytest.fixture
async def gw(tmp_path, fake_openai):
    """The fake upstream as `primary` (default model tokens-4) plus the built-in demo models."""
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url, default_model="tokens-4"), DEMO_PROVIDER))
    async with run_gateway(cfg) as g:
        yield g


async def test_chat_seed000_body_gets_seed001_answer_and_headers(gw, fake_openai):
    key = await gw.new_key()
    r = await gw.http.post("/api/chat", headers=bearer(key), json={"messages": HI, "maxTokens": 500, "temperature": 0.7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"id", "provider", "model", "choices", "usage"}
    assert body["id"].startswith("chatcmpl-")
    assert (body["provider"], body["model"]) == ("primary", "tokens-4")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "tok0 tok1 tok2 tok3 "},
                                "finishReason": "stop"}]
    assert body["usage"] == {"promptTokens": fake_openai.prompt_tokens, "completionTokens": 4,
                             "totalTokens": fake_openai.prompt_tokens + 4}
    # camelCase in, the upstream's own names out.
    sent = fake_openai.requests[-1].body
    assert (sent["max_tokens"], sent["temperature"]) == (500, 0.7)
    h = r.headers
    assert (h["X-LLM-Provider"], h["X-LLM-Model"], h["X-LLM-Key-ID"]) == ("primary", "tokens-4", "primary-k1")
    assert float(h["X-LLM-Latency-Ms"]) >= 0
    assert h["X-RateLimit-Limit"] == "1000"
    assert int(h["X-RateLimit-Remaining"]) == 999 and h["X-RateLimit-Used"] == "1"
    assert int(h["X-RateLimit-Reset"]) > 0
    assert h["X-Request-Id"].startswith("req_")
    rows = await gw.ledger()
    assert [(x.surface, x.status) for x in rows] == [("api_chat", "ok")]


async def test_chat_seed001_body_with_model_and_provider(gw, fake_openai):
    key = await gw.new_key()
    for prov in ("auto", "primary"):
        r = await gw.http.post("/api/chat", headers=bearer(key), json={
            "messages": [{"role": "system", "content": "Be brief."}, *HI], "model": "tokens-3", "provider": prov,
            "temperature": 0.2, "maxTokens": 1000})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
        assert r.headers["X-LLM-Model"] == "tokens-3"
    r = await gw.http.post("/api/chat", headers=bearer(key), json={"messages": HI, "model": "demo", "provider": "demo"})
    assert r.status_code == 200
    assert r.json()["provider"] == "demo" and "not a real LLM" in r.json()["choices"][0]["message"]["content"]
    r = await gw.http.post("/api/chat", headers=bearer(key), json={"messages": HI, "model": "tokens-3", "provider": "nope"})
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND" and "nope" in r.json()["message"]


@pytest.mark.parametrize("method,path", [("POST", "/api/chat"), ("POST", "/api/quick"), ("GET", "/api/models"),
                                         ("POST", "/api/models/load")])
async def test_missing_key_is_seed000_error_exactly(gw, method, path):
    body = {"messages": HI, "prompt": "x", "source": "a", "format": "gguf", "name": "n"}
    r = await gw.http.request(method, path, json=body if method == "POST" else None)
    assert r.status_code == 401
    assert r.json() == MISSING_KEY
    assert r.headers["X-Request-Id"].startswith("req_")


async def test_bad_key_and_admin_key_header(gw):
    r = await gw.http.post("/api/chat", headers=bearer("tg_not-a-real-key"), json={"messages": HI})
    assert r.status_code == 401
    assert r.json() == {"error": "Invalid API key", "message": "Invalid API key", "code": "UNAUTHORIZED"}
    r = await gw.http.post("/api/chat", headers={"X-API-Key": "tg_not-a-real-key"}, json={"messages": HI})
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"


async def test_x_api_key_header_works(gw):
    key = await gw.new_key()
    r = await gw.http.post("/api/chat", headers={"X-API-Key": key}, json={"messages": HI, "model": "tokens-2"})
    assert r.status_code == 200 and r.json()["usage"]["completionTokens"] == 2


@pytest.mark.parametrize("body,field", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": HI, "maxTokens": "many"}, "maxTokens"),
    ({"messages": HI, "maxTokens": 0}, "maxTokens"),
    ({"messages": HI, "temperature": 5}, "temperature"),
    ({"messages": HI, "model": 7}, "model"),
    ({"messages": HI, "provider": ["auto"]}, "provider"),
    ({"messages": HI, "model": "gpt\r\nX-Evil: 1"}, "model"),
])
async def test_validation_errors(gw, body, field):
    key = await gw.new_key()
    r = await gw.http.post("/api/chat", headers=bearer(key), json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert (err["error"], err["code"]) == ("Validation error", "VALIDATION_ERROR")
    assert err["details"][0]["field"] == field
    assert field in err["message"]


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'{"messages": [NaN]}'])
async def test_unparseable_bodies(gw, raw):
    key = await gw.new_key()
    r = await gw.http.post("/api/chat", headers={**bearer(key), "Content-Type": "application/json"}, content=raw)
    assert r.status_code == 400
    assert r.json()["code"] == "VALIDATION_ERROR" and r.json()["error"] == "Validation error"


async def test_body_over_limit_is_413(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), max_body_bytes=2048)
    async with run_gateway(cfg) as g:
        key = await g.new_key()
        r = await g.http.post("/api/chat", headers=bearer(key), json={"messages": [{"role": "user", "content": "x" * 4096}]})
        assert r.status_code == 413
        assert r.json()["code"] == "PAYLOAD_TOO_LARGE"
        assert fake_openai.requests == []


async def test_rate_limit_is_429_with_reset_time_and_headers(gw, fake_openai):
    key = await gw.new_key(tier="explorer")  # seed 003's free tier: 20 requests a minute
    for _ in range(20):
        ok = await gw.http.post("/api/chat", headers=bearer(key), json={"messages": HI, "model": "tokens-1"})
        assert ok.status_code == 200
    assert ok.headers["X-RateLimit-Remaining"] == "0"
    r = await gw.http.post("/api/chat", headers=bearer(key), json={"messages": HI, "model": "tokens-1"})
    assert r.status_code == 429
    err = r.json()
    assert (err["error"], err["code"]) == ("Rate limit exceeded", "RATE_LIMIT_EXCEEDED")
    reset = dt.datetime.fromisoformat(err["resetTime"].replace("Z", "+00:00"))
    assert reset > dt.datetime.now(dt.timezone.utc)
    assert int(r.headers["Retry-After"]) >= 1
    assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("20", "0")
    assert len(fake_openai.requests) == 20


@pytest.mark.parametrize("model,status,code", [
    ("fault-401", 502, "PROVIDER_ERROR"),
    ("fault-503", 503, "SERVICE_UNAVAILABLE"),
    ("fault-404", 404, "NOT_FOUND"),
])
async def test_upstream_failures_map_to_seed001_codes(gw, model, status, code):
    key = await gw.new_key()
    r = await gw.http.post("/api/chat", headers=bearer(key), json={"messages": HI, "model": model})
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert set(r.json()) <= {"error", "message", "code", "details", "resetTime"}
    assert "sk-test-upstream" not in r.text


async def test_deadline_is_504_timeout(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), request_timeout_s=0.5)
    async with run_gateway(cfg) as g:
        key = await g.new_key()
        r = await g.http.post("/api/chat", headers=bearer(key), json={"messages": HI, "model": "fault-slow-first-3"})
        assert r.status_code == 504
        assert (r.json()["error"], r.json()["code"]) == ("Timeout", "TIMEOUT")


async def test_no_eligible_key_is_400(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url, models=("gpt-4o-mini",)),))
    async with run_gateway(cfg) as g:
        key = await g.new_key()
        r = await g.http.post("/api/chat", headers=bearer(key),
                              json={"messages": HI, "model": "claude-3-5-sonnet-20241022", "provider": "auto"})
        assert r.status_code == 400
        assert r.json()["code"] == "NO_ELIGIBLE_KEY"


async def test_quick(gw, fake_openai):
    key = await gw.new_key()
    r = await gw.http.post("/api/quick", headers=bearer(key), json={"prompt": "Tell me a joke", "maxTokens": 3, "temperature": 0.8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "tok0 tok1 tok2 "
    assert (body["model"], body["provider"], body["finishReason"]) == ("tokens-4", "primary", "stop")
    assert body["usage"] == {"promptTokens": fake_openai.prompt_tokens, "completionTokens": 3,
                             "totalTokens": fake_openai.prompt_tokens + 3}
    assert fake_openai.requests[-1].body["messages"] == [{"role": "user", "content": "Tell me a joke"}]
    assert r.headers["X-LLM-Provider"] == "primary" and "X-RateLimit-Limit" in r.headers
    r = await gw.http.post("/api/quick", headers=bearer(key), json={"prompt": "", "maxTokens": 3})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "prompt"
    r = await gw.http.post("/api/quick", headers=bearer(key), json={"prompt": "x", "maxTokens": -1})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "maxTokens"


async def test_models_list_with_provider_context_and_pricing(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url, models=("gpt-4o-mini",)), DEMO_PROVIDER))
    async with run_gateway(cfg) as g:
        key = await g.new_key()
        r = await g.http.get("/api/models", headers=bearer(key))
        assert r.status_code == 200
        body = r.json()
        by_id = {m["id"]: m for m in body["models"]}
        assert sorted(by_id) == ["demo", "gpt-4o-mini", "tollgate-demo"] and body["total"] == 3
        mini = by_id["gpt-4o-mini"]
        assert (mini["provider"], mini["contextLength"]) == ("primary", 128000)
        assert mini["pricing"] == {"promptPerMTok": 0.15, "completionPerMTok": 0.6, "currency": "USD"}
        assert by_id["demo"]["demo"] is True and by_id["demo"]["provider"] == "demo"
        assert "X-RateLimit-Limit" in r.headers


async def test_models_load_bad_source_is_a_clear_400(gw):
    key = await gw.new_key()
    r = await gw.http.post("/api/models/load", headers=bearer(key),
                           json={"source": "path/to/model", "format": "gguf", "name": "My Custom Model"})
    assert r.status_code == 400  # no such file in the model directory (and no Ollama here)
    body = r.json()
    assert (body["error"], body["code"]) == ("Validation error", "VALIDATION_ERROR")
    assert body["details"] == [{"field": "source", "message": "no such file 'path/to/model' in the model directory"}]
    assert "x-should-retry" not in r.headers
    r = await gw.http.post("/api/models/load", headers=bearer(key), json={"source": 5, "format": "gguf"})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "source"


async def test_models_load_registers_the_model(tmp_path):
    """Seed 000's curl as written (formerly a strict xfail): the file at path/to/model in the
    model directory, the fake Ollama to create it in."""
    from tests.support.fakes.ollama import run_fake_ollama

    async with run_fake_ollama() as ollama:
        cfg = config(tmp_path, providers=(provider("local", ollama.base_url, kind="ollama", keys=("",)),))
        (tmp_path / "data" / "models" / "path" / "to").mkdir(parents=True)
        (tmp_path / "data" / "models" / "path" / "to" / "model").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
        async with run_gateway(cfg) as g:
            key = await g.new_key()
            r = await g.http.post("/api/models/load", headers=bearer(key),
                                  json={"source": "path/to/model", "format": "gguf", "name": "My Custom Model"})
            assert r.status_code == 201, r.text
            assert r.json()["model"]["name"] == "My Custom Model"


async def test_same_answer_and_headers_over_a_real_grpc_channel(gw):
    key = await gw.new_key()
    async with remote_bridge(gw.rt.grpc_target) as url, httpx.AsyncClient(base_url=url, timeout=10) as remote:
        r = await remote.post("/api/chat", headers=bearer(key), json={"messages": HI, "model": "tokens-2", "provider": "auto"})
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 "
        assert (r.headers["X-LLM-Provider"], r.headers["X-LLM-Key-ID"]) == ("primary", "primary-k1")
        assert r.headers["X-RateLimit-Used"] == "1" and "X-LLM-Latency-Ms" in r.headers
        r = await remote.post("/api/chat", json={"messages": HI})
        assert (r.status_code, r.json()) == (401, MISSING_KEY)
        r = await remote.post("/api/v1/inference/stream", headers=bearer(key), json={"model": "tokens-2", "messages": HI})
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n") and "tok1 " in r.text
