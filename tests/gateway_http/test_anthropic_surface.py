"""The official anthropic SDK against POST /v1/messages, routed to non-Anthropic models (the fake
OpenAI upstream, the fake Gemini, the demo model) and to the fake Anthropic for tool calls; plus
the request/answer translation as unit cases on the codec."""

from __future__ import annotations

import asyncio
import base64
import time

import anthropic
import httpx
import orjson
import pytest

from gateway_http.anthropic import codec
from gateway_http.errors import BridgeError
from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.gemini import DEFAULT_KEY as GEMINI_KEY, run_fake_gemini
from tests.support.gateway import config, provider, run_gateway
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def sdk(gw, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def rows_when(gw, want: int, timeout: float = 2.0) -> list:
    end = time.monotonic() + timeout
    rows = await gw.ledger()
    while len(rows) < want and time.monotonic() < end:
        await asyncio.sleep(0.05)
        rows = await gw.ledger()
    return rows


def sse_events(raw: str) -> list[tuple[str, dict]]:
    out = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], orjson.loads(lines["data"])))
    return out


@pytest.fixture
async def fake_anthropic():
    async with run_fake_anthropic() as fake:
        yield fake


@pytest.fixture
async def fake_gemini():
    async with run_fake_gemini() as fake:
        yield fake


@pytest.fixture
async def gw(tmp_path, fake_openai, fake_anthropic, fake_gemini):
    """OpenAI fake for any model; `claude/…` to the fake Anthropic, `gem/…` to the fake Gemini."""
    cfg = config(tmp_path, tiers=DEFAULT_TIERS + (TierConfig("tiny", rpm=1),), providers=(
        provider("primary", fake_openai.base_url),
        provider("claude", fake_anthropic.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY,),
                 models=("claude-haiku-4-5", "fault-tool", "fault-529")),
        provider("gem", fake_gemini.base_url, kind="gemini", keys=(GEMINI_KEY,), models=("gemini-2.5-flash", "fault-tool")),
    ))
    async with run_gateway(cfg) as g:
        yield g


@pytest.fixture
async def key(gw):
    return await gw.new_key()


# --- answers through the SDK -----------------------------------------------------------------


async def test_plain_message_from_an_openai_upstream(gw, key, fake_openai):
    msg = await sdk(gw, key).messages.create(
        model="gpt-4o-mini", max_tokens=100, messages=user("hi"), system="Be brief.",
        extra_body={"temperature": 0.5, "top_p": 0.9},  # SDK 2.x has no named parameters for them
        stop_sequences=["END"], metadata={"user_id": "u-42"})
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert msg.model == "gpt-4o-mini"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (7, 8)
    sent = fake_openai.requests[-1]
    assert sent.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert (sent.body["max_tokens"], sent.body["temperature"], sent.body["top_p"]) == (100, 0.5, 0.9)
    assert (sent.body["stop"], sent.body["user"]) == (["END"], "u-42")
    assert sent.headers["Authorization"] == "Bearer sk-test-upstream" and key not in str(sent.headers)
    rows = await gw.ledger()
    assert [(r.surface, r.status, r.prompt_tokens, r.completion_tokens, r.estimated) for r in rows] == \
        [("anthropic", "ok", 7, 8, False)]


async def test_max_tokens_maps_to_max_tokens(gw, key):
    msg = await sdk(gw, key).messages.create(model="claude/claude-haiku-4-5", max_tokens=2, messages=user("one two three"))
    assert (msg.stop_reason, msg.content[0].text, msg.usage.output_tokens) == ("max_tokens", "one two", 2)


