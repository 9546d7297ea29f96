"""RELIABILITY A9 (Failover Bench S10, S11) and E3 through the whole gateway, read by the official openai SDK.

The primary is the Failover Bench wall (tests/support/fakes/wall.py): `fb-s10` streams the
60-token answer with a truncated-JSON event after its ninth token, `fb-s11` the whole answer,
finish chunk and usage, then ends without `data: [DONE]`. Both are answered in place: the
caller gets the whole answer and one clean end, the fallback is never asked, and the ledger row
is `ok` with the provider's own usage.

The same two faults in the Anthropic, Gemini and Ollama wire formats (their fakes in
tests/support/fakes/, echoing a 60-word prompt): S10 is a truncated-JSON event (an NDJSON line
for Ollama) after the ninth token; S11 is the provider's own finish signal, then a clean end
without what usually follows it: Anthropic's message_delta (stop_reason, usage) with no
message_stop; Gemini's and Ollama's final event (finishReason / "done": true, with usage) without
its closing blank line or newline (neither has an end marker after it).
"""

from __future__ import annotations

import openai
import pytest

from tests.support.fakes.native import NATIVE_FAKES
from tests.support.fakes.wall import CANONICAL, TOKENS, run_wall
from tests.support.gateway import config, provider, run_gateway

MODELS = ("fb-s10", "fb-s11")
NATIVE = {  # (kind, scenario) -> the fake's model name for that fault
    ("anthropic", "S10"): "fault-glitch-after-9", ("anthropic", "S11"): "fault-no-stop",
    ("gemini", "S10"): "fault-glitch-after-9", ("gemini", "S11"): "fault-unterminated",
    ("ollama", "S10"): "fault-glitch-after-9", ("ollama", "S11"): "fault-unterminated",
}
WORDS = " ".join(f"w{i}" for i in range(60))  # the fakes echo it, one word per token


@pytest.mark.parametrize("model", MODELS)
async def test_the_answer_arrives_whole_from_the_primary(tmp_path, model):
    async with run_wall() as wall:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", wall.base_url + "/primary/v1", keys=("sk-wall-primary",), models=MODELS),
            provider("fallback", wall.base_url + "/fallback/v1", keys=("sk-wall-fallback",), models=MODELS,
                     priority=10)))
        async with run_gateway(cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "sixty words"}], stream=True,
                stream_options={"include_usage": True})
            text, finishes, usage = "", [], None
            async for chunk in raw.parse():  # the SDK raises on an in-band error event
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    if choice.finish_reason:
                        finishes.append(choice.finish_reason)
                if chunk.usage:
                    usage = chunk.usage
            assert text == CANONICAL
            assert finishes == ["stop"]
            assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (20, len(TOKENS))
            assert raw.headers["x-llm-provider"] == "primary"
            assert (len(wall.of(model, "primary")), len(wall.of(model, "fallback"))) == (1, 0)
            rows = await gw.ledger()
            assert [(r.status, r.provider, r.completion_tokens, r.estimated) for r in rows] == \
                [("ok", "primary", len(TOKENS), False)]


async def read_sdk_stream(client: openai.AsyncOpenAI, model: str, text: str):
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], stream=True,
        stream_options={"include_usage": True})
    answer, finishes, usage = "", [], None
    async for chunk in raw.parse():  # the SDK raises on an in-band error event
        for choice in chunk.choices:
            answer += choice.delta.content or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
        if chunk.usage:
            usage = chunk.usage
    return raw, answer, finishes, usage


def chat_posts(fake) -> list:
    return [r for r in fake.requests if r.method == "POST"]


@pytest.mark.parametrize("kind,scenario", list(NATIVE), ids=[f"{k}-{s}" for k, s in NATIVE])
async def test_the_answer_arrives_whole_from_a_native_primary(tmp_path, kind, scenario):
    model = NATIVE[kind, scenario]
    run, key = NATIVE_FAKES[kind]
    async with run() as primary, run() as fallback:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", primary.base_url, kind=kind, keys=(key,), models=(model,)),
            provider("fallback", fallback.base_url, kind=kind, keys=(key,), models=(model,), priority=10)))
        async with run_gateway(cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            raw, answer, finishes, usage = await read_sdk_stream(client, model, WORDS)
            assert answer.strip() == WORDS
            assert finishes == ["stop"]
            assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (60, 60)
            assert raw.headers["x-llm-provider"] == "primary"
            assert (len(chat_posts(primary)), len(chat_posts(fallback))) == (1, 0)
            rows = await gw.ledger()
            assert [(r.status, r.provider, r.completion_tokens, r.estimated) for r in rows] == \
                [("ok", "primary", 60, False)]
