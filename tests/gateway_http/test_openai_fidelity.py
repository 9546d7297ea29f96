"""OpenAI fidelity (issue 18 point 3): fields the gateway does not interpret reach an OpenAI-shaped
route as sent (reasoning_effort, max_completion_tokens not rewritten, n, logprobs, seed,
service_tier, prediction, ...) and its answer comes back unchanged; other routes map them, refuse
them by name (400), or name them in X-Tollgate-Ignored. Never one choice for n=2, never a silent 200."""

from __future__ import annotations

import openai
import pytest

from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway

HI = [{"role": "user", "content": "hello there"}]


@pytest.mark.client('openai', 'chat.completions reasoning_effort, max_completion_tokens, n=2, logprobs, seed, service_tier, prediction', 'OpenAI route: the body as sent (max_completion_tokens not rewritten), answer unchanged')
async def test_openai_route_gets_every_field_as_sent(tmp_path):
    async with run_fake_openai() as fake:
        async with run_gateway(config(tmp_path, providers=(provider("openai", fake.base_url),))) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            fields = dict(reasoning_effort="high", max_completion_tokens=5, n=2, logprobs=True, top_logprobs=2,
                          seed=7, service_tier="flex", prediction={"type": "content", "content": "tok0"},
                          modalities=["text"], metadata={"a": "b"}, store=False)
            resp = await client.chat.completions.create(model="gpt-5", messages=HI, **fields)
            sent = fake.requests[-1].body
            assert all(sent[k] == v for k, v in fields.items()), sent
            assert "max_tokens" not in sent  # not rewritten: reasoning models refuse max_tokens
            assert resp.id.startswith("chatcmpl-fake")  # OpenAI's own answer, unchanged
            rows = await gw.ledger()
            assert len(rows) == 1 and rows[0].surface == "openai" and rows[0].provider == "openai"
            assert (rows[0].prompt_tokens, rows[0].completion_tokens, rows[0].estimated) == (7, 5, False)
            # Streamed: relayed as the provider sends it, metered from its usage.
            stream = await client.chat.completions.create(model="gpt-5", messages=HI, stream=True,
                                                          reasoning_effort="low", max_completion_tokens=3)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "tok0 tok1 tok2 "
            sent = fake.requests[-1].body
            assert sent["reasoning_effort"] == "low" and sent["max_completion_tokens"] == 3 and "max_tokens" not in sent
            rows = await gw.ledger()
            assert len(rows) == 2 and (rows[0].completion_tokens, rows[0].estimated) == (3, False)
            # A plain request still goes the translated way (max_tokens as the caller named it).
            await client.chat.completions.create(model="gpt-5", messages=HI, max_tokens=2)
            assert fake.requests[-1].body["max_tokens"] == 2


@pytest.mark.client('openai', 'chat.completions n=2 / logprobs / audio on an Anthropic route → 400; reasoning_effort mapped', 'Anthropic route: thinking.budget_tokens; advisory fields named in X-Tollgate-Ignored')
async def test_other_routes_refuse_map_or_name_what_they_cannot_honour(tmp_path):
    async with run_fake_anthropic() as fake:
        cfg = config(tmp_path, providers=(provider("anthropic", fake.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,)),))
        async with run_gateway(cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            model = "claude-haiku-4-5"
            for name, value in (("n", 2), ("logprobs", True), ("audio", {"voice": "alloy", "format": "wav"})):
                with pytest.raises(openai.BadRequestError) as e:
                    await client.chat.completions.create(model=model, messages=HI, extra_body={name: value})
                assert e.value.param == name and name in e.value.message
            assert not fake.requests  # refused before any upstream call
            # n=1 asks for nothing more: fine. Advisory fields are dropped and said so.
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=HI, n=1, max_completion_tokens=50, service_tier="flex", metadata={"a": "b"})
            assert raw.headers["X-Tollgate-Ignored"] == "metadata, service_tier"
            assert fake.requests[-1].body["max_tokens"] == 50
            # reasoning_effort becomes Anthropic's thinking budget.
            await client.chat.completions.create(model=model, messages=HI, reasoning_effort="medium", max_completion_tokens=8000)
            sent = fake.requests[-1].body
            assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
