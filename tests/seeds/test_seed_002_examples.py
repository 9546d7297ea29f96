"""Seed 002 ("LLM Router", FastAPI), its README's configuration and examples as written (issue 19).

The gateway is configured from the seed's own variables through load_config (ROUTER_SERVICES
exactly as the README writes it, base URLs pointed at the fake server, AUTH_KEY_01/02), and each
curl line runs through bash and curl with `http://localhost:8000` replaced by the gateway.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from services.config.load import load_config
from tests.seeds.support import json_docs, run_python, sh
from tests.support.gateway import run_gateway

SEED = "http://localhost:8000"

SIMPLE_ENV = '''
# Router will automatically activate with multiple backends
CEREBRAS_API_KEY=your_cerebras_api_key_here
OPENAI_API_KEY=sk-your_openai_api_key_here
# Ollama works without API key
OLLAMA_BASE_URL=http://localhost:11434/v1
'''

ROUTER_SERVICES = '''[
  {
    "name": "primary-cerebras",
    "backend_type": "cerebras",
    "base_url": "https://api.cerebras.ai/v1",
    "api_key": "your_cerebras_key",
    "priority": 0,
    "rate_limit_requests": 100,
    "rate_limit_window": 60
  },
  {
    "name": "fallback-openai", 
    "backend_type": "openai",
    "base_url": "https://api.openai.com/v1",
    "api_key": "sk-your_openai_key",
    "priority": 1,
    "rate_limit_requests": 50,
    "rate_limit_window": 60
  }
]'''

AUTH_ENV = {"AUTH_KEY_01": "sk-user1-key", "AUTH_KEY_02": "sk-user2-key"}


def env_file(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_simple_configuration_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env=env_file(SIMPLE_ENV))
    assert [(p.name, p.kind, p.base_url) for p in cfg.providers] == [
        ("openai", "openai", "https://api.openai.com/v1"), ("cerebras", "cerebras", "https://api.cerebras.ai/v1"),
        ("ollama", "ollama", "http://localhost:11434/v1")]


def test_advanced_router_configuration_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env={"ROUTER_SERVICES": ROUTER_SERVICES, "ENABLE_AUTH": "false"})
    assert [(p.name, p.kind, p.priority, p.rpm, p.rate_window_s) for p in cfg.providers] == [
        ("primary-cerebras", "cerebras", 0, 100, 60.0), ("fallback-openai", "openai", 1, 50, 60.0)]
    assert cfg.enable_auth is False


@pytest.fixture
async def gw(tmp_path, fake_openai, monkeypatch):
    monkeypatch.chdir(tmp_path)
    services = ROUTER_SERVICES.replace("https://api.cerebras.ai/v1", fake_openai.base_url).replace(
        "https://api.openai.com/v1", fake_openai.base_url)
    env = {"ROUTER_SERVICES": services, "AUTH_KEY": "your-api-key", **AUTH_ENV}
    for var, value in env.items():  # POST /auth/reload-keys re-reads the process environment
        monkeypatch.setenv(var, value)
    cfg = load_config(None, env=env)
    cfg = dataclasses.replace(cfg, grpc_addr="127.0.0.1:0", http_addr="127.0.0.1:0", data_dir=str(tmp_path / "data"))
    async with run_gateway(cfg) as g:
        yield g


CHAT = '''curl -X POST "http://localhost:8000/v1/chat/completions" \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer your-api-key" \\
  -d '{
    "model": "llama3.1-8b",
    "messages": [
      {
        "role": "user",
        "content": "Hello, how are you?"
      }
    ],
    "temperature": 0.7,
    "max_tokens": 150
  }\''''

LIST_AND_GET = '''curl -H "Authorization: Bearer your-api-key" \\
  "http://localhost:8000/v1/models"
curl -H "Authorization: Bearer your-api-key" \\
  "http://localhost:8000/v1/models/llama3.1-8b"
curl "http://localhost:8000/health"'''

ROUTER = '''# Basic info
curl "http://localhost:8000/"

# Detailed backend info
curl "http://localhost:8000/backend/info"

# Router statistics
curl -H "Authorization: Bearer your-api-key" \\
  "http://localhost:8000/router/stats"

# Router health
curl -H "Authorization: Bearer your-api-key" \\
  "http://localhost:8000/router/health"

# Rate limiting status
curl -H "Authorization: Bearer your-api-key" \\
  "http://localhost:8000/router/rate-limits"'''

AUTH = '''# Authentication status
curl -H "Authorization: Bearer your-api-key" \\
  "http://localhost:8000/auth/status"

# Authentication metrics
curl -H "Authorization: Bearer your-api-key" \\
  "http://localhost:8000/auth/metrics"

# Reload authentication keys
curl -X POST -H "Authorization: Bearer your-api-key" \\
  "http://localhost:8000/auth/reload-keys"'''

SDK = '''
import openai

client = openai.OpenAI(
    base_url="http://localhost:8000/v1",
    api_key="your-api-key"  # Required if authentication is enabled
)

response = client.chat.completions.create(
    model="llama3.1-8b",
    messages=[
        {"role": "user", "content": "Hello!"}
    ]
)

print(response.choices[0].message.content)
'''

CURL_SHORT = '''curl -X POST "http://localhost:8000/v1/chat/completions" \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer your-api-key" \\
  -d '{
    "model": "llama3.1-8b",
    "messages": [{"role": "user", "content": "Hello!"}]
  }\''''


async def test_api_examples_as_written(gw, fake_openai):
    code, out, err = await sh(CHAT, SEED, gw.url)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"].startswith("tok0")
    assert fake_openai.requests[-1].body["model"] == "llama3.1-8b"
    assert fake_openai.requests[-1].headers["Authorization"] == "Bearer your_cerebras_key"  # priority 0 first

    models, one, health = json_docs((await sh(LIST_AND_GET, SEED, gw.url))[1])
    assert models["object"] == "list" and "error" not in one and health["status"] == "healthy"

    root, backend, stats, health, limits = json_docs((await sh(ROUTER, SEED, gw.url))[1])
    assert root["services_count"] == 2 and [s["name"] for s in root["services"]] == ["primary-cerebras", "fallback-openai"]
    assert [b["name"] for b in backend["backends"]] == ["primary-cerebras", "fallback-openai"]
    out = json.dumps([root, backend, stats, health, limits])
    assert "your_cerebras_key" not in out and "sk-your_openai_key" not in out and "your-api-key" not in out
    assert all("error" not in d for d in (stats, health, limits))

    status, metrics, reload = json_docs((await sh(AUTH, SEED, gw.url))[1])
    assert status["enabled"] is True and "error" not in metrics and "error" not in reload

    assert (await run_python(SDK, SEED, gw.url)).startswith("tok0")
    assert json.loads((await sh(CURL_SHORT, SEED, gw.url))[1])["choices"][0]["message"]["content"].startswith("tok0")


async def test_root_and_backend_info_without_a_key_router_routes_with_one(gw):
    for path in ("/", "/backend/info"):
        assert (await gw.http.get(path)).status_code == 200
    for path in ("/router/stats", "/router/health", "/router/rate-limits", "/auth/status", "/auth/metrics"):
        assert (await gw.http.get(path)).status_code == 401
    # AUTH_KEY_01 / AUTH_KEY_02 work like AUTH_KEY.
    r = await gw.http.get("/v1/models", headers={"Authorization": "Bearer sk-user2-key"})
    assert r.status_code == 200


async def test_error_format_as_written(gw):
    r = await gw.http.post("/v1/chat/completions", json={"model": "llama3.1-8b", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401 and set(r.json()["error"]) >= {"message", "type"}
