"""Issue 16 point 7: gateway-wide provider keys added, disabled and removed by an admin at run time."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway

ADMIN = {"X-Admin-Key": ADMIN_KEY}
RUNTIME_SECRET = "sk-runtime-admin-added-0001"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def chat(gw, key: str):
    return await gw.http.post("/v1/chat/completions", headers=bearer(key),
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


async def test_admin_adds_disables_removes_a_gateway_key_without_restart(tmp_path) -> None:
    async with run_fake_openai() as config_fake, run_fake_openai() as runtime_fake:
        cfg = config(tmp_path, providers=(provider("primary", config_fake.base_url, keys=("sk-config-0001",)),))
        async with run_gateway(cfg) as gw:
            key = await gw.new_key("enterprise")
            assert (await chat(gw, key)).status_code == 200 and len(config_fake.requests) == 1

            listed = (await gw.http.get("/api/admin/provider-keys", headers=ADMIN)).json()
            assert [(k["id"], k["source"]) for k in listed] == [("primary-k1", "config")]
            assert "sk-config" not in str(listed)

            for bad in ({"provider": "nope", "api_key": "x"}, {"provider": "openai"},
                        {"provider": "openai", "api_key": "sk-x", "base_url": "ftp://x"}):
                r = await gw.http.post("/api/admin/provider-keys", headers=ADMIN, json=bad)
                assert r.status_code == 400, (bad, r.text)
            r = await gw.http.post("/api/admin/provider-keys", headers=ADMIN, json={
                "name": "runtime", "provider": "openai", "api_key": RUNTIME_SECRET, "base_url": runtime_fake.base_url,
                "models": ["gpt-4o-mini"]})
            assert r.status_code == 201, r.text
            made = r.json()
            assert made["source"] == "store" and made["mask"] != RUNTIME_SECRET and RUNTIME_SECRET not in r.text

            # Run-time keys win over the config's: the next request goes to the new key, with its secret.
            r = await chat(gw, key)
            assert r.status_code == 200 and r.headers["X-LLM-Key-ID"] == made["id"]
            assert runtime_fake.requests[-1].headers["Authorization"] == f"Bearer {RUNTIME_SECRET}"

            r = await gw.http.patch(f"/api/admin/provider-keys/{made['id']}", headers=ADMIN, json={"disabled": True})
            assert r.status_code == 200 and r.json()["disabled"] is True
            r = await chat(gw, key)
            assert r.status_code == 200 and r.headers["X-LLM-Key-ID"] == "primary-k1"
            await gw.http.patch(f"/api/admin/provider-keys/{made['id']}", headers=ADMIN, json={"disabled": False})
            assert (await chat(gw, key)).headers["X-LLM-Key-ID"] == made["id"]

            assert (await gw.http.delete("/api/admin/provider-keys/primary-k1", headers=ADMIN)).status_code == 404
            assert (await gw.http.delete(f"/api/admin/provider-keys/{made['id']}", headers=ADMIN)).status_code == 204
            assert (await chat(gw, key)).headers["X-LLM-Key-ID"] == "primary-k1"
            kinds = {a["action"] for a in (await gw.http.get("/api/admin/audit", headers=ADMIN)).json()}
            assert {"provider_key.create", "provider_key.update", "provider_key.delete"} <= kinds
            alerts = (await gw.http.get("/api/admin/alerts", headers=ADMIN)).json()
            assert any(a["kind"] == "provider_key_disabled" and a["subject"] == made["id"] for a in alerts)
            # A user cannot manage them.
            r = await gw.http.get("/api/admin/provider-keys", headers=bearer(key))
            assert r.status_code in (401, 403)
