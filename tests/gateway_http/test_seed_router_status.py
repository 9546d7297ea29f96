"""Seed 002's status routes: /, /backend/info, /router/stats, /router/health, /router/rate-limits,
/auth/status, /auth/metrics, POST /auth/reload-keys — called with a normal key as the seed does,
OpenAI-shaped errors, and never a secret in a body."""

from __future__ import annotations

import pytest

from services.config.defaults import DEMO_PROVIDER
from services.config.schema import StaticKey
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway

STATIC = "sk-user1-key-0123456789"
UPSTREAM = "sk-test-upstream"
PUBLIC = ("/", "/backend/info")  # seed 002 shows both without a key (issue 19 point 4)
PROTECTED = ("/router/stats", "/router/health", "/router/rate-limits", "/auth/status", "/auth/metrics")
GETS = PUBLIC + PROTECTED


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


@pytest.fixture
async def gw(tmp_path, fake_openai):
    """primary (rpm 10 per key, two keys) and demo; one static AUTH_KEY_01 as seed 002 configures."""
    cfg = config(tmp_path, providers=(
        provider("primary", fake_openai.base_url, keys=(UPSTREAM, "sk-test-upstream-2"), rpm=10, daily_quota=100),
        DEMO_PROVIDER), static_keys=(StaticKey(id="AUTH_KEY_01", secret=STATIC),))
    async with run_gateway(cfg) as g:
        yield g