async def test_system_blocks_and_multi_turn(gw, key, fake_openai):
    await sdk(gw, key).messages.create(
        model="gpt-4o-mini", max_tokens=50,
        system=[{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}],
        messages=[{"role": "user", "content": "first"},
                  {"role": "assistant", "content": [{"type": "text", "text": "answer"}]},
                  {"role": "user", "content": [{"type": "text", "text": "second"}]}])
    assert fake_openai.requests[-1].body["messages"] == [
        {"role": "system", "content": "Rule one.\nRule two."}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"}, {"role": "user", "content": "second"}]


async def test_images_base64_and_url(gw, key, fake_openai):
    await sdk(gw, key).messages.create(model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is this?"}]}])
    parts = fake_openai.requests[-1].body["messages"][0]["content"]
    assert parts == [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                     {"type": "text", "text": "What is this?"}]


async def test_demo_model_plain_and_streamed(tmp_path):
    async with run_gateway(config(tmp_path)) as g:  # no provider: the built-in demo model serves
        client = sdk(g, await g.new_key())
        msg = await client.messages.create(model="demo", max_tokens=64, messages=user("hello there"))
        assert "You said: hello there" in msg.content[0].text
        async with client.messages.stream(model="demo", max_tokens=64, messages=user("hello there")) as s:
            final = await s.get_final_message()
        assert final.content[0].text == msg.content[0].text
        assert final.usage.output_tokens == msg.usage.output_tokens > 0


async def test_gemini_upstream_plain_and_streamed(gw, key, fake_gemini):
    client = sdk(gw, key)
    msg = await client.messages.create(model="gem/gemini-2.5-flash", max_tokens=64, system="sys",
                                       messages=user("one two three"))
    assert msg.content[0].text == "one two three"
    assert msg.usage.output_tokens == 3
    body = fake_gemini.bodies(":generateContent")[-1]
    assert body["systemInstruction"]["parts"][0]["text"] == "sys"
    async with client.messages.stream(model="gem/gemini-2.5-flash", max_tokens=64, messages=user("four five")) as s:
        texts = [t async for t in s.text_stream]
        final = await s.get_final_message()
    assert "".join(texts) == final.content[0].text == "four five"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 2 and final.usage.input_tokens > 0


# --- tools -------------------------------------------------------------------------------------


async def test_tool_use_round_trip_through_the_fake_anthropic(gw, key, fake_anthropic):
    client = sdk(gw, key)
    msg = await client.messages.create(model="claude/fault-tool", max_tokens=100, tools=[WEATHER],
                                       tool_choice={"type": "auto"}, messages=user("Weather in Paris?"))
    assert msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["text", "tool_use"]
    call = msg.content[1]
    assert (call.name, call.input, call.id) == ("get_weather", {"x": 1}, "toolu_fake_0001")
    # The fake validates tool_use / tool_result pairing like the real API: the translation round-trips.
    follow = await client.messages.create(model="claude/claude-haiku-4-5", max_tokens=100, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Calling get_weather."},
                                          {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny 21C"},
                                     {"type": "text", "text": "thanks"}]}])
    assert follow.stop_reason == "end_turn"
    sent = fake_anthropic.last_body["messages"]
    assert sent[1]["content"][1] == {"type": "tool_use", "id": "toolu_fake_0001", "name": "get_weather", "input": {"x": 1}}
    assert sent[2]["content"][0]["type"] == "tool_result" and sent[2]["content"][0]["tool_use_id"] == "toolu_fake_0001"


async def test_tool_use_streamed(gw, key):
    async with sdk(gw, key).messages.stream(model="claude/fault-tool", max_tokens=100, tools=[WEATHER],
                                            messages=user("Weather?")) as s:
        events = [e.type async for e in s]
        final = await s.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"x": 1} and final.content[1].name == "get_weather"
    assert "input_json" in events


async def test_tool_use_from_gemini(gw, key):
    msg = await sdk(gw, key).messages.create(model="gem/fault-tool", max_tokens=100, tools=[WEATHER],
                                             messages=user("Weather?"))
    assert msg.stop_reason == "tool_use"
    tool = next(b for b in msg.content if b.type == "tool_use")
    assert (tool.name, tool.input) == ("get_weather", {"x": 1}) and tool.id


