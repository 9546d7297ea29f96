"""Seed 001 ("LLM Gateway"), its README's quick start and API reference as written (issue 19).

The seed's `https://your-instance.vercel.app` is the test gateway and `llm_your_token_here` a
token generated the seed's way (first user registers, becomes admin, generates a token). Its
curl runs through bash and curl.
"""

from __future__ import annotations

import json

import pytest

from services.config.load import load_config
from tests.seeds.support import sh
from tests.support.gateway import config, provider, run_gateway

SEED = "https://your-instance.vercel.app"
PASSWORD = "correct horse battery staple"
SERVED = ("gpt-4o", "fault-garbage")


@pytest.fixture
async def gw(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("openai", fake_openai.base_url, models=SERVED, default_model="gpt-4o"),),
                 secret_key="d2hhdGV2ZXIgb3BlbnNzbCByYW5kIC1iYXNlNjQgMzIgc2F5cw==")
    async with run_gateway(cfg) as g:
        yield g


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def first_admin_and_token(gw) -> tuple[str, str]:
    # 4. Create Admin Account: the first account registered becomes the admin; registration closes.
    r = await gw.http.post("/api/auth/register", json={"email": "owner@example.com", "password": PASSWORD})
    assert r.status_code == 201 and r.json()["user"]["role"] == "admin", r.text
    session = r.json()["token"]
    assert (await gw.http.get("/api/auth/registration")).json() == {"enabled": False}
    # 6. Generate API Token.
    r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "my-app"})
    assert r.status_code == 201, r.text
    return session, r.json()["token"]


AUTH_CURL = '''curl -X POST https://your-instance.vercel.app/api/chat \\
  -H "Authorization: Bearer llm_your_token_here" \\
  -H "Content-Type: application/json" \\
  -d '{"messages":[{"role":"user","content":"Hello!"}]}\''''

CHAT_BODY = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
    "model": "gpt-4o",
    "provider": "auto",
    "temperature": 0.7,
    "maxTokens": 1000,
}


async def test_quick_start_and_chat_as_written(gw, fake_openai):
    session, token = await first_admin_and_token(gw)
    code, out, err = await sh(AUTH_CURL.replace("llm_your_token_here", token), SEED, gw.url)
    assert code == 0, err
    assert json.loads(out)["choices"][0]["message"]["content"].startswith("tok0")

    r = await gw.http.post("/api/chat", headers=bearer(token), json=CHAT_BODY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"id", "provider", "model", "choices", "usage"} and body["id"].startswith("chatcmpl-")
    assert (body["provider"], body["model"]) == ("openai", "gpt-4o")
    assert body["choices"][0]["index"] == 0 and body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finishReason"] == "stop"
    assert set(body["usage"]) == {"promptTokens", "completionTokens", "totalTokens"}
    assert (r.headers["X-LLM-Provider"], r.headers["X-LLM-Model"], r.headers["X-LLM-Key-ID"]) == ("openai", "gpt-4o", "openai-k1")
    assert float(r.headers["X-LLM-Latency-Ms"]) >= 0
    assert fake_openai.requests[-1].body["max_tokens"] == 1000


async def test_key_and_token_management_as_written(gw):
    session, token = await first_admin_and_token(gw)
    # Key Management: GET / POST / DELETE /api/keys (5. Add API Keys).
    r = await gw.http.post("/api/keys", headers=bearer(session), json={
        "provider": "anthropic", "apiKey": "sk-ant-mine-0123456789", "allowedModels": ["claude-opus-4-20250514"]})
    assert r.status_code == 201 and "sk-ant-mine-0123456789" not in r.text, r.text
    key_id = r.json()["id"]
    assert [k["id"] for k in (await gw.http.get("/api/keys", headers=bearer(session))).json()["keys"]] == [key_id]
    assert (await gw.http.delete(f"/api/keys/{key_id}", headers=bearer(session))).status_code == 204
    # Token Management: GET / POST / DELETE /api/tokens.
    r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "second"})
    second = r.json()["id"]
    listed = (await gw.http.get("/api/tokens", headers=bearer(session))).json()["tokens"]
    assert {"my-app", "second"} <= {t["name"] for t in listed}
    assert (await gw.http.delete(f"/api/tokens/{second}", headers=bearer(session))).status_code in (200, 204)


async def test_health_checks_as_written(gw):
    for path, status in (("/health", 200), ("/health/ready", 200), ("/health/live", 200)):
        r = await gw.http.get(path)
        assert r.status_code == status, (path, r.text)
    assert (await gw.http.get("/health/ready")).json()["checks"]["store"] == "ok"


async def test_error_codes_as_written(gw):
    session, token = await first_admin_and_token(gw)
    r = await gw.http.post("/api/chat", headers=bearer(token), json={"messages": "not a list"})
    assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_ERROR")
    r = await gw.http.post("/api/chat", headers=bearer("llm_not_a_token"), json=CHAT_BODY)
    assert (r.status_code, r.json()["code"]) == (401, "UNAUTHORIZED")
    r = await gw.http.put("/api/admin/registration", headers=bearer(token), json={"open": True})
    assert r.status_code == 403
    r = await gw.http.post("/api/chat", headers=bearer(token), json={**CHAT_BODY, "model": "claude-3-5-haiku-20241022"})
    assert (r.status_code, r.json()["code"]) == (400, "NO_ELIGIBLE_KEY")
    r = await gw.http.post("/api/chat", headers=bearer(token), json={**CHAT_BODY, "model": "fault-garbage"})
    assert (r.status_code, r.json()["code"]) == (502, "PROVIDER_ERROR")
    r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "slow", "rpm": 1})
    limited = r.json()["token"]
    assert (await gw.http.post("/api/chat", headers=bearer(limited), json=CHAT_BODY)).status_code == 200
    r = await gw.http.post("/api/chat", headers=bearer(limited), json=CHAT_BODY)
    assert (r.status_code, r.json()["code"]) == (429, "RATE_LIMIT_EXCEEDED")


def test_environment_variables_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env={"DATABASE_URL": "postgresql://user:pw@127.0.0.1:5432/llm", "JWT_SECRET": "s3cret",
                                 "REDIS_URL": "redis://127.0.0.1:6379/0", "KEY_SELECTION_STRATEGY": "exhaust-first"})
    assert (cfg.database_url, cfg.secret_key, cfg.redis_url, cfg.strategy) == (
        "postgresql://user:pw@127.0.0.1:5432/llm", "s3cret", "redis://127.0.0.1:6379/0", "exhaust-first")
    assert load_config(None, env={"KEY_SELECTION_STRATEGY": "round-robin"}).strategy == "round-robin"