async def chat(g, model: str = "tokens-2", via: str = "primary") -> None:
    r = await g.http.post("/v1/chat/completions", headers=bearer(STATIC),
                          json={"model": model, "provider": via, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text


async def test_root_basic_info(gw):
    r = await gw.http.get("/", headers=bearer(STATIC))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["service"] == "tollgate" and body["version"] == "0.1.0"
    assert body["strategy"] == "balanced" and body["services_count"] == 2
    assert body["services"] == [{"name": "primary", "type": "openai", "priority": 0},
                                {"name": "demo", "type": "demo", "priority": 1000}]
    assert body["links"]["router_stats"] == "/router/stats" and body["links"]["models"] == "/v1/models"


async def test_backend_info_has_providers_but_no_keys(gw, fake_openai):
    r = await gw.http.get("/backend/info", headers=bearer(STATIC))
    assert r.status_code == 200
    backends = {b["name"]: b for b in r.json()["backends"]}
    assert backends["primary"] == {"name": "primary", "kind": "openai", "base_url": fake_openai.base_url, "models": [],
                                   "priority": 0, "key_count": 2, "unsupported": backends["primary"]["unsupported"]}
    assert backends["demo"]["models"] == ["demo", "tollgate-demo"] and backends["demo"]["priority"] == 1000


async def test_router_stats_health_and_rate_limits(gw):
    await chat(gw)
    await chat(gw, "demo", via="demo")
    r = await gw.http.get("/router/stats", headers=bearer(STATIC))
    assert r.status_code == 200
    stats = r.json()
    assert stats["strategy"] == "balanced" and stats["total_requests"] >= 2 and stats["failover_count"] == 0
    keys = {s["key_id"]: s for s in stats["services"]}
    assert set(keys) == {"primary-k1", "primary-k2", "demo-k1"}
    assert sum(keys[k]["requests"] for k in ("primary-k1", "primary-k2")) == 1 and keys["demo-k1"]["requests"] == 1
    assert keys["demo-k1"]["provider"] == "demo" and keys["demo-k1"]["failures"] == 0

    r = await gw.http.get("/router/health", headers=bearer(STATIC))
    health = r.json()
    assert (health["overall_status"], health["available_services"], health["total_services"]) == ("healthy", 3, 3)
    assert all(s["breaker"] == "closed" and s["available"] for s in health["services"])

    r = await gw.http.get("/router/rate-limits", headers=bearer(STATIC))
    limits = {s["key_id"]: s for s in r.json()["rate_limiting"]}
    used = sum(limits[k]["rpm"]["used"] for k in ("primary-k1", "primary-k2"))
    assert used == 1
    for k in ("primary-k1", "primary-k2"):
        rpm, daily = limits[k]["rpm"], limits[k]["daily"]
        assert rpm["limit"] == 10 and rpm["remaining"] == 10 - rpm["used"]
        assert daily["limit"] == 100 and daily["remaining"] == 100 - daily["used"]
    assert limits["demo-k1"]["rpm"] == {"used": 0, "limit": None, "remaining": None}
    assert isinstance(r.json()["current_time"], float)


async def test_router_health_reports_an_open_breaker(gw):
    for _ in range(3):
        r = await gw.http.post("/v1/chat/completions", headers=bearer(STATIC),
                               json={"model": "fault-503", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 503
    stats = (await gw.http.get("/router/stats", headers=bearer(STATIC))).json()
    assert sum(s["failures"] for s in stats["services"]) >= 5
    health = (await gw.http.get("/router/health", headers=bearer(STATIC))).json()
    primary = [s for s in health["services"] if s["provider"] == "primary"]
    assert any(s["breaker"] == "open" and not s["available"] for s in primary)
    assert health["overall_status"] == "degraded"


async def test_auth_status_metrics_and_reload(gw, monkeypatch):
    await chat(gw)
    r = await gw.http.get("/auth/status", headers=bearer(STATIC))
    assert r.status_code == 200
    status = r.json()
    assert (status["enabled"], status["static_keys"], status["system_status"]) == (True, 1, "active")
    assert status["valid_keys_count"] == status["static_keys"] + status["api_keys"]
    r = await gw.http.get("/auth/metrics", headers=bearer(STATIC))
    m = r.json()
    assert m["successful_requests"] >= 2 and m["total_requests"] == m["successful_requests"] + m["failed_requests"]
    (k,) = m["keys"]
    assert k["key_id"] == "AUTH_KEY_01" and k["successes"] >= 2 and k["last_used_at"].endswith("Z")
    # Seed 002's reload re-reads AUTH_KEY / AUTH_KEY_01..99 from the environment.
    monkeypatch.setenv("AUTH_KEY_01", STATIC)
    monkeypatch.setenv("AUTH_KEY_02", "sk-user2-key-0123456789")
    r = await gw.http.post("/auth/reload-keys", headers=bearer(STATIC))
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["static_keys"]) == ("success", 2)
    assert body["valid_keys_count"] == body["static_keys"] + body["api_keys"]
    assert (await gw.http.get("/auth/status", headers=bearer("sk-user2-key-0123456789"))).json()["static_keys"] == 2


async def test_failed_auth_is_counted(gw):
    await gw.http.get("/auth/status", headers=bearer("sk-wrong"))
    m = (await gw.http.get("/auth/metrics", headers=bearer(STATIC))).json()
    assert m["failed_requests"] >= 1 and m["success_rate"] < 1


@pytest.mark.parametrize("path", GETS)
async def test_no_secret_in_any_status_body(gw, path):
    await chat(gw)
    for h in (bearer(STATIC), {"X-Admin-Key": ADMIN_KEY}):
        r = await gw.http.get(path, headers=h)
        assert r.status_code == 200, r.text
        for secret in (UPSTREAM, STATIC, ADMIN_KEY, STATIC[:8] + STATIC[8:16]):
            assert secret not in r.text


@pytest.mark.parametrize("method,path", [*(("GET", p) for p in PROTECTED), ("POST", "/auth/reload-keys")])
async def test_errors_are_openai_shaped(gw, method, path):
    r = await gw.http.request(method, path)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["type"] == "authentication_error" and err["message"]
    r = await gw.http.request(method, path, headers=bearer("sk-not-a-key"))
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("path", PUBLIC)
async def test_root_and_backend_info_need_no_key_and_show_nothing_secret(tmp_path, path):
    """Issue 19 point 4: seed 002's `curl "http://localhost:8000/"` has no key; a base URL's
    credentials (user:password@, ?key=) never reach the page, nor any key or key id."""
    leaky = provider("leaky", "https://svc-user:svc-pass-123@llm.example.com:8443/v1?key=url-secret-456",
                     keys=(UPSTREAM,))
    async with run_gateway(config(tmp_path, providers=(leaky, DEMO_PROVIDER))) as g:
        for headers in ({}, bearer("sk-not-a-key")):
            r = await g.http.get(path, headers=headers)
            assert r.status_code == 200, r.text
            for secret in ("svc-user", "svc-pass-123", "url-secret-456", UPSTREAM, "leaky-k1", ADMIN_KEY):
                assert secret not in r.text, secret
        if path == "/backend/info":
            assert {b["name"]: b["base_url"] for b in r.json()["backends"]}["leaky"] == "https://llm.example.com:8443/v1"
        else:
            assert r.json()["services_count"] == 2 and r.json()["strategy"] == "balanced"


async def test_with_auth_disabled_no_key_is_needed(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), enable_auth=False)
    async with run_gateway(cfg) as g:
        for path in GETS:
            r = await g.http.get(path)
            assert r.status_code == 200, (path, r.text)
        assert (await g.http.get("/auth/status")).json()["enabled"] is False