@pytest.mark.parametrize("choice,expected", [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
])
async def test_tools_and_tool_choice_reach_an_openai_upstream(gw, key, fake_openai, choice, expected):
    await sdk(gw, key).messages.create(model="gpt-4o-mini", max_tokens=50, tools=[WEATHER], tool_choice=choice,
                                       messages=user("Weather?"))
    body = fake_openai.requests[-1].body
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["input_schema"]}}]
    assert body["tool_choice"] == expected


async def test_tool_results_become_tool_turns_for_openai(gw, key, fake_openai):
    await sdk(gw, key).messages.create(model="gpt-4o-mini", max_tokens=50, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "rain"}]}]}])
    msgs = fake_openai.requests[-1].body["messages"]
    assert msgs[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]}
    assert msgs[2] == {"role": "tool", "content": "rain", "tool_call_id": "toolu_1"}


# --- the stream, exactly ---------------------------------------------------------------------


async def test_stream_event_sequence(gw, key):
    r = await gw.http.post("/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                           json={"model": "tokens-3", "max_tokens": 50, "stream": True, "messages": user("hi")})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["request-id"].startswith("req_")
    events = sse_events(r.text)
    assert [e for e, _ in events] == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 3 + [
        "content_block_stop", "message_delta", "message_stop"]
    for name, data in events:
        assert data["type"] == name
    start = events[0][1]["message"]
    assert (start["role"], start["content"], start["stop_reason"], start["usage"]) == (
        "assistant", [], None, {"input_tokens": 0, "output_tokens": 0})
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [d["delta"] for _, d in events[3:6]] == [{"type": "text_delta", "text": f"tok{i} "} for i in range(3)]
    assert events[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"input_tokens": 7, "output_tokens": 3}}


async def test_stream_helpers_accumulate_the_message(gw, key):
    async with sdk(gw, key).messages.stream(model="tokens-4", max_tokens=50, messages=user("hi")) as s:
        texts = [t async for t in s.text_stream]
        final = await s.get_final_message()
    assert texts == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert final.content[0].text == "tok0 tok1 tok2 tok3 "
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 7, 4)
    assert final.id.startswith("msg_") and final.model == "tokens-4"


# --- errors ------------------------------------------------------------------------------------


def anthropic_error(r: httpx.Response, status: int, etype: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == etype, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]


async def test_authentication_error(gw):
    with pytest.raises(anthropic.AuthenticationError) as e:
        await sdk(gw, "tg_not-a-real-key").messages.create(model="gpt-4o-mini", max_tokens=5, messages=user("x"))
    assert e.value.status_code == 401 and e.value.body["error"]["type"] == "authentication_error"
    r = await gw.http.post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": user("x")})
    anthropic_error(r, 401, "authentication_error")


async def test_x_api_key_and_any_version_are_accepted(gw, key):
    for headers in ({"x-api-key": key}, {"x-api-key": key, "anthropic-version": "2099-01-01"},
                    {"Authorization": "Bearer " + key}):
        r = await gw.http.post("/v1/messages", headers=headers, json={"model": "tokens-1", "max_tokens": 5, "messages": user("x")})
        assert r.status_code == 200 and r.json()["content"][0]["text"] == "tok0 "


async def test_unknown_model_is_not_found(gw, key):
    with pytest.raises(anthropic.NotFoundError) as e:
        await sdk(gw, key).messages.create(model="claude/no-such-model", max_tokens=5, messages=user("x"))
    assert e.value.body["error"]["type"] == "not_found_error"


