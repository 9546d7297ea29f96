"""Issue 16 point 6: an audit row for every admin action; alerts listed and sent to signed webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest
from aiohttp import web

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway

PASSWORD = "correct horse battery"
ADMIN = {"X-Admin-Key": ADMIN_KEY}
SECRET = "whsec-test-0123456789"
SMALL = TierConfig("small", rpm=1000, rpd=5, budget_usd_day=0.01)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def hook():
    """A webhook receiver that fails its first two deliveries (the sender must retry)."""
    got: list[tuple[bytes, dict]] = []
    calls = {"n": 0}

    async def receive(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return web.Response(status=503)
        got.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", got, calls
    finally:
        await runner.cleanup()


@pytest.fixture
async def gw(tmp_path, fake_openai, hook):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), tiers=DEFAULT_TIERS + (SMALL,),
                 alert_webhooks=(hook[0],), alert_webhook_secret=SECRET, breaker_threshold=2)
    async with run_gateway(cfg) as g:
        g.app.alerts.backoff_s = 0.05
        yield g


async def wait_for(pred, timeout: float = 5.0):
    for _ in range(int(timeout / 0.05)):
        if await pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_every_admin_action_is_audited_without_secrets(gw) -> None:
    r = await gw.http.post("/api/admin/users", headers={**ADMIN, "User-Agent": "t"},
                           json={"email": "ann@example.com", "plan": "startup", "password": PASSWORD})
    uid = r.json()["user"]["id"]
    await gw.http.patch(f"/api/admin/users/{uid}", headers=ADMIN, json={"plan": "growth"})
    await gw.http.patch(f"/api/admin/users/{uid}", headers=ADMIN, json={"plan": "nope"})  # refused: no row
    await gw.http.delete(f"/api/admin/users/{uid}/sessions", headers=ADMIN)
    key = (await gw.http.post("/api/admin/keys", headers=ADMIN, json={"name": "c", "tier": "basic"})).json()
    await gw.http.delete(f"/api/admin/keys/{key['id']}", headers=ADMIN)
    await gw.http.put("/api/admin/registration", headers=ADMIN, json={"open": True})
    await gw.http.delete(f"/api/admin/users/{uid}", headers=ADMIN)
    rows = (await gw.http.get("/api/admin/audit", headers=ADMIN)).json()
    assert [x["action"] for x in rows] == ["user.delete", "registration.set", "api_key.revoke", "api_key.create",
                                           "user.sessions.revoke", "user.update", "user.create"]
    assert all(x["actor"] == "operator" and x["ip"] == "127.0.0.1" and x["created_at"] for x in rows)
    upd = rows[5]
    assert upd["target"] == uid and upd["before"]["plan"] == "startup" and upd["after"]["plan"] == "growth"
    text = json.dumps(rows)
    assert PASSWORD not in text and key["key"] not in text and ADMIN_KEY not in text
    only = (await gw.http.get("/api/admin/audit", headers=ADMIN, params={"action": "user.update"})).json()
    assert [x["id"] for x in only] == [upd["id"]]
    assert (await gw.http.get("/api/admin/audit", headers=ADMIN, params={"limit": 2, "offset": 1})).json()[0]["id"] == rows[1]["id"]
    assert (await gw.http.get("/api/admin/audit", headers=ADMIN, params={"since": "x"})).status_code == 400


async def test_budget_and_quota_alerts_once_per_period_signed_and_retried(gw, hook) -> None:
    url, got, calls = hook
    r = await gw.http.post("/api/admin/users", headers=ADMIN, json={"email": "ann@example.com", "plan": "small",
                                                                     "password": PASSWORD})
    session = (await gw.http.post("/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD})).json()["token"]
    key = (await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "t"})).json()["key"]
    # 0.01 USD a day; each request may cost up to 10,000 x $0.6/Mtok = $0.006: the first passes 80 % held.
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 14_000}
    for _ in range(5):  # rpd 5: the 4th is at 80 %, the 5th at 100 %
        assert (await gw.http.post("/v1/chat/completions", headers=bearer(key), json=body)).status_code == 200

    async def kinds() -> list[str]:
        return sorted(a["kind"] for a in (await gw.http.get("/api/admin/alerts", headers=ADMIN)).json())

    await wait_for(lambda: _eq(kinds(), ["budget_threshold", "quota_100", "quota_80"]))
    await wait_for(lambda: _true(len(got) == 3))
    for raw, headers in got:
        want = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert headers["X-Tollgate-Signature"] == want
        assert json.loads(raw)["kind"] == headers["X-Tollgate-Alert"]
    assert calls["n"] == 5  # two refused deliveries were retried
    alerts = (await gw.http.get("/api/admin/alerts", headers=ADMIN)).json()
    assert all(a["delivered"] for a in alerts) and all(key not in a["message"] for a in alerts)


async def _eq(coro, want) -> bool:
    return (await coro) == want


async def _true(v: bool) -> bool:
    return v


async def alert_kinds(gw) -> set[str]:
    return {a["kind"] for a in (await gw.http.get("/api/admin/alerts", headers=ADMIN)).json()}


async def test_provider_key_disabled_alert(gw) -> None:
    key = await gw.new_key("enterprise")
    r = await gw.http.post("/v1/chat/completions", headers=bearer(key),
                           json={"model": "fault-401", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502
    await wait_for(lambda: _true_async(alert_kinds(gw), "provider_key_disabled"))
    alert = next(a for a in (await gw.http.get("/api/admin/alerts", headers=ADMIN)).json())
    assert alert["subject"] == "primary-k1" and "sk-test-upstream" not in alert["message"]


async def test_breaker_open_alert(gw) -> None:
    key = await gw.new_key("enterprise")
    for _ in range(3):  # breaker_threshold = 2 consecutive failures of the one key
        r = await gw.http.post("/v1/chat/completions", headers=bearer(key),
                               json={"model": "fault-503", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code in (502, 503)
    await wait_for(lambda: _true_async(alert_kinds(gw), "breaker_open"))


async def _true_async(coro, member) -> bool:
    return member in await coro
