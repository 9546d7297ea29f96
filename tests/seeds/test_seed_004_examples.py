"""Seed 004 ("LLM Proxy Service", an OpenRouter proxy), its README's examples as written, in open
mode (issue 19 point 2): no key anywhere, per-IP limits, seed 004's error shapes.

The seed's `http://localhost:3000` is the test gateway; OpenRouter is the fake OpenAI server
declared as an `openrouter` provider serving the seed's model ids. JavaScript examples are
translated line for line to Python (httpx for fetch, aiohttp for WebSocket).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import aiohttp
import pytest

from tests.seeds.support import json_docs, run_python, sh
from tests.support.gateway import config, provider, run_gateway

SEED = "http://localhost:3000"
MODELS = ("openai/gpt-4o", "anthropic/claude-3-5-sonnet-20241022", "claude-sonnet-4-20250514", "gpt-4o-mini")
FAULTS = ("fault-503", "fault-slow-first-1")  # the fake's fault models, for the error and concurrency checks


def openrouter(fake, **kw):
    return provider("openrouter", fake.base_url, kind="openrouter", models=MODELS + FAULTS, **kw)


@pytest.fixture
async def gw(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(openrouter(fake_openai),),
                 open_mode=True, environment="production")
    async with run_gateway(cfg) as g:
        yield g


async def test_health(gw):
    r = await gw.http.get("/health")
    body = r.json()
    assert r.status_code == 200 and set(body) == {"status", "timestamp", "uptime", "version", "environment"}
    assert (body["status"], body["environment"]) == ("healthy", "production")


# --- REST API Example (JavaScript), translated: fetch -> httpx, response.json() -> .json()
async def test_rest_example_js(gw):
    response = await gw.http.post(SEED.replace(SEED, gw.url) + "/api/v1/inference",
                                  headers={"Content-Type": "application/json"},
                                  content=json.dumps({"model": "openai/gpt-4o",
                                                      "messages": [{"role": "user", "content": "Hello, world!"}],
                                                      "temperature": 0.7, "max_tokens": 100}))
    data = response.json()
    assert data["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
    assert data["model"] == "openai/gpt-4o" and data["object"] == "chat.completion"


# --- Streaming Example (JavaScript): reader loop over "data: " lines, [DONE] ends it
async def test_streaming_example_js(gw):
    printed = []
    async with gw.http.stream("POST", gw.url + "/api/v1/inference/stream", headers={"Content-Type": "application/json"},
                              content=json.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "Tell me a story"}],
                                                  "temperature": 0.7, "max_tokens": 500, "stream": True})) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        done = False
        async for chunk in response.aiter_text():
            for line in chunk.split("\n"):
                if line.startswith("data: "):
                    data = line[6:]
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        parsed = json.loads(data)
                        if (parsed.get("choices") or [{}])[0].get("delta", {}).get("content"):
                            printed.append(parsed["choices"][0]["delta"]["content"])
                    except ValueError:
                        pass  # Ignore invalid JSON
    assert done and "".join(printed) == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "


# --- WebSocket Example (JavaScript): inference_request -> inference_response (content, finish_reason)
async def test_websocket_example_js(gw):
    logged = []
    async with aiohttp.ClientSession() as s, s.ws_connect(gw.url.replace("http", "ws") + "/ws") as ws:
        await ws.send_str(json.dumps({"type": "inference_request", "id": "req-123", "data": {
            "model": "openai/gpt-4o", "messages": [{"role": "user", "content": "Hello, world!"}], "temperature": 0.7}}))
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            message = json.loads(msg.data)
            if message["type"] == "inference_response":
                if message["data"].get("content"):
                    logged.append(message["data"]["content"])
                if message["data"].get("finish_reason"):
                    logged.append("Finished: " + message["data"]["finish_reason"])
                    break
            elif message["type"] == "error":
                pytest.fail("Error: " + message["error"]["message"])
    assert logged[-1] == "Finished: stop" and "tok0" in "".join(logged[:-1])
    assert message["id"] == "req-123"


# --- Python Example, as written (requests)
PYTHON_EXAMPLE = '''
import requests
import json

# Standard completion
response = requests.post('http://localhost:3000/api/v1/inference', 
    json={
        'model': 'openai/gpt-4o',
        'messages': [
            {'role': 'user', 'content': 'Hello, world!'}
        ],
        'temperature': 0.7,
        'max_tokens': 100
    }
)

data = response.json()
print(data['choices'][0]['message']['content'])
'''


async def test_python_example(gw):
    out = await run_python(PYTHON_EXAMPLE, SEED, gw.url)
    assert out == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 \n"


# --- cURL Examples, as written
CURL_EXAMPLES = '''
# Standard completion
curl -X POST http://localhost:3000/api/v1/inference \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "openai/gpt-4o",
    "messages": [
      {"role": "user", "content": "Hello, world!"}
    ],
    "temperature": 0.7,
    "max_tokens": 100
  }'

# List models
curl http://localhost:3000/api/v1/models

# Get model details
curl http://localhost:3000/api/v1/models/openai/gpt-4o

# Search models
curl "http://localhost:3000/api/v1/models/search?q=gpt&limit=5"
'''


async def test_curl_examples(gw):
    code, out, err = await sh(CURL_EXAMPLES, SEED, gw.url)
    assert code == 0, err
    completion, models, details, search = json_docs(out)
    assert completion["choices"][0]["message"]["content"].startswith("tok0")
    assert {m["id"] for m in models["data"]} == set(MODELS + FAULTS) and models["pagination"]["total"] == 6
    assert details["data"]["id"] == "openai/gpt-4o" and details["data"]["context_length"] == 128000
    assert search["query"] == "gpt" and {m["id"] for m in search["data"]} == {"openai/gpt-4o", "gpt-4o-mini"}


# --- Model Endpoints, each "Example:" line of the README
async def test_model_endpoint_examples(gw):
    get = lambda path: gw.http.get(path)  # noqa: E731 - no key: open mode
    body = (await get("/api/v1/models?provider=openai&search=gpt&limit=10&offset=0")).json()
    assert [m["id"] for m in body["data"]] == ["gpt-4o-mini", "openai/gpt-4o"]
    assert body["pagination"] == {"total": 2, "limit": 10, "offset": 0, "hasMore": False}
    m = body["data"][1]
    assert set(m) >= {"id", "name", "description", "context_length", "pricing", "supported_parameters", "is_moderated",
                      "max_completion_tokens"}
    assert (await get("/api/v1/models/openai/gpt-4o")).json()["data"]["name"].startswith("GPT-4o")
    params = (await get("/api/v1/models/openai/gpt-4o/parameters")).json()["data"]
    assert params["model"] == "openai/gpt-4o" and "temperature" in params["supported_parameters"]
    pricing = (await get("/api/v1/models/openai/gpt-4o/pricing")).json()["data"]
    assert pricing["model"] == "openai/gpt-4o" and set(pricing["pricing"]) == {"prompt", "completion"}
    top = (await get("/api/v1/models/top?limit=5")).json()["data"]
    assert top[0]["id"] == "anthropic/claude-3-5-sonnet-20241022" and top[0]["context_length"] == 200000
    found = (await get("/api/v1/models/search?q=code&limit=5")).json()
    assert found["query"] == "code" and found["total"] >= 1
    assert (await get("/api/v1/models/providers")).json() == {"data": ["openai", "anthropic"]}
    by = (await get("/api/v1/models/providers/openai")).json()
    assert by["provider"] == "openai" and {m["id"] for m in by["data"]} == {"openai/gpt-4o", "gpt-4o-mini"}


# --- Error Handling: the format, the types
async def test_error_format_and_types(gw):
    r = await gw.http.post("/api/v1/inference", json={"messages": [{"role": "user", "content": "Hello, world!"}]})
    assert r.status_code == 400
    assert r.json() == {"error": {"code": 400, "message": "Validation error", "type": "validation",
                                  "details": {"field": "model", "message": "Model is required"}}}
    r = await gw.http.get("/api/v1/models/nobody/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == 404
    r = await gw.http.post("/api/v1/inference", json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}],
                                                      "route": {"provider": "openrouter"}, "temperature": 9})
    assert r.status_code == 400 and r.json()["error"]["type"] == "validation"
    # An upstream failure is seed 004's upstream error (502/503), its "openrouter" type under our name.
    r = await gw.http.post("/api/v1/inference", json={"model": "fault-503", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code in (502, 503) and r.json()["error"]["type"] == "upstream"
    # /ws error frames carry the same shape.
    async with aiohttp.ClientSession() as s, s.ws_connect(gw.url.replace("http", "ws") + "/ws") as ws:
        await ws.send_str(json.dumps({"type": "inference_request", "id": "req-9",
                                      "data": {"messages": [{"role": "user", "content": "x"}]}}))
        while (frame := json.loads((await asyncio.wait_for(ws.receive(), 10)).data))["type"] == "heartbeat":
            pass
        assert frame["type"] == "error" and frame["id"] == "req-9"
        assert frame["error"] == {"code": 400, "message": "Validation error", "type": "validation",
                                  "details": {"field": "model", "message": "Model is required"}}


async def test_keys_still_work_and_bad_keys_are_still_refused(gw):
    r = await gw.http.get("/api/v1/models", headers={"Authorization": "Bearer sk-not-a-key"})
    assert r.status_code == 401
    key = await gw.new_key()
    r = await gw.http.get("/api/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    # Open mode opens seed 004's routes only: the OpenAI and /api surfaces keep their keys.
    r = await gw.http.post("/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401
    r = await gw.http.post("/api/chat", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401


# --- Rate Limiting: 100 / 15 min per IP, inference 50 / 15 min, WebSocket 5 connections / min
async def test_per_ip_limits(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(openrouter(fake_openai),),
                 open_mode=True, open_max_requests=6, open_inference_max=3, open_ws_per_minute=2,
                 trusted_proxies=("127.0.0.1",))
    async with run_gateway(cfg) as gw:
        body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            assert (await gw.http.post("/api/v1/inference", json=body)).status_code == 200
        r = await gw.http.post("/api/v1/inference", json=body)
        assert r.status_code == 429
        err = r.json()["error"]
        assert (err["code"], err["type"]) == (429, "rate_limit") and int(r.headers["Retry-After"]) > 0
        # The catalogue still has room (6 in all): 3 used by inference, 1 refused (not counted).
        for _ in range(3):
            assert (await gw.http.get("/api/v1/models")).status_code == 200
        assert (await gw.http.get("/api/v1/models")).status_code == 429
        # Another client behind the trusted proxy (127.0.0.1) has its own count.
        other = {"X-Forwarded-For": "203.0.113.50"}
        assert (await gw.http.post("/api/v1/inference", json=body, headers=other)).status_code == 200
        # WebSocket: 2 connections a minute for that client, then refused before the upgrade.
        async with aiohttp.ClientSession() as s:
            ws_url = gw.url.replace("http", "ws") + "/ws"
            for _ in range(2):
                async with s.ws_connect(ws_url, headers={"X-Forwarded-For": "203.0.113.60"}):
                    pass
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                async with s.ws_connect(ws_url, headers={"X-Forwarded-For": "203.0.113.60"}):
                    pass
            assert e.value.status == 429


async def test_max_concurrent_requests(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(openrouter(fake_openai),),
                 open_mode=True, max_concurrent_requests=1)
    async with run_gateway(cfg) as gw:
        slow = gw.http.post("/api/v1/inference", json={"model": "fault-slow-first-1", "messages": [{"role": "user", "content": "x"}]})
        task = asyncio.ensure_future(slow)
        for _ in range(100):
            if gw.app.open_gate.in_flight == 1:
                break
            await asyncio.sleep(0.01)
        r = await gw.http.post("/api/v1/inference", json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 503 and r.json()["error"]["type"] == "upstream" and r.headers["Retry-After"] == "1"
        assert (await task).status_code == 200
        assert gw.app.open_gate.in_flight == 0


async def test_open_mode_is_off_by_default(tmp_path, fake_openai):
    from services.config.load import load_config

    assert load_config(None, env={}).open_mode is False
    async with run_gateway(config(tmp_path, providers=(openrouter(fake_openai),))) as g:
        r = await g.http.post("/api/v1/inference", json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication"
        assert (await g.http.get("/api/v1/models")).status_code == 401


async def test_environment_comes_from_node_env(tmp_path):
    from services.config.load import load_config

    cfg = dataclasses.replace(load_config(None, env={"NODE_ENV": "test"}), grpc_addr="127.0.0.1:0", http_addr="127.0.0.1:0",
                              data_dir=str(tmp_path))
    async with run_gateway(cfg) as g:
        assert (await g.http.get("/health")).json()["environment"] == "test"


# --- Multi-modal: image input in messages reaches a provider that takes it, as sent
async def test_image_input_passes_through(gw, fake_openai):
    content = [{"type": "text", "text": "What is in this picture?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]
    r = await gw.http.post("/api/v1/inference", json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    sent = fake_openai.requests[-1].body["messages"][0]["content"]
    assert sent == content


async def test_rate_limit_headers_in_open_mode(gw):
    """Seed 004: X-RateLimit-Limit / -Remaining / -Reset on responses (the per-IP count)."""
    r = await gw.http.get("/api/v1/models")
    assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("100", "99")
    assert int(r.headers["X-RateLimit-Reset"]) > 0
    r = await gw.http.post("/api/v1/inference", json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "50" and r.headers["X-RateLimit-Remaining"] == "49"
    r = await gw.http.post("/api/v1/inference/stream", json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "48"
