"""Seed 003 ("LLM API Gateway", monetising), its quick start and API test as written (issue 19).

`export ANTHROPIC_API_KEY=...` etc. configure the three upstreams (checked through load_config);
the curl to /v1/anthropic/messages runs through bash and curl against the gateway, whose
anthropic provider is the fake Anthropic server, and lands metered in the ledger.
"""

from __future__ import annotations

import json

import pytest

from services.config.defaults import DEFAULT_TIERS
from services.config.load import load_config
from tests.seeds.support import sh
from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.gateway import config, provider, run_gateway

SEED = "http://localhost:8080"

TEST_THE_API = '''curl -X POST http://localhost:8080/v1/anthropic/messages \\
  -H "X-API-Key: YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "claude-sonnet-4-20250514",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hello!"}]
  }\''''


def test_quick_start_keys_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env={"ANTHROPIC_API_KEY": "sk-ant-...", "OPENAI_API_KEY": "sk-...", "GEMINI_API_KEY": "AIza..."})
    assert sorted((p.kind, p.base_url) for p in cfg.providers) == [
        ("anthropic", "https://api.anthropic.com"), ("gemini", "https://generativelanguage.googleapis.com"),
        ("openai", "https://api.openai.com/v1")]


def test_plans_as_written():
    tiers = {t.name: t for t in DEFAULT_TIERS}
    assert [(tiers[n].rpm, tiers[n].tpm_month) for n in ("explorer", "startup", "growth")] == [
        (20, 100_000), (60, 1_000_000), (200, 10_000_000)]
    assert (tiers["enterprise"].rpm, tiers["enterprise"].tpm_month) == (1_000, 0)  # unlimited monthly tokens


@pytest.fixture
async def gw(tmp_path, fake_openai):
    async with run_fake_anthropic(models=("claude-sonnet-4-20250514",)) as anthropic:
        cfg = config(tmp_path, providers=(
            provider("anthropic", anthropic.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,)),
            provider("openai", fake_openai.base_url)))
        async with run_gateway(cfg) as g:
            yield g


async def test_the_api_as_written(gw):
    key = await gw.new_key(tier="startup")  # "Get your API key from the admin UI"
    code, out, err = await sh(TEST_THE_API.replace("YOUR_API_KEY", key), SEED, gw.url)
    assert code == 0, err
    message = json.loads(out)
    assert message["type"] == "message" and message["model"] == "claude-sonnet-4-20250514"
    assert message["content"][0]["type"] == "text" and message["usage"]["output_tokens"] > 0
    # Metering: the response's own usage lands in the ledger, not an estimate.
    rows = [r for r in await gw.ledger() if r.surface == "passthrough_anthropic"]
    assert len(rows) == 1 and rows[0].completion_tokens == message["usage"]["output_tokens"] and not rows[0].estimated


async def test_streamed_and_the_other_routes(gw):
    key = await gw.new_key(tier="growth")
    stream = TEST_THE_API.replace('"max_tokens": 100,', '"max_tokens": 100, "stream": true,').replace("YOUR_API_KEY", key)
    code, out, err = await sh(stream, SEED, gw.url)
    assert code == 0 and "event: message_stop" in out, err
    r = await gw.http.post("/v1/openai/chat/completions", headers={"X-API-Key": key},
                           json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("tok0")
    r = await gw.http.get("/v1/models", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["object"] == "list"