async def test_missing_max_tokens_and_bad_bodies_are_400(gw, key, fake_openai):
    headers = {"x-api-key": key}
    msg = anthropic_error(await gw.http.post("/v1/messages", headers=headers, json={"model": "gpt-4o-mini", "messages": user("x")}),
                          400, "invalid_request_error")
    assert "max_tokens" in msg
    for body in ({"model": "gpt-4o-mini", "max_tokens": 5, "messages": []},
                 {"model": "gpt-4o-mini", "max_tokens": 0, "messages": user("x")},
                 {"model": "gpt-4o-mini", "max_tokens": 5, "temperature": 1.5, "messages": user("x")},
                 {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
                 {"max_tokens": 5, "messages": user("x")}):
        anthropic_error(await gw.http.post("/v1/messages", headers=headers, json=body), 400, "invalid_request_error")
    anthropic_error(await gw.http.post("/v1/messages", headers=headers, content=b"{nope"), 400, "invalid_request_error")
    assert fake_openai.requests == []


async def test_rate_limits_are_429(gw):
    tiny = await gw.new_key(tier="tiny")  # 1 request a minute
    client = sdk(gw, tiny)
    await client.messages.create(model="tokens-1", max_tokens=5, messages=user("x"))
    with pytest.raises(anthropic.RateLimitError) as e:
        await client.messages.create(model="tokens-1", max_tokens=5, messages=user("x"))
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert int(e.value.response.headers["retry-after"]) >= 1
    # Every upstream answering 429 is a 429 too.
    with pytest.raises(anthropic.RateLimitError):
        await sdk(gw, await gw.new_key()).messages.create(model="fault-429-retry-30", max_tokens=5, messages=user("x"))


async def test_upstream_outage_is_overloaded(gw, key):
    with pytest.raises(anthropic.APIStatusError) as e:
        await sdk(gw, key).messages.create(model="fault-503", max_tokens=5, messages=user("x"))
    assert e.value.status_code == 503 and e.value.body["error"]["type"] == "overloaded_error"
    assert e.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(anthropic.APIStatusError) as e:
        await sdk(gw, key).messages.create(model="claude/fault-529", max_tokens=5, messages=user("x"))
    assert e.value.status_code == 503 and e.value.body["error"]["type"] == "overloaded_error"


async def test_cut_mid_stream_is_an_error_event(gw, key):
    r = await gw.http.post("/v1/messages", headers={"x-api-key": key},
                           json={"model": "fault-cut-after-3", "max_tokens": 50, "stream": True, "messages": user("hi")})
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[-1] == "error" and "message_stop" not in names and "message_delta" not in names
    assert names.count("content_block_delta") == 3
    assert events[-1][1]["type"] == "error" and events[-1][1]["error"]["type"] in ("api_error", "overloaded_error")
    with pytest.raises(anthropic.APIStatusError) as e:
        async with sdk(gw, key).messages.stream(model="fault-cut-after-3", max_tokens=50, messages=user("hi")) as s:
            async for _ in s:
                pass
    assert e.value.body["error"]["type"] in ("api_error", "overloaded_error")
    rows = await rows_when(gw, 2)
    assert [r.status for r in rows] == ["upstream_error", "upstream_error"]
    assert all(r.estimated and r.completion_tokens >= 3 for r in rows)


async def test_client_disconnect_mid_stream(gw, key, fake_openai):
    deltas = 0
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        async with http.stream("POST", "/v1/messages", headers={"x-api-key": key}, json={
                "model": "fault-stall-after-3", "max_tokens": 50, "stream": True, "messages": user("hi")}) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                deltas += line == "event: content_block_delta"
                if deltas == 3:
                    break
        t0 = time.monotonic()
    await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
    assert time.monotonic() - t0 < 1.0
    rows = await rows_when(gw, 1)
    assert [(r.surface, r.status, r.estimated) for r in rows] == [("anthropic", "client_cancelled", True)]
    assert rows[0].completion_tokens >= 3
    assert gw.app.pipeline.active == 0


async def test_count_tokens_is_an_estimate(gw, key):
    r = await gw.http.post("/v1/messages/count_tokens", headers={"x-api-key": key},
                           json={"model": "gpt-4o-mini", "messages": user("hello world, how are you today?")})
    assert r.status_code == 200 and r.headers["x-tollgate-estimated"] == "true"
    assert 5 <= r.json()["input_tokens"] <= 30
    n = await sdk(gw, key).messages.count_tokens(model="gpt-4o-mini", messages=user("hi"))
    assert n.input_tokens > 0
    anthropic_error(await gw.http.post("/v1/messages/count_tokens", json={"model": "m", "messages": user("x")}),
                    401, "authentication_error")


# --- the codec, case by case -------------------------------------------------------------------

TRANSLATIONS = [
    ("string content", {"messages": user("hi")}, [(pb.ROLE_USER, "hi", 0, 0, "")]),
    ("system string", {"system": "S", "messages": user("hi")}, [(pb.ROLE_SYSTEM, "S", 0, 0, ""), (pb.ROLE_USER, "hi", 0, 0, "")]),
    ("system blocks", {"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}], "messages": user("hi")},
     [(pb.ROLE_SYSTEM, "A\nB", 0, 0, ""), (pb.ROLE_USER, "hi", 0, 0, "")]),
    ("one text block", {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
     [(pb.ROLE_USER, "hi", 0, 0, "")]),
    ("two text blocks", {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
     [(pb.ROLE_USER, "", 2, 0, "")]),
    ("base64 image", {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]}, [(pb.ROLE_USER, "", 1, 0, "")]),
    ("tool_use", {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "text", "text": "let me"}, {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]}]},
     [(pb.ROLE_USER, "q", 0, 0, ""), (pb.ROLE_ASSISTANT, "let me", 0, 1, "")]),
    ("tool_result string then text", {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "42"}, {"type": "text", "text": "go on"}]}]},
     [(pb.ROLE_TOOL, "42", 0, 0, "t1"), (pb.ROLE_USER, "go on", 0, 0, "")]),
    ("tool_result blocks with an image", {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "see"}, {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]}]}]},
     [(pb.ROLE_TOOL, "see", 0, 0, "t1"), (pb.ROLE_USER, "", 1, 0, "")]),
    ("thinking dropped", {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "a"}]}]},
     [(pb.ROLE_USER, "q", 0, 0, ""), (pb.ROLE_ASSISTANT, "a", 0, 0, "")]),
]


