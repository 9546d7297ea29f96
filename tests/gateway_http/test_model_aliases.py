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
