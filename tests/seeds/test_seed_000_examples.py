"""Seed 000 ("LLM Router SaaS API"), its README's examples as written (issue 19).

Every curl line runs through bash and curl with the seed's `http://178.156.181.117:3006` replaced
by the test gateway and YOUR_API_KEY / YOUR_ADMIN_KEY by real keys; the WebSocket example (JS)
is translated line for line (aiohttp). The model to load sits at `path/to/model` in the model
directory and the fake Ollama takes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import aiohttp
import pytest

from services.config.defaults import DEFAULT_TIERS, DEMO_PROVIDER
from services.config.load import load_config
from services.config.schema import TierConfig
from tests.seeds.support import json_docs, sh
from tests.support.fakes.ollama import run_fake_ollama
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway

SEED = "http://178.156.181.117:3006"
GGUF = b"GGUF\x03\x00\x00\x00" + bytes(256)


@pytest.fixture
async def gw(tmp_path):
    async with run_fake_ollama() as ollama:
        tiers = DEFAULT_TIERS + (TierConfig("one-a-day", rpd=1),)
        cfg = config(tmp_path, providers=(provider("ollama", ollama.base_url, kind="ollama", keys=("",), models=("llava",)),
                                          DEMO_PROVIDER), tiers=tiers)
        models = tmp_path / "data" / "models" / "path" / "to"
        models.mkdir(parents=True)
        (models / "model").write_bytes(GGUF)
        async with run_gateway(cfg) as g:
            g.ollama = ollama
            yield g


async def run(gw, script: str, key: str = "") -> tuple[int, str, str]:
    return await sh(script.replace("YOUR_API_KEY", key).replace("YOUR_ADMIN_KEY", ADMIN_KEY), SEED, gw.url)


HEALTH = "curl http://178.156.181.117:3006/api/health"

MODELS = '''curl -H "Authorization: Bearer YOUR_API_KEY" \\
  http://178.156.181.117:3006/api/models'''

CHAT = '''curl -X POST http://178.156.181.117:3006/api/chat \\
  -H "Authorization: Bearer YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "messages": [
      {"role": "user", "content": "Hello, how are you?"}
    ],
    "maxTokens": 500,
    "temperature": 0.7
  }\''''

QUICK = '''curl -X POST http://178.156.181.117:3006/api/quick \\
  -H "Authorization: Bearer YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "prompt": "Tell me a joke",
    "maxTokens": 100,
    "temperature": 0.8
  }\''''

LOAD = '''curl -X POST http://178.156.181.117:3006/api/models/load \\
  -H "Authorization: Bearer YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "source": "path/to/model",
    "format": "gguf",
    "name": "My Custom Model"
  }\''''

CREATE_KEY = '''curl -X POST http://178.156.181.117:3006/api/admin/keys \\
  -H "X-Admin-Key: YOUR_ADMIN_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "customer-name",
    "email": "customer@example.com", 
    "tier": "basic"
  }\''''

STATS = '''curl -H "X-Admin-Key: YOUR_ADMIN_KEY" \\
  http://178.156.181.117:3006/api/admin/stats'''

LIST_KEYS = '''curl -H "X-Admin-Key: YOUR_ADMIN_KEY" \\
  http://178.156.181.117:3006/api/admin/keys'''


async def test_quick_start_as_written(gw):
    code, out, err = await run(gw, HEALTH)
    assert code == 0 and json.loads(out)["status"] in ("ok", "healthy"), err

    code, out, err = await run(gw, CREATE_KEY)
    created = json.loads(out)
    assert code == 0 and created["tier"] == "basic" and created["key"], out
    key = created["key"]

    models = json.loads((await run(gw, MODELS, key))[1])
    assert {"demo", "llava"} <= {m["id"] for m in models["models"]}

    chat = json.loads((await run(gw, CHAT, key))[1])
    assert chat["choices"][0]["message"]["content"] == "[tollgate demo model: not a real LLM] You said: Hello, how are you?"
    assert chat["choices"][0]["finishReason"] == "stop" and chat["usage"]["totalTokens"] > 0

    quick = json.loads((await run(gw, QUICK, key))[1])
    assert "Tell me a joke" in json.dumps(quick)

    # Load New Model: a basic key may not (a tier setting); an enterprise key may, as written.
    denied = json.loads((await run(gw, LOAD, key))[1])
    assert denied["code"] == "FORBIDDEN"
    loaded = json.loads((await run(gw, LOAD, await gw.new_key(tier="enterprise")))[1])
    assert loaded["loaded"] is True and loaded["model"]["name"] == "My Custom Model"
    assert "my-custom-model" in gw.ollama.created

    stats = json.loads((await run(gw, STATS))[1])
    assert stats and "error" not in stats
    keys = json.loads((await run(gw, LIST_KEYS))[1])
    listed = keys["keys"] if isinstance(keys, dict) else keys
    assert "customer-name" in json.dumps(listed) and key not in json.dumps(listed)


async def test_error_responses_and_headers_as_written(gw):
    code, out, _ = await run(gw, MODELS.replace('-H "Authorization: Bearer YOUR_API_KEY" \\\n  ', ""))
    assert json.loads(out) == {"error": "API key required",
                               "message": "Provide API key via Authorization: Bearer <key> or X-API-Key header",
                               "code": "UNAUTHORIZED"}
    key = await gw.new_key(tier="one-a-day")
    code, out, _ = await run(gw, "curl -s -D - -o /dev/null " + MODELS.split("curl ", 1)[1], key)
    head = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()[1:] if ":" in line)}
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-used"} <= set(head)
    first = json.loads((await run(gw, CHAT, key))[1])
    assert "choices" in first
    limited = json.loads((await run(gw, CHAT, key))[1])
    assert limited["error"] == "Rate limit exceeded" and "daily" in limited["message"].lower()
    assert limited["resetTime"].endswith("T00:00:00.000Z")


async def test_websocket_streaming_js(gw):
    key = await gw.new_key()
    got = []
    async with aiohttp.ClientSession() as s, s.ws_connect(gw.url.replace("http", "ws") + "/ws") as ws:
        # ws.onopen: authenticate, then chat at once (the seed does not wait for an answer).
        await ws.send_str(json.dumps({"type": "authenticate", "apiKey": key}))
        await ws.send_str(json.dumps({"type": "chat", "messages": [{"role": "user", "content": "Hello!"}]}))
        while True:
            msg = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
            got.append(msg)
            if msg.get("type") in ("done", "complete", "end", "error") or msg.get("done") is True:
                break
    assert not [m for m in got if m.get("type") == "error"], got
    text = "".join(m.get("token") or m.get("content") or "" for m in got if m.get("type") not in ("authenticated",))
    assert "Hello!" in text


def test_environment_variables_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env={"NODE_ENV": "production", "PORT": "3006", "ADMIN_API_KEY": "your_admin_key",
                                 "ROUTING_STRATEGY": "balanced"})
    assert (cfg.environment, cfg.http_addr, cfg.admin_key, cfg.strategy) == ("production", "127.0.0.1:3006",
                                                                              "your_admin_key", "balanced")


def test_tier_limits_as_written():
    tiers = {t.name: t for t in DEFAULT_TIERS}
    assert [(tiers[n].rpm, tiers[n].rpd, tiers[n].tpd) for n in ("basic", "pro", "enterprise")] == [
        (60, 1_000, 100_000), (300, 10_000, 1_000_000), (1_000, 100_000, 10_000_000)]
    assert dataclasses.replace(tiers["basic"]).load_models is False and tiers["enterprise"].load_models is True