@pytest.mark.parametrize("name,body,expected", TRANSLATIONS, ids=[t[0] for t in TRANSLATIONS])
def test_request_translation(name, body, expected):
    inp = codec.chat_input({"model": "m", "max_tokens": 10, **body})
    assert inp.surface == "anthropic" and inp.model == "m" and inp.sampling.max_tokens == 10
    got = [(m.role, m.text, len(m.parts), len(m.tool_calls), m.tool_call_id) for m in inp.messages]
    assert got == expected


def test_request_parameters_translation():
    inp = codec.chat_input({
        "model": "m", "max_tokens": 9, "temperature": 0.2, "top_p": 0.7, "top_k": 5, "stop_sequences": ["x", "y"],
        "metadata": {"user_id": "u1"}, "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "messages": [{"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/jpeg", "data": PNG}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "get_weather", "input": {"city": "Oslo"}}]}]})
    s = inp.sampling
    assert (s.temperature, s.top_p, list(s.stop), s.tool_choice, s.parallel_tool_calls) == (0.2, 0.7, ["x", "y"], "get_weather", False)
    assert inp.user == "u1"
    assert inp.tools[0].name == "get_weather" and inp.tools[0].parameters["required"] == ["city"]
    img = inp.messages[0].parts[0].image
    assert (img.media_type, img.data) == ("image/jpeg", base64.b64decode(PNG))
    assert orjson.loads(inp.messages[1].tool_calls[0].arguments) == {"city": "Oslo"}


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": user("x")},  # no max_tokens
    {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/bmp", "data": PNG}}]}]},
    {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "!!!"}}]}]},
    {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
    {"model": "m", "max_tokens": 1, "tools": [{"type": "web_search_20250305", "name": "web_search"}], "messages": user("x")},
    {"model": "m", "max_tokens": 1, "tools": [WEATHER], "tool_choice": {"type": "maybe"}, "messages": user("x")},
    {"model": "m\r\nX: y", "max_tokens": 1, "messages": user("x")},
])
def test_request_translation_rejects(body):
    with pytest.raises(BridgeError) as e:
        codec.chat_input(body)
    assert e.value.status == 400


