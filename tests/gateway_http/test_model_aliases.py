"""Model aliases and fallback groups (issue 18 point 6): "smart" names an ordered list of models
across providers; a request for it fails over from one to the next under the same rules as between
keys (a 503 moves on, a caller's 400 does not), and /v1/models lists it."""

from __future__ import annotations

import openai
import pytest

from services.config.load import load_config
from services.config.schema import ConfigError
from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway


@pytest.mark.client("openai", "chat.completions with model \"smart\" (an alias: anthropic → openai)",
                    "Anthropic first; on its 503, OpenAI (failover as between keys)")
async def test_an_alias_fails_over_across_providers_in_order(tmp_path):
    async with run_fake_anthropic() as anth, run_fake_openai() as oa:
        cfg = config(tmp_path, providers=(
            provider("anthropic", anth.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,)),
            provider("openai", oa.base_url)),
            model_aliases=(("smart", ("anthropic/claude-haiku-4-5", "openai/gpt-4.1")),
                           ("flaky", ("anthropic/fault-503", "openai/gpt-4.1")),
                           ("strict", ("anthropic/fault-400", "openai/gpt-4.1"))))
        async with run_gateway(cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            first = await client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": "hi there"}])
            assert first.headers["X-LLM-Provider"] == "anthropic" and not oa.requests
            second = await client.chat.completions.with_raw_response.create(
                model="flaky", messages=[{"role": "user", "content": "hi there"}])
            assert second.headers["X-LLM-Provider"] == "openai" and oa.requests[-1].body["model"] == "gpt-4.1"
            assert "anthropic" in second.headers["X-Tollgate-Route"]  # the failed try is on record
            with pytest.raises(openai.BadRequestError):  # the caller's error: no failover
                await client.chat.completions.create(model="strict", messages=[{"role": "user", "content": "x"}])
            assert len(oa.requests) == 1
            ids = [m.id async for m in client.models.list()]
            assert {"smart", "flaky", "strict"} <= set(ids)
            rows = await gw.ledger()
            assert [r.provider for r in rows if r.status == "ok"] == ["openai", "anthropic"]  # newest first


def test_aliases_from_toml_and_env(tmp_path):
    toml = tmp_path / "tollgate.toml"
    toml.write_text('[model_aliases]\nsmart = ["anthropic/claude-sonnet-4-6", "openai/gpt-4.1"]\n')
    cfg = load_config(str(toml), env={})
    assert cfg.model_aliases == (("smart", ("anthropic/claude-sonnet-4-6", "openai/gpt-4.1")),)
    cfg = load_config(None, env={"TOLLGATE_MODEL_ALIASES": '{"fast": ["gpt-4o-mini"]}'})
    assert cfg.model_aliases == (("fast", ("gpt-4o-mini",)),)
    toml.write_text('[model_aliases]\nsmart = []\n')
    with pytest.raises(ConfigError, match="model_aliases.smart"):
        load_config(str(toml), env={})


@pytest.mark.client("openai", "chat.completions with an alias added at run time (PUT /api/admin/aliases/{name})",
                    "effective on every replica without restart; fails over in order; DELETE → 404")
async def test_an_alias_added_at_run_time_fails_over_without_restart(tmp_path):
    import asyncio

    from tests.support.gateway import ADMIN_KEY

    async with run_fake_anthropic() as anth, run_fake_openai() as oa:
        cfg = config(tmp_path, providers=(
            provider("anthropic", anth.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,),
                     models=("fault-503", "claude-haiku-4-5")),
            provider("openai", oa.base_url, models=("gpt-4.1",))))  # allow-lists: an unknown name is a 404
        async with run_gateway(cfg) as gw, run_gateway(cfg) as other:  # two replicas, one store
            admin = {"X-Admin-Key": ADMIN_KEY}
            key = await gw.new_key()
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
            other_client = openai.AsyncOpenAI(base_url=other.url + "/v1", api_key=key, max_retries=0)
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "x"}])
            # an unknown member: 400 naming it; a user key: 403
            r = await gw.http.put("/api/admin/aliases/smart", headers=admin,
                                  json={"models": ["anthropic/fault-503", "nosuch-model-xyz"]})
            assert r.status_code == 400 and "nosuch-model-xyz" in r.text, r.text
            r = await gw.http.put("/api/admin/aliases/smart", headers={"Authorization": f"Bearer {key}"},
                                  json={"models": ["openai/gpt-4.1"]})
            assert r.status_code == 403, r.text
            r = await gw.http.put("/api/admin/aliases/smart", headers=admin,
                                  json={"models": ["anthropic/fault-503", "openai/gpt-4.1"]})
            assert r.status_code == 200 and r.json() == {"name": "smart", "source": "runtime",
                                                         "models": ["anthropic/fault-503", "openai/gpt-4.1"]}
            got = await client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": "hi there"}])
            assert got.headers["X-LLM-Provider"] == "openai" and oa.requests[-1].body["model"] == "gpt-4.1"
            assert "anthropic" in got.headers["X-Tollgate-Route"]  # the 503 first, then the next member
            assert "smart" in [m.id async for m in client.models.list()]
            # the other replica: within a few seconds, no restart
            for _ in range(50):
                if "smart" in [m.id async for m in other_client.models.list()]:
                    break
                await asyncio.sleep(0.1)
            got = await other_client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": "hi there"}])
            assert got.headers["X-LLM-Provider"] == "openai"
            listed = (await other.http.get("/api/admin/aliases", headers=admin)).json()["aliases"]
            assert [a["name"] for a in listed] == ["smart"]
            audited = await gw.app.store.list_audit(action="model_alias.set")
            assert [a.target for a in audited[0]] == ["smart"] and audited[1] == 1
            # remove: 404 for the alias from then on, here and on the other replica
            r = await gw.http.delete("/api/admin/aliases/smart", headers=admin)
            assert r.status_code == 200
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "x"}])
            for _ in range(50):
                if "smart" not in [m.id async for m in other_client.models.list()]:
                    break
                await asyncio.sleep(0.1)
            with pytest.raises(openai.NotFoundError):
                await other_client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "x"}])
            assert (await gw.http.delete("/api/admin/aliases/smart", headers=admin)).status_code == 404
