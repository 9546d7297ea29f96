"""POST /v1/completions through the official openai SDK (issue 18 point 4): an OpenAI-shaped or
Ollama route gets the body as sent (suffix for fill-in-the-middle included) and answers unchanged;
another provider is translated to chat (a suffix there is a 400 naming it); streamed too; one
ledger row each, under surface openai_completions."""

from __future__ import annotations

import openai
import pytest

from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.ollama import run_fake_ollama
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway


@pytest.mark.client('openai', 'completions.create (prompt; suffix FIM; stream)', 'OpenAI route /v1/completions, Ollama /v1/completions, as sent')
async def test_openai_and_ollama_routes_get_the_body_as_sent(tmp_path):
    async with run_fake_openai() as oa, run_fake_ollama() as ol:
        cfg = config(tmp_path, providers=(provider("openai", oa.base_url, models=("gpt-3.5-turbo-instruct",)),
                                          provider("ollama", ol.base_url, kind="ollama", keys=("",),
                                                   models=("qwen2.5-coder",))))
        async with run_gateway(cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            done = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say it", max_tokens=3,
                                                   seed=1, logprobs=None)
            assert done.object == "text_completion" and done.choices[0].text == "tok0 tok1 tok2 "
            assert oa.requests[-1].path == "/v1/completions" and oa.requests[-1].body["prompt"] == "say it"
            fim = await client.completions.create(model="qwen2.5-coder", prompt="def add(a, b):\n    return ",
                                                  suffix="\n\nprint(add(1, 2))", max_tokens=20)
            sent = ol.requests[-1]
            assert sent.path == "/v1/completions" and sent.body["suffix"] == "\n\nprint(add(1, 2))"
            assert fim.choices[0].text == "<fill>"
            stream = await client.completions.create(model="qwen2.5-coder", prompt="a b", suffix="c", stream=True)
            assert "".join([c.choices[0].text async for c in stream if c.choices]) == "<fill>"
            rows = await gw.ledger()
            assert len(rows) == 3 and {r.surface for r in rows} == {"openai_completions"}
            assert all(r.status == "ok" and not r.estimated for r in rows)


@pytest.mark.client('openai', 'completions.create on an Anthropic route (suffix → 400)', 'Anthropic route: POST /v1/messages with the prompt as the user turn')
async def test_other_routes_are_translated_to_chat(tmp_path):
    async with run_fake_anthropic() as fake:
        cfg = config(tmp_path, providers=(provider("anthropic", fake.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,)),))
        async with run_gateway(cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            done = await client.completions.create(model="claude-haiku-4-5", prompt="one two three", max_tokens=50)
            assert done.choices[0].text.strip() == "one two three" and done.choices[0].finish_reason == "stop"
            assert fake.requests[-1].body["messages"] == [{"role": "user", "content": "one two three"}]
            assert done.usage.completion_tokens == 3
            stream = await client.completions.create(model="claude-haiku-4-5", prompt="four five", max_tokens=50,
                                                     stream=True)
            assert "".join([c.choices[0].text async for c in stream if c.choices]).strip() == "four five"
            with pytest.raises(openai.BadRequestError) as e:
                await client.completions.create(model="claude-haiku-4-5", prompt="x", suffix="y")
            assert e.value.param == "suffix"
            rows = await gw.ledger()
            assert len(rows) == 2 and all(r.surface == "openai_completions" for r in rows)