def _response(**kw) -> ipb.ChatResponse:
    base = dict(id="req_abc", text="", finish_reason=pb.FINISH_REASON_STOP, usage=pb.Usage(prompt_tokens=3, completion_tokens=4),
                route=pb.Route(model="up-model"))
    return ipb.ChatResponse(**{**base, **kw})


@pytest.mark.parametrize("resp,stop,blocks", [
    (_response(text="hi"), "end_turn", [{"type": "text", "text": "hi"}]),
    (_response(text="hi", finish_reason=pb.FINISH_REASON_LENGTH), "max_tokens", [{"type": "text", "text": "hi"}]),
    (_response(text="no", finish_reason=pb.FINISH_REASON_CONTENT_FILTER), "refusal", [{"type": "text", "text": "no"}]),
    (_response(tool_calls=[pb.ToolCall(id="c1", name="f", arguments='{"a": [1]}')], finish_reason=pb.FINISH_REASON_TOOL_CALLS),
     "tool_use", [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": [1]}}]),
    (_response(text="x", tool_calls=[pb.ToolCall(name="f", arguments="")]), "tool_use",
     [{"type": "text", "text": "x"}, {"type": "tool_use", "id": "toolu_abc_0", "name": "f", "input": {}}]),
    (_response(), "end_turn", [{"type": "text", "text": ""}]),
])
def test_response_translation(resp, stop, blocks):
    out = orjson.loads(codec.message_json(resp, "asked", thinking=False))
    assert out == {"id": "msg_abc", "type": "message", "role": "assistant", "model": "up-model", "content": blocks,
                   "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 4}}


def test_stream_writer_tool_calls_and_thinking():
    w = codec.StreamWriter("req_s", "m", thinking=True)
    raw = w.start() + w.deltas(ipb.DeltaBatch(deltas=[
        pb.ChoiceDelta(reasoning="think"), pb.ChoiceDelta(text="Hi"),
        pb.ChoiceDelta(tool_calls=[pb.ToolCallDelta(index=0, id="c0", name="f", arguments='{"a"')]),
        pb.ChoiceDelta(tool_calls=[pb.ToolCallDelta(index=0, arguments=": 1}")]),
        pb.ChoiceDelta(tool_calls=[pb.ToolCallDelta(index=1, name="g", arguments="{}")])]))
    w.usage(pb.Usage(prompt_tokens=5, completion_tokens=6))
    raw += w.end(ipb.StreamEnd(finish_reason=pb.FINISH_REASON_TOOL_CALLS))
    ev = sse_events(raw.decode())
    assert [e for e, _ in ev] == [
        "message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    starts = [d["content_block"] for e, d in ev if e == "content_block_start"]
    assert starts == [{"type": "thinking", "thinking": "", "signature": ""}, {"type": "text", "text": ""},
                      {"type": "tool_use", "id": "c0", "name": "f", "input": {}},
                      {"type": "tool_use", "id": "toolu_s_1", "name": "g", "input": {}}]
    partial = [d["delta"]["partial_json"] for e, d in ev if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta"]
    assert partial == ['{"a"', ": 1}", "{}"]
    assert ev[-2][1]["delta"]["stop_reason"] == "tool_use" and ev[-2][1]["usage"] == {"input_tokens": 5, "output_tokens": 6}

