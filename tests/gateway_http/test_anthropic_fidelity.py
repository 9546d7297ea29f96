"""Anthropic fidelity (issue 18 point 2), through the official anthropic SDK: on an Anthropic route
/v1/messages arrives as sent (cache_control on any block, thinking, metadata, top_k, server tools,
the anthropic-beta and anthropic-version headers); thinking blocks with their signatures and the
cache usage come back, and the ledger meters the cache tokens. Translated to another provider,
thinking becomes its reasoning control, cache_control is named in X-Tollgate-Ignored, and a
server tool is a 400 naming it: never a silent 200."""

from __future__ import annotations

import inspect

import anthropic
import pytest

from services.catalog.pricing import Catalog
from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway

SYSTEM = [{"type": "text", "text": "You are a careful assistant. " * 20, "cache_control": {"type": "ephemeral"}},
          {"type": "text", "text": "Answer briefly."}]
MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "hello there", "cache_control": {"type": "ephemeral"}}]}]
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}


@pytest.mark.client('anthropic', 'messages with cache_control, thinking, metadata, top_k, server tools, betas; stream with signature_delta; cache usage', 'Anthropic route: the body and anthropic-beta/-version as sent')
async def test_anthropic_route_gets_the_body_and_headers_as_sent(tmp_path):
    async with run_fake_anthropic() as fake:
        cfg = config(tmp_path, providers=(provider("anthropic", fake.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,)),))
        async with run_gateway(cfg) as gw:
            client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=await gw.new_key(), max_retries=0)
            msg = await client.beta.messages.create(
                model="fault-thinking", max_tokens=4000, system=SYSTEM, messages=MESSAGES, extra_body={"top_k": 5},
                thinking={"type": "enabled", "budget_tokens": 2048}, metadata={"user_id": "u-1"},
                tools=[WEB_SEARCH], betas=["interleaved-thinking-2025-05-14"])
            sent = fake.requests[-1]
            assert sent.body["system"] == SYSTEM and sent.body["messages"] == MESSAGES
            assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
            assert (sent.body["top_k"], sent.body["metadata"], sent.body["tools"]) == (5, {"user_id": "u-1"}, [WEB_SEARCH])
            assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
            assert sent.headers["anthropic-version"] == client.default_headers["anthropic-version"]  # the SDK's own
            assert sent.headers["x-api-key"] == FAKE_ANTHROPIC_KEY  # the gateway's key, not the caller's
            assert msg.content[0].type == "thinking" and msg.content[0].signature == "sig_fake_0001"
            # Streamed: thinking_delta and signature_delta arrive as Anthropic sent them.
            kinds = []
            async with client.messages.stream(model="fault-thinking", max_tokens=4000, messages=MESSAGES,
                                              thinking={"type": "enabled", "budget_tokens": 2048}) as stream:
                async for ev in stream:
                    if ev.type == "content_block_delta":
                        kinds.append(ev.delta.type)
                final = await stream.get_final_message()
            assert "thinking_delta" in kinds and "signature_delta" in kinds
            assert final.content[0].signature == "sig_fake_0001"
            # Cache usage comes back and is metered: the ledger's prompt counts cache reads too.
            cached = await client.messages.create(model="fault-cache-read-40", max_tokens=100, system=SYSTEM,
                                                  messages=MESSAGES)
            assert cached.usage.cache_read_input_tokens == 40
            rows = await gw.ledger()
            assert len(rows) == 3 and all(r.provider == "anthropic" and r.status == "ok" for r in rows)
            assert all(r.surface == "anthropic" and not r.estimated for r in rows)
            assert rows[0].prompt_tokens == cached.usage.input_tokens + 40
            # A plain request still takes the translated path (no relay).
            n = len(fake.requests)
            plain = await client.messages.create(model="claude-haiku-4-5", max_tokens=50,
                                                 messages=[{"role": "user", "content": "one two"}])
            assert plain.content[0].text.strip() == "one two" and len(fake.requests) == n + 1


def test_cache_reads_are_priced_as_the_catalogue_says():
    cat = Catalog.builtin()
    model = "claude-sonnet-4-20250514"
    info = cat.get(model)
    assert info.cache_read_per_mtok == pytest.approx(info.prompt_per_mtok * 0.1)
    full = cat.cost(model, 1_000_000, 0)
    assert cat.cost(model, 1_000_000, 0, cache_read=1_000_000) == pytest.approx(full * 0.1)
    assert cat.cost(model, 1_000_000, 0, cache_write=1_000_000) == pytest.approx(full * 1.25)


@pytest.mark.client('anthropic', 'messages with thinking / cache_control / top_k / betas on an OpenAI route; server tool → 400', 'OpenAI route: reasoning_effort; dropped fields named in X-Tollgate-Ignored')
async def test_translated_routes_map_or_say_what_they_drop(tmp_path):
    async with run_fake_openai() as fake:
        async with run_gateway(config(tmp_path, providers=(provider("openai", fake.base_url),))) as gw:
            client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=await gw.new_key(), max_retries=0)
            raw = await client.messages.with_raw_response.create(
                model="gpt-4.1", max_tokens=8000, system=SYSTEM, messages=MESSAGES,
                thinking={"type": "enabled", "budget_tokens": 4000}, extra_body={"top_k": 5},
                extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
            assert raw.headers["X-Tollgate-Ignored"] == "anthropic-beta, cache_control, top_k"
            sent = fake.requests[-1].body
            assert sent["reasoning_effort"] == "medium"  # thinking → OpenAI's reasoning control
            assert "cache_control" not in str(sent) and sent["messages"][0]["role"] == "system"
            with pytest.raises(anthropic.BadRequestError) as e:
                await client.messages.create(model="gpt-4.1", max_tokens=50, messages=MESSAGES, tools=[WEB_SEARCH])
            assert "tools.0.type" in e.value.message and "web_search_20250305" in e.value.message


@pytest.mark.client('anthropic', 'messages.count_tokens', 'Anthropic route: POST /v1/messages/count_tokens as sent (not metered)')
async def test_count_tokens_asks_anthropic_on_an_anthropic_route(tmp_path):
    async with run_fake_anthropic() as fake:
        cfg = config(tmp_path, providers=(provider("anthropic", fake.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,)),))
        async with run_gateway(cfg) as gw:
            client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=await gw.new_key(), max_retries=0)
            raw = await client.messages.with_raw_response.count_tokens(model="claude-haiku-4-5", system=SYSTEM,
                                                                        messages=MESSAGES)
            counted = raw.parse()
            if inspect.isawaitable(counted):  # awaitable in anthropic 2.x, plain in 0.x
                counted = await counted
            sent = fake.requests[-1]
            assert sent.path == "/v1/messages/count_tokens" and sent.body["system"] == SYSTEM
            assert counted.input_tokens == 104  # the fake's own count (words in system and messages), not an estimate
            assert "X-Tollgate-Estimated" not in raw.headers
            assert await gw.ledger() == []  # counting is free: no ledger row, no quota
