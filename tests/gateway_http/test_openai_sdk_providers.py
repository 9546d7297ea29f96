"""The official openai SDK against models served by Anthropic, Gemini and Ollama (their wire-faithful
fakes): the same OpenAI surface whatever the provider — plain, system + multi-turn, streams with
usage, tools, and errors (issue 5's translation matrix from the OpenAI side)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import openai
import pytest

from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.gemini import DEFAULT_KEY as GEMINI_KEY, run_fake_gemini
from tests.support.fakes.ollama import run_fake_ollama
from tests.support.gateway import config, provider, run_gateway

MODELS = {"anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash", "ollama": "llama3.2"}
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "look up",
                                            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}]


@asynccontextmanager
async def served_by(kind: str, tmp_path):
    fakes = {"anthropic": (run_fake_anthropic, FAKE_ANTHROPIC_KEY), "gemini": (run_fake_gemini, GEMINI_KEY),
             "ollama": (run_fake_ollama, "")}
    run, key = fakes[kind]
    async with run() as fake:
        cfg = config(tmp_path, providers=(provider(kind, fake.base_url, kind=kind, keys=(key,) if key else ("",)),))
        async with run_gateway(cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            yield gw, fake, client


def last_body(fake) -> dict:
    return fake.requests[-1].body


@pytest.mark.parametrize("kind", list(MODELS))
async def test_plain_system_and_multi_turn(kind, tmp_path):
    async with served_by(kind, tmp_path) as (gw, fake, client):
        resp = await client.chat.completions.create(model=MODELS[kind], messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "hello from the sdk"}])
        assert resp.choices[0].message.content.strip() == "hello from the sdk"
        assert resp.choices[0].finish_reason == "stop"
        assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == 4
        sent = last_body(fake)
        if kind == "anthropic":
            assert "be brief" in json.dumps(sent["system"]) and [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
        elif kind == "gemini":
            assert "be brief" in json.dumps(sent["systemInstruction"])
            assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
        else:
            assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
        rows = await gw.ledger()
        assert rows[0].provider == kind and rows[0].status == "ok" and not rows[0].estimated


@pytest.mark.parametrize("kind", list(MODELS))
async def test_stream_with_usage(kind, tmp_path):
    async with served_by(kind, tmp_path) as (gw, fake, client):
        stream = await client.chat.completions.create(
            model=MODELS[kind], messages=[{"role": "user", "content": "one two three four five"}],
            stream=True, stream_options={"include_usage": True})
        text, usage, finish = "", None, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            usage = chunk.usage or usage
        assert text.strip() == "one two three four five"
        assert finish == "stop"
        assert usage is not None and usage.completion_tokens == 5


@pytest.mark.parametrize("kind", list(MODELS))
async def test_tool_call_comes_back_in_openai_shape(kind, tmp_path):
    async with served_by(kind, tmp_path) as (gw, fake, client):
        resp = await client.chat.completions.create(
            model="fault-tool", messages=[{"role": "user", "content": "use the tool"}], tools=TOOLS)
        calls = resp.choices[0].message.tool_calls
        assert resp.choices[0].finish_reason == "tool_calls"
        assert calls and calls[0].function.name == "lookup" and json.loads(calls[0].function.arguments) == {"x": 1}
        sent = json.dumps(last_body(fake))
        assert "lookup" in sent  # the tool was translated into the provider's own shape


@pytest.mark.parametrize("kind", list(MODELS))
async def test_upstream_errors_keep_their_meaning(kind, tmp_path):
    async with served_by(kind, tmp_path) as (gw, fake, client):
        with pytest.raises(openai.BadRequestError) as e:
            await client.chat.completions.create(model="fault-400", messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 400
        with pytest.raises(openai.APIStatusError) as e:
            await client.chat.completions.create(model="fault-503", messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 503
        assert e.value.response.headers["x-should-retry"] == "false"
