"""OpenAI's Responses API through the official openai SDK, served by non-OpenAI providers (their
wire-faithful fakes): plain, streamed (the SDK's own stream accumulator checks the event
sequence and item identities), a function-call loop continued by previous_response_id, stored
responses per caller (GET/DELETE, another caller's is 404), two replicas sharing one PostgreSQL,
and Codex's WebSocket attempt refused at once."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

import httpx
import openai
import pytest

from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.ollama import run_fake_ollama
from tests.support.gateway import config, provider, run_gateway
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)

MODEL = "claude-haiku-4-5"
TOOLS = [{"type": "function", "name": "lookup", "description": "look up",
          "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}]


@asynccontextmanager
async def anthropic_gateway(tmp_path, **cfg):
    async with run_fake_anthropic() as fake:
        c = config(tmp_path, providers=(provider("anthropic", fake.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,)),), **cfg)
        async with run_gateway(c) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            yield gw, fake, client


@pytest.mark.client('openai', 'responses.create (instructions, input string)', 'Anthropic route: POST /v1/messages, instructions as system, max_output_tokens as max_tokens')
async def test_plain_create_is_translated_and_metered_like_chat(tmp_path):
    async with anthropic_gateway(tmp_path) as (gw, fake, client):
        resp = await client.responses.create(model=MODEL, instructions="be brief", input="hello from responses",
                                             max_output_tokens=50, temperature=0.5)
        assert resp.object == "response" and resp.status == "completed" and resp.id.startswith("resp_")
        assert resp.output_text.strip() == "hello from responses"
        assert resp.output[0].type == "message" and resp.output[0].role == "assistant"
        assert resp.usage.output_tokens == 3 and resp.usage.input_tokens > 0
        assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
        assert resp.instructions == "be brief" and resp.max_output_tokens == 50
        sent = fake.requests[-1].body
        assert sent["system"] == "be brief" or "be brief" in json.dumps(sent["system"])
        assert sent["messages"] == [{"role": "user", "content": "hello from responses"}] or \
            sent["messages"][0]["role"] == "user"
        assert sent["max_tokens"] == 50 and sent["temperature"] == 0.5
        rows = await gw.ledger()
        assert len(rows) == 1
        row = rows[0]
        assert (row.surface, row.provider, row.status, row.estimated) == ("openai_responses", "anthropic", "ok", False)
        assert (row.prompt_tokens, row.completion_tokens) == (resp.usage.input_tokens, resp.usage.output_tokens)
        assert row.request_id.removeprefix("req_") == resp.id.removeprefix("resp_")


@pytest.mark.client('openai', 'responses.stream / create(stream=True): event sequence', 'Anthropic route: POST /v1/messages stream=true; events rendered by the gateway')
async def test_streamed_events_in_the_real_order(tmp_path):
    async with anthropic_gateway(tmp_path) as (gw, fake, client):
        types, deltas = [], []
        async with client.responses.stream(model=MODEL, input="one two three four") as stream:
            async for ev in stream:
                types.append(ev.type)
                if ev.type == "response.output_text.delta":
                    deltas.append(ev.delta)
            final = await stream.get_final_response()
        assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                             "response.content_part.added"]
        assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                              "response.completed"]
        assert len(deltas) == 4 and "".join(deltas).strip() == "one two three four"
        assert final.output_text.strip() == "one two three four" and final.usage.output_tokens == 4
        # The raw stream: sequence numbers count from 0 without a gap, the SSE event names match.
        raw = await client.responses.create(model=MODEL, input="a b", stream=True)
        seq = [ev.sequence_number async for ev in raw]
        assert seq == list(range(len(seq)))
        rows = await gw.ledger()
        assert len(rows) == 2 and all(r.status == "ok" and not r.estimated for r in rows)


@pytest.mark.client('openai', 'responses: function_call → function_call_output loop via previous_response_id', "Anthropic route: tool_use / tool_result blocks, history from the gateway's store")
async def test_function_call_loop_with_previous_response_id(tmp_path):
    async with anthropic_gateway(tmp_path) as (gw, fake, client):
        first = await client.responses.create(model="fault-tool", input="use the tool", tools=TOOLS)
        calls = [o for o in first.output if o.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "lookup" and json.loads(calls[0].arguments) == {"x": 1}
        assert fake.requests[-1].body["tools"][0]["name"] == "lookup"
        second = await client.responses.create(
            model=MODEL, previous_response_id=first.id, tools=TOOLS,
            input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "the answer is 42"}])
        assert second.previous_response_id == first.id and second.status == "completed"
        sent = fake.requests[-1].body["messages"]
        # The whole turn reached Anthropic: user text, the assistant's tool_use, the tool_result for it.
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        tool_use = [b for b in sent[1]["content"] if b["type"] == "tool_use"][0]
        result = [b for b in sent[2]["content"] if b["type"] == "tool_result"][0]
        assert tool_use["id"] == calls[0].call_id == result["tool_use_id"]
        assert "42" in second.output_text
        # Streamed, the call arrives as function_call_arguments deltas and a done event.
        types = []
        async with client.responses.stream(model="fault-tool", input="again", tools=TOOLS) as stream:
            async for ev in stream:
                types.append(ev.type)
            final = await stream.get_final_response()
        assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
        assert [o.type for o in final.output][-1] == "function_call"


@pytest.mark.client('openai', 'responses.retrieve / delete (own 200, other caller 404); hosted tool on a chat route → 400', "nothing for GET/DELETE (gateway's store)")
async def test_stored_responses_belong_to_their_caller(tmp_path):
    async with anthropic_gateway(tmp_path) as (gw, fake, client):
        resp = await client.responses.create(model=MODEL, input="remember me")
        got = await client.responses.retrieve(resp.id)
        assert got.id == resp.id and got.output_text == resp.output_text
        other = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(name="other"), max_retries=0)
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(resp.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.delete(resp.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.create(model=MODEL, input="x", previous_response_id=resp.id)
        unstored = await client.responses.create(model=MODEL, input="forget me", store=False)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(unstored.id)
        await client.responses.delete(resp.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(resp.id)
        # Hosted tools have no chat equivalent: refused by name, not dropped.
        with pytest.raises(openai.BadRequestError) as e:
            await client.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
        assert "web_search" in e.value.message and e.value.param == "tools[0].type"


async def test_stored_responses_expire_and_are_bounded(tmp_path):
    async with anthropic_gateway(tmp_path, responses_max_per_caller=2) as (gw, fake, client):
        ids = [(await client.responses.create(model=MODEL, input=f"turn {i}")).id for i in range(3)]
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(ids[0])  # the oldest went when the third came
        assert (await client.responses.retrieve(ids[2])).id == ids[2]
    async with anthropic_gateway(tmp_path / "b", responses_ttl_s=0.2) as (gw, fake, client):
        rid = (await client.responses.create(model=MODEL, input="brief")).id
        await asyncio.sleep(0.3)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(rid)


@pytest.mark.client('openai', 'responses text.format json_schema', 'Ollama route: /api/chat with format = the schema')
async def test_json_schema_and_reasoning_reach_ollama(tmp_path):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    async with run_fake_ollama() as fake:
        c = config(tmp_path, providers=(provider("ollama", fake.base_url, kind="ollama", keys=("",)),))
        async with run_gateway(c) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            await client.responses.create(model="llama3.2", input="give json",
                                          text={"format": {"type": "json_schema", "name": "x", "schema": schema}})
            assert fake.requests[-1].body["format"] == schema


@pytest.mark.client('openai', 'responses previous_response_id across two replicas (one PostgreSQL)', 'Anthropic route: the whole conversation')
async def test_previous_response_id_across_two_replicas(tmp_path, postgres_url):
    async with run_fake_anthropic() as fake:
        prov = (provider("anthropic", fake.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,)),)
        shared = dict(database_url=postgres_url, secret_key="s" * 32)
        async with run_gateway(config(tmp_path / "a", providers=prov, **shared)) as a, \
                run_gateway(config(tmp_path / "b", providers=prov, **shared)) as b:
            key = await a.new_key()
            on_a = openai.AsyncOpenAI(base_url=a.url + "/v1", api_key=key, max_retries=0)
            on_b = openai.AsyncOpenAI(base_url=b.url + "/v1", api_key=key, max_retries=0)
            first = await on_a.responses.create(model=MODEL, input="first turn")
            second = await on_b.responses.create(model=MODEL, input="second turn", previous_response_id=first.id)
            sent = fake.requests[-1].body["messages"]
            assert [m["role"] for m in sent] == ["user", "assistant", "user"]
            assert "first turn" in json.dumps(sent[0]) and "second turn" in json.dumps(sent[2])
            assert (await on_a.responses.retrieve(second.id)).id == second.id


async def test_codex_websocket_attempt_is_refused_at_once(tmp_path):
    async with anthropic_gateway(tmp_path) as (gw, fake, client):
        headers = {"Authorization": f"Bearer {client.api_key}", "OpenAI-Beta": "responses_websockets=2026-02-04",
                   "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        async with httpx.AsyncClient() as http:
            t0 = time.monotonic()
            r = await http.get(gw.url + "/v1/responses", headers=headers)
            elapsed_ms = (time.monotonic() - t0) * 1000
        assert r.status_code == 426 and r.json()["error"]["code"] == "websocket_not_supported"
        assert elapsed_ms < 1000, elapsed_ms


@asynccontextmanager
async def openai_gateway(tmp_path, extra=()):
    from tests.support.fakes.openai import run_fake_openai

    async with run_fake_openai() as fake:
        c = config(tmp_path, providers=(provider("openai", fake.base_url),) + tuple(extra))
        async with run_gateway(c) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(), max_retries=0)
            yield gw, fake, client


@pytest.mark.client('openai', 'responses.create with reasoning, hosted tools, include, prompt_cache_key', "OpenAI route: POST /v1/responses byte-for-byte (gateway's key)")
async def test_openai_route_gets_the_body_as_sent(tmp_path):
    async with openai_gateway(tmp_path) as (gw, fake, client):
        extra = {"include": ["reasoning.encrypted_content"], "prompt_cache_key": "k1", "service_tier": "flex"}
        resp = await client.responses.create(model="gpt-4.1", input="hi", reasoning={"effort": "high", "summary": "auto"},
                                             tools=[{"type": "web_search"}], extra_body=extra)
        sent = fake.requests[-1]
        assert sent.path == "/v1/responses"
        assert sent.body["reasoning"] == {"effort": "high", "summary": "auto"} and sent.body["tools"] == [{"type": "web_search"}]
        assert all(sent.body[k] == v for k, v in extra.items())
        assert sent.headers["Authorization"] == "Bearer sk-test-upstream"  # the gateway's key, never the caller's
        assert resp.id.startswith("resp_fake") and resp.output_text == "tok0 tok1 tok2 tok3"
        rows = await gw.ledger()
        assert len(rows) == 1 and rows[0].surface == "openai_responses" and rows[0].provider == "openai"
        assert (rows[0].prompt_tokens, rows[0].completion_tokens, rows[0].estimated) == (9, 4, False)
        # Stored for this caller too: GET is answered by the gateway, another caller gets 404.
        assert (await client.responses.retrieve(resp.id)).output_text == resp.output_text
        other = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=await gw.new_key(name="o"), max_retries=0)
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(resp.id)
        # ... and a caller cannot continue another's OpenAI conversation with the gateway's key.
        n = len(fake.requests)
        with pytest.raises(openai.NotFoundError):
            await other.responses.create(model="gpt-4.1", input="x", previous_response_id=resp.id)
        assert len(fake.requests) == n
        second = await client.responses.create(model="gpt-4.1", input="more", previous_response_id=resp.id)
        assert fake.requests[-1].body["previous_response_id"] == resp.id and second.previous_response_id == resp.id


@pytest.mark.client('openai', 'responses.stream with function calls (OpenAI route)', 'OpenAI route: POST /v1/responses stream, events relayed unchanged')
async def test_openai_route_streams_and_calls_functions(tmp_path):
    async with openai_gateway(tmp_path) as (gw, fake, client):
        async with client.responses.stream(model="fault-tool", input="use it", tools=TOOLS) as stream:
            types = [ev.type async for ev in stream]
            final = await stream.get_final_response()
        assert types[0] == "response.created" and types[-1] == "response.completed"
        assert "response.function_call_arguments.done" in types
        call = final.output[0]
        assert call.type == "function_call" and json.loads(call.arguments) == {"x": 1}
        follow = await client.responses.create(
            model="gpt-4.1", previous_response_id=final.id, tools=TOOLS,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "42"}])
        assert follow.output_text and fake.requests[-1].body["previous_response_id"] == final.id
        rows = await gw.ledger()
        assert len(rows) == 2 and rows[-1].status == "ok" and not any(r.estimated for r in rows)
        with pytest.raises(openai.BadRequestError) as e:
            await client.responses.create(model="fault-400", input="x")
        assert e.value.param == "temperature"


async def test_a_conversation_moves_from_anthropic_to_openai(tmp_path):
    async with run_fake_anthropic() as anth:
        extra = (provider("anthropic", anth.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,)),)
        async with openai_gateway(tmp_path, extra) as (gw, fake, client):
            first = await client.responses.create(model="anthropic/" + MODEL, input="first turn")
            await client.responses.create(model="openai/gpt-4.1", input="second", previous_response_id=first.id)
            sent = fake.requests[-1].body
            # OpenAI never saw the first turn: it gets the conversation in full, no dangling id.
            assert "previous_response_id" not in sent and sent["model"] == "gpt-4.1"
            assert [i.get("role") for i in sent["input"]] == ["user", "assistant", "user"]
