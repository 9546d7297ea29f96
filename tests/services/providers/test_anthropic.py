"""AnthropicAdapter against the fake Anthropic upstream over real HTTP, plus its pure translation.

Also proves the fake is wire-faithful: the official `anthropic` SDK, with strict response
validation, parses its answers, streams and errors.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate

import aiohttp
import anthropic
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from services.clock import FakeClock
from services.core.errors import UpstreamFailure
from services.core.types import (
    ChatRequest,
    Chunk,
    ContentPart,
    EmbedRequest,
    Message,
    Sampling,
    Target,
    Tool,
    ToolCall,
)
from services.providers.anthropic import AnthropicAdapter
from services.providers.anthropic_codec import (
    DEFAULT_MAX_TOKENS,
    JSON_INSTRUCTION,
    StreamTranslator,
    build_messages_body,
    classify_error,
    map_stop_reason,
    parse_message,
)
from services.providers.base import MAX_SKIPPED_EVENTS, Call
from services.providers.sse import SSEParser
from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, FakeAnthropic, run_fake_anthropic
from tests.support.local_server import serve

KEY = FAKE_ANTHROPIC_KEY
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 24
WEATHER = Tool(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with run_fake_anthropic() as f:
        yield f


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def adapter() -> AnthropicAdapter:
    return AnthropicAdapter()


def make_call(
    fake: FakeAnthropic,
    session: aiohttp.ClientSession,
    model: str = "claude-sonnet-4-6",
    *,
    timeout_s: float = 5.0,
    key: str = KEY,
    base_url: str | None = None,
    first_token_timeout_s: float | None = None,
    idle_timeout_s: float | None = None,
) -> Call:
    target = Target(
        provider="anthropic", kind="anthropic", key_id="pk_test", model=model, base_url=base_url or fake.base_url
    )
    return Call(
        target=target,
        api_key=key,
        session=session,
        timeout_s=timeout_s,
        first_token_timeout_s=first_token_timeout_s,
        idle_timeout_s=idle_timeout_s,
    )


def ask(text: str, **kw: object) -> ChatRequest:
    return ChatRequest(model="claude", messages=[Message("user", text)], **kw)  # type: ignore[arg-type]


async def collect(stream: AsyncIterator[list[Chunk]]) -> list[list[Chunk]]:
    return [batch async for batch in stream]


async def collect_until_failure(stream: AsyncIterator[list[Chunk]]) -> tuple[list[Chunk], UpstreamFailure]:
    chunks: list[Chunk] = []
    with pytest.raises(UpstreamFailure) as info:
        async for batch in stream:
            chunks.extend(batch)
    return chunks, info.value


def flat(batches: list[list[Chunk]]) -> list[Chunk]:
    return [c for b in batches for c in b]


def assert_no_secret(failure: UpstreamFailure, secret: str = KEY) -> None:
    for text in (str(failure), repr(failure), failure.message, *failure.extra.values()):
        assert secret not in text
        assert secret[-8:] not in text


async def eventually(condition: Callable[[], bool], timeout: float = 1.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- request translation: pure -------------------------------------------------------------------


def body_of(req: ChatRequest, *, stream: bool = False) -> dict:
    return build_messages_body(req, "claude-upstream", stream=stream)


def test_plain_user_text() -> None:
    assert body_of(ask("hello")) == {
        "model": "claude-upstream",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "hello"}],
    }


def test_stream_flag() -> None:
    assert body_of(ask("hi"), stream=True)["stream"] is True
    assert "stream" not in body_of(ask("hi"))


def test_system_and_developer_are_lifted_in_order() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message("system", "be brief"),
            Message("user", "hi"),
            Message("developer", "use metric"),
            Message("assistant", "hello"),
            Message("user", "weather?"),
        ],
    )
    body = body_of(req)
    assert body["system"] == "be brief\n\nuse metric"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_consecutive_same_role_turns_are_merged() -> None:
    req = ChatRequest(model="m", messages=[Message("user", "one"), Message("user", "two"), Message("assistant", "ok")])
    assert body_of(req)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "ok"},
    ]


def test_empty_turns_are_dropped() -> None:
    req = ChatRequest(model="m", messages=[Message("user", "a"), Message("assistant", ""), Message("user", "b")])
    assert body_of(req)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [('{"city": "Paris"}', {"city": "Paris"}), ("{not json", {}), ("", {}), ("[1, 2]", {}), ('"text"', {})],
)
def test_assistant_tool_calls_become_tool_use(arguments: str, expected: dict) -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message("user", "weather in Paris?"),
            Message("assistant", "Let me look.", tool_calls=[ToolCall(id="call_1", name="get_weather", arguments=arguments)]),
        ],
    )
    assert body_of(req)["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": expected},
        ],
    }


def test_tool_results_become_one_user_turn_before_user_text() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message("user", "two cities"),
            Message(
                "assistant",
                tool_calls=[ToolCall("c1", "get_weather", '{"city":"A"}'), ToolCall("c2", "get_weather", '{"city":"B"}')],
            ),
            Message("tool", "sunny", tool_call_id="c1"),
            Message("tool", "", tool_call_id="c2"),
            Message("user", "and so?"),
        ],
    )
    assert body_of(req)["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "c2"},
            {"type": "text", "text": "and so?"},
        ],
    }


def test_user_text_before_tool_result_is_reordered() -> None:
    # Anthropic wants tool_result blocks first in their user turn.
    req = ChatRequest(
        model="m",
        messages=[
            Message("assistant", tool_calls=[ToolCall("c1", "f", "{}")]),
            Message("user", "note"),
            Message("tool", "done", tool_call_id="c1"),
        ],
    )
    content = body_of(req)["messages"][1]["content"]
    assert [b["type"] for b in content] == ["tool_result", "text"]


def test_image_bytes_become_base64_source() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message(
                "user",
                parts=[
                    ContentPart("text", text="what is this?"),
                    ContentPart("image", data=PNG, media_type="image/png"),
                    ContentPart("image", data=JPEG),  # media type sniffed
                ],
            )
        ],
    )
    content = body_of(req)["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "what is this?"}
    assert content[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
    }
    assert content[2]["source"]["media_type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("url", "media_type", "data"),
    [
        ("data:image/png;base64," + base64.b64encode(PNG).decode(), "image/png", base64.b64encode(PNG).decode()),
        ("data:;base64," + base64.b64encode(JPEG).decode(), "image/jpeg", base64.b64encode(JPEG).decode()),
        ("data:image/jpg;base64," + base64.b64encode(JPEG).decode(), "image/jpeg", base64.b64encode(JPEG).decode()),
        ("data:image/gif,GIF89a%00%01", "image/gif", base64.b64encode(b"GIF89a\x00\x01").decode()),
    ],
)
def test_image_data_urls_become_base64_source(url: str, media_type: str, data: str) -> None:
    block = body_of(ChatRequest(model="m", messages=[Message("user", parts=[ContentPart("image", image_url=url)])]))[
        "messages"
    ][0]["content"][0]
    assert block == {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def test_image_http_url_becomes_url_source() -> None:
    req = ChatRequest(
        model="m", messages=[Message("user", parts=[ContentPart("image", image_url="https://example.com/cat.png")])]
    )
    assert body_of(req)["messages"][0]["content"][0] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


@pytest.mark.parametrize(
    "part",
    [
        ContentPart("image", image_url="ftp://example.com/cat.png"),
        ContentPart("image", image_url="data:image/png;base64"),
        ContentPart("image", data=b"not an image at all"),
        ContentPart("image", data=PNG, media_type="image/bmp"),
        ContentPart("image", image_url="data:image/svg+xml;base64,PHN2Zz4="),
        ContentPart("audio", text="x"),
    ],
)
def test_unusable_parts_are_the_callers_error(part: ContentPart) -> None:
    with pytest.raises(UpstreamFailure) as info:
        body_of(ChatRequest(model="m", messages=[Message("user", parts=[part])]))
    assert info.value.kind == "bad_request"


@pytest.mark.parametrize(("given", "sent"), [(0.7, 0.7), (1.7, 1.0), (2.0, 1.0), (-0.5, 0.0), (0.0, 0.0)])
def test_temperature_is_clamped_to_anthropics_range(given: float, sent: float) -> None:
    assert body_of(ask("hi", sampling=Sampling(temperature=given)))["temperature"] == sent


def test_sampling_mapping() -> None:
    s = Sampling(
        top_p=0.9, max_tokens=300, stop=["END", "", "  ", "###"], seed=7, presence_penalty=0.5, frequency_penalty=0.1
    )
    body = body_of(ask("hi", sampling=s))
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 300
    assert body["stop_sequences"] == ["END", "###"]
    for absent in ("seed", "presence_penalty", "frequency_penalty", "temperature"):
        assert absent not in body


def test_top_p_one_is_dropped_next_to_temperature() -> None:
    body = body_of(ask("hi", sampling=Sampling(temperature=0.5, top_p=1.0)))
    assert body["temperature"] == 0.5 and "top_p" not in body


def test_tools_become_input_schema() -> None:
    bare = Tool(name="ping")
    partial = Tool(name="echo", parameters={"properties": {"x": {"type": "integer"}}})
    body = body_of(ask("hi", tools=[WEATHER, bare, partial]))
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER.parameters},
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
        {"name": "echo", "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ("get_weather", None, {"type": "tool", "name": "get_weather"}),
        ("", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
    ],
)
def test_tool_choice_mapping(choice: str, parallel: bool | None, expected: dict) -> None:
    body = body_of(ask("hi", tools=[WEATHER], sampling=Sampling(tool_choice=choice, parallel_tool_calls=parallel)))
    assert body["tool_choice"] == expected


def test_tool_choice_without_tools_is_not_sent() -> None:
    assert "tool_choice" not in body_of(ask("hi", sampling=Sampling(tool_choice="required")))


def test_json_mode_is_asked_for_in_the_system_prompt() -> None:
    req = ChatRequest(
        model="m", messages=[Message("system", "be brief"), Message("user", "hi")], sampling=Sampling(response_format="json_object")
    )
    assert body_of(req)["system"] == "be brief\n\n" + JSON_INSTRUCTION
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = body_of(ask("hi", sampling=Sampling(response_format="json_schema", json_schema=schema)))
    assert body["system"].startswith(JSON_INSTRUCTION)
    assert orjson.dumps(schema).decode() in body["system"]
    assert "system" not in body_of(ask("hi", sampling=Sampling(response_format="text")))


def test_user_goes_to_metadata() -> None:
    assert body_of(ask("hi", user="u_42"))["metadata"] == {"user_id": "u_42"}


# --- answers and streams: pure -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reason_mapping(reason: str | None, finish: str) -> None:
    assert map_stop_reason(reason) == finish


def test_parse_message_with_every_block_and_cache_usage() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 20},
    }
    result = parse_message(orjson.dumps(body))
    assert (result.text, result.reasoning, result.finish_reason) == ("Checking.", "hmm", "tool_calls")
    assert result.tool_calls == [ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Paris"}')]
    assert (result.model, result.response_id) == ("claude-x", "msg_1")
    assert result.usage.prompt_tokens == 33 and result.usage.cached_tokens == 20
    assert result.usage.completion_tokens == 5 and not result.usage.estimated


@pytest.mark.parametrize(
    "body", [b"", b"{not json", b"[]", b'{"type": "message"}', b'{"type": "error", "error": {"type": "api_error"}}']
)
def test_parse_message_rejects_what_is_not_a_message(body: bytes) -> None:
    with pytest.raises(UpstreamFailure) as info:
        parse_message(body)
    assert info.value.kind == "protocol"


def test_parse_message_without_usage_is_flagged_estimated() -> None:
    result = parse_message(b'{"type": "message", "content": [{"type": "text", "text": "hi"}]}')
    assert result.usage.estimated and result.text == "hi"


def _sse(*events: tuple[str, dict]) -> bytes:
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events)


SCRIPTED_STREAM = _sse(
    ("message_start", {"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 2}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Héllo 🌍"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    ("content_block_start", {"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "t2", "name": "g", "input": {"b": 2}}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 3}),
    ("some_future_event", {"type": "some_future_event"}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
    ("message_stop", {"type": "message_stop"}),
)


def _translate(data: bytes, size: int) -> tuple[list[list[Chunk]], StreamTranslator]:
    parser, tr, batches = SSEParser(), StreamTranslator(), []
    for i in range(0, len(data), size):
        chunks, failure = tr.feed(parser.feed(data[i : i + size]))
        assert failure is None
        if chunks:
            batches.append(chunks)
    return batches, tr


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_stream_translation_is_the_same_for_any_read_size(size: int) -> None:
    batches, tr = _translate(SCRIPTED_STREAM, size)
    chunks = flat(batches)
    assert tr.done
    assert batches[0][0].role == "assistant" and all(c.role == "" for c in chunks[1:])
    assert "".join(c.reasoning for c in chunks) == "hm"
    assert "".join(c.text for c in chunks) == "Héllo 🌍"
    deltas = [d for c in chunks for d in c.tool_calls]
    assert [(d.index, d.id, d.name) for d in deltas if d.id] == [(0, "t1", "f"), (1, "t2", "g")]
    assert "".join(d.arguments for d in deltas if d.index == 0) == '{"a": 1}'
    assert "".join(d.arguments for d in deltas if d.index == 1) == '{"b":2}'
    last = chunks[-1]
    assert last.finish_reason == "tool_calls"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.cached_tokens) == (9, 9, 2)
    assert all(c.usage is None and not c.finish_reason for c in chunks[:-1])


def test_stream_error_event_is_raised_after_the_chunks_before_it() -> None:
    data = _sse(
        ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 1}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}}),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "b"}}),
    )
    chunks, failure = StreamTranslator().feed(SSEParser().feed(data))
    assert [c.text for c in chunks] == ["a"]
    assert failure is not None and failure.kind == "protocol" and failure.provider_code == "overloaded_error"


@pytest.mark.parametrize(
    "data",
    [
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0}\n\n',
        b'event: content_block_start\ndata: {"type": "content_block_start", "index": "x", "content_block": {"type": "tool_use"}}\n\n',
    ],
)
def test_events_that_break_the_protocol_are_protocol_failures(data: bytes) -> None:
    _, failure = StreamTranslator().feed(SSEParser().feed(data))
    assert failure is not None and failure.kind == "protocol"


def _text_delta(text: str) -> tuple[str, dict]:
    delta = {"type": "text_delta", "text": text}
    return ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})


@pytest.mark.parametrize("junk", [b"{nope", b"[]", b'{"type": "content_block_delta", "index": 0, "delta": {"ty', b"42"])
def test_an_event_that_is_not_a_json_object_is_skipped(junk: bytes) -> None:
    """RELIABILITY E3 / Failover Bench S10: a truncated event costs nothing but itself."""
    data = _sse(_text_delta("a")) + b"event: content_block_delta\ndata: " + junk + b"\n\n" + _sse(_text_delta("b"))
    chunks, failure = StreamTranslator().feed(SSEParser().feed(data))
    assert failure is None and [c.text for c in chunks] == ["a", "b"]


def test_past_the_skip_limit_the_stream_is_a_protocol_failure_after_its_chunks() -> None:
    junk = b"event: content_block_delta\ndata: {nope\n\n"
    tr = StreamTranslator()
    parser = SSEParser()
    chunks, failure = tr.feed(parser.feed(_sse(_text_delta("a")) + junk * MAX_SKIPPED_EVENTS + _sse(_text_delta("b"))))
    assert failure is None and [c.text for c in chunks] == ["a", "b"]
    chunks, failure = tr.feed(parser.feed(_sse(_text_delta("c")) + junk + _sse(_text_delta("d"))))
    assert [c.text for c in chunks] == ["c"]
    assert failure is not None and failure.kind == "protocol" and "malformed" in failure.message


def test_close_finishes_only_after_message_delta_gave_the_stop_reason() -> None:
    start = ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}})
    delta = ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                               "usage": {"output_tokens": 2}})
    cut = StreamTranslator()
    cut.feed(SSEParser().feed(_sse(start, _text_delta("a"), _text_delta("b"))))
    assert cut.close() == [] and not cut.done  # no stop_reason yet: a cut answer (A6)
    whole = StreamTranslator()
    chunks, _ = whole.feed(SSEParser().feed(_sse(start, _text_delta("a"), _text_delta("b"), delta)))
    assert all(not c.finish_reason for c in chunks)
    (last,) = whole.close()
    assert whole.done and last.finish_reason == "length"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 2)
    assert whole.close() == []  # once


# --- error classification: pure ------------------------------------------------------------------


def _err(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


@pytest.mark.parametrize(
    ("status", "etype", "message", "kind"),
    [
        (400, "invalid_request_error", "max_tokens: Field required", "bad_request"),
        (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", "context_length"),
        (400, "invalid_request_error", "input length and `max_tokens` exceed context limit: 198000 + 4096 > 200000", "context_length"),
        (400, "invalid_request_error", "Output blocked by content filtering policy", "content_filter"),
        (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API.", "auth"),
        (401, "authentication_error", "invalid x-api-key", "auth"),
        (403, "permission_error", "no access", "auth"),
        (404, "not_found_error", "model: claude-nope", "bad_request"),
        (408, "timeout_error", "Request timed out", "timeout"),
        (409, "api_error", "conflict", "server"),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", "bad_request"),
        (422, "invalid_request_error", "unprocessable", "bad_request"),
        (429, "rate_limit_error", "slow down", "rate_limited"),
        (500, "api_error", "Internal server error", "server"),
        (502, "api_error", "bad gateway", "server"),
        (503, "api_error", "unavailable", "server"),
        (529, "overloaded_error", "Overloaded", "server"),
    ],
)
def test_classify_table(status: int, etype: str, message: str, kind: str) -> None:
    failure = classify_error(status, {}, _err(etype, message), now=0.0)
    assert (failure.kind, failure.status, failure.provider_code) == (kind, status, etype)
    if kind == "auth":
        assert failure.message == "provider rejected the gateway's key"
    else:
        assert failure.message == message  # Anthropic's words say what to fix


def test_classify_never_echoes_what_an_auth_error_says() -> None:
    failure = classify_error(401, {"x-api-key": KEY}, _err("authentication_error", f"invalid x-api-key {KEY}"), now=0.0)
    assert failure.kind == "auth"
    assert_no_secret(failure)


def test_classify_body_that_is_not_json() -> None:
    failure = classify_error(502, {}, b"<html>Bad Gateway</html>", now=0.0)
    assert (failure.kind, failure.message) == ("server", "upstream answered HTTP 502")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": formatdate(1_700_000_030, usegmt=True)}, 30.0),
        ({"retry-after": "garbage"}, None),
        ({}, None),
    ],
)
def test_retry_after_reaches_the_failure(headers: dict[str, str], expected: float | None) -> None:
    # The parsing itself is services/providers/retry_after.py's (tested there); this is the wiring.
    for given in (headers, CIMultiDict(headers)):
        failure = classify_error(429, given, _err("rate_limit_error", "slow"), now=1_700_000_000.0)
        assert failure.retry_after_s == expected


def test_adapter_classify_uses_its_clock_for_http_dates() -> None:
    clock = FakeClock(start=1_700_000_000.0)
    headers = CIMultiDict({"retry-after": formatdate(1_700_000_012, usegmt=True), "x-should-retry": "false"})
    failure = AnthropicAdapter(clock=clock).classify(429, headers, _err("rate_limit_error", "slow"))
    assert failure.retry_after_s == 12.0 and failure.extra["should_retry"] == "false"


# --- through the fake over HTTP ------------------------------------------------------------------


async def test_chat_plain(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    result = await adapter.chat(ask("the quick brown fox"), make_call(fake, session))
    assert result.text == "the quick brown fox"
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 4)
    assert result.model == "claude-sonnet-4-6" and result.response_id.startswith("msg_")
    rec = fake.requests[-1]
    assert (rec.method, rec.path) == ("POST", "/v1/messages")
    assert rec.headers["x-api-key"] == KEY
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert rec.headers["content-type"] == "application/json"
    assert rec.body == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "the quick brown fox"}],
    }


async def test_base_url_with_trailing_slash(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    await adapter.chat(ask("hi"), make_call(fake, session, base_url=fake.base_url + "/"))
    assert fake.requests[-1].path == "/v1/messages"


async def test_chat_multi_turn_with_system(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message("system", "You are terse."),
            Message("user", "Hi there"),
            Message("user", "are you up?"),
            Message("assistant", "Yes."),
            Message("developer", "Answer in French."),
            Message("user", "bonjour mon ami"),
        ],
    )
    result = await adapter.chat(req, make_call(fake, session))
    assert result.text == "bonjour mon ami"
    body = fake.last_body
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    # honest counts: system 3 + 3 words, then 2 + 3 + 1 + 3
    assert result.usage.prompt_tokens == 15


async def test_tools_round_trip(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    req = ask("weather in Paris", tools=[WEATHER], sampling=Sampling(tool_choice="required"))
    result = await adapter.chat(req, make_call(fake, session, "fault-tool"))
    assert result.finish_reason == "tool_calls"
    assert result.text == "Calling get_weather."
    assert result.tool_calls == [ToolCall(id="toolu_fake_0001", name="get_weather", arguments='{"x":1}')]
    assert fake.last_body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER.parameters}
    ]
    assert fake.last_body["tool_choice"] == {"type": "any"}

    # The next turn carries the call and its result; the fake checks they pair up like the API does.
    follow = ChatRequest(
        model="m",
        messages=[
            *req.messages,
            Message("assistant", result.text, tool_calls=result.tool_calls),
            Message("tool", "sunny and warm", tool_call_id=result.tool_calls[0].id),
        ],
        tools=[WEATHER],
    )
    again = await adapter.chat(follow, make_call(fake, session))
    assert again.text == "sunny and warm"
    assert fake.last_body["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": "toolu_fake_0001",
        "name": "get_weather",
        "input": {"x": 1},
    }
    assert fake.last_body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_fake_0001", "content": "sunny and warm"}],
    }


async def test_images_base64_and_url(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    req = ChatRequest(
        model="m",
        messages=[
            Message(
                "user",
                parts=[
                    ContentPart("text", text="compare these"),
                    ContentPart("image", data=JPEG, media_type="image/jpeg"),
                    ContentPart("image", image_url=data_url),
                    ContentPart("image", image_url="https://example.com/cat.png"),
                ],
            )
        ],
    )
    result = await adapter.chat(req, make_call(fake, session))
    assert result.text == "compare these"
    sources = [b["source"] for b in fake.last_body["messages"][0]["content"][1:]]
    assert sources == [
        {"type": "base64", "media_type": "image/jpeg", "data": base64.b64encode(JPEG).decode()},
        {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
        {"type": "url", "url": "https://example.com/cat.png"},
    ]


async def test_stop_temperature_and_max_tokens(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    call = make_call(fake, session)
    stopped = await adapter.chat(ask("one two STOP three", sampling=Sampling(stop=["STOP"], temperature=1.5)), call)
    assert (stopped.text, stopped.finish_reason) == ("one two", "stop")
    assert fake.last_body["stop_sequences"] == ["STOP"] and fake.last_body["temperature"] == 1.0
    capped = await adapter.chat(ask("one two three four", sampling=Sampling(max_tokens=2)), call)
    assert (capped.text, capped.finish_reason, capped.usage.completion_tokens) == ("one two", "length", 2)
    assert fake.last_body["max_tokens"] == 2


async def test_refusal_and_cache_read(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    refused = await adapter.chat(ask("something bad"), make_call(fake, session, "fault-refusal"))
    assert refused.finish_reason == "content_filter"
    cached = await adapter.chat(ask("a b c"), make_call(fake, session, "fault-cache-read-100"))
    assert (cached.usage.prompt_tokens, cached.usage.cached_tokens) == (103, 100)


async def test_stream_plain(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    batches = await collect(adapter.stream_chat(ask("the quick brown fox jumps"), make_call(fake, session)))
    chunks = flat(batches)
    assert [c.text for c in chunks] == ["the", " quick", " brown", " fox", " jumps", ""]
    assert chunks[0].role == "assistant" and all(c.role == "" for c in chunks[1:])
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 5)
    assert all(c.usage is None and c.finish_reason == "" for c in chunks[:-1])
    assert fake.last_body["stream"] is True
    assert fake.requests[-1].headers["accept"] == "text/event-stream"


async def test_stream_length_finish(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    chunks = flat(await collect(adapter.stream_chat(ask("a b c d", sampling=Sampling(max_tokens=3)), make_call(fake, session))))
    assert "".join(c.text for c in chunks) == "a b c"
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage.completion_tokens == 3


async def test_stream_tool_call(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    chunks = flat(await collect(adapter.stream_chat(ask("weather?", tools=[WEATHER]), make_call(fake, session, "fault-tool"))))
    assert "".join(c.text for c in chunks) == "Calling get_weather."
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas[0].index == 0 and deltas[0].id == "toolu_fake_0001" and deltas[0].name == "get_weather"
    assert all(d.index == 0 and not d.id and not d.name for d in deltas[1:])
    assert orjson.loads("".join(d.arguments for d in deltas)) == {"x": 1}
    assert chunks[-1].finish_reason == "tool_calls"


async def test_stream_thinking(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    chunks = flat(await collect(adapter.stream_chat(ask("why"), make_call(fake, session, "fault-thinking"))))
    assert "".join(c.reasoning for c in chunks) == "Let me think about that."
    assert "".join(c.text for c in chunks) == "why"


async def test_stream_split_across_reads(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    text = "naïve café 🌍🚀 日本語 done"
    chunks = flat(await collect(adapter.stream_chat(ask(text), make_call(fake, session, "fault-trickle"))))
    assert "".join(c.text for c in chunks) == text
    assert chunks[-1].finish_reason == "stop"


async def test_finished_stream_keeps_the_connection(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    await collect(adapter.stream_chat(ask("one"), make_call(fake, session)))
    await collect(adapter.stream_chat(ask("two"), make_call(fake, session)))
    await adapter.chat(ask("three"), make_call(fake, session))
    assert len({r.peer for r in fake.requests}) == 1


async def test_shared_adapter_serves_concurrent_streams(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    async def one(i: int) -> str:
        chunks = flat(await collect(adapter.stream_chat(ask(f"stream number {i}"), make_call(fake, session))))
        return "".join(c.text for c in chunks)

    assert await asyncio.gather(*(one(i) for i in range(12))) == [f"stream number {i}" for i in range(12)]


ERROR_CASES = [
    ("fault-400", "bad_request", 400),
    ("fault-401", "auth", 401),
    ("fault-403", "auth", 403),
    ("fault-404", "bad_request", 404),
    ("fault-413", "bad_request", 413),
    ("fault-429-retry-2", "rate_limited", 429),
    ("fault-500", "server", 500),
    ("fault-503", "server", 503),
    ("fault-529", "server", 529),
    ("fault-context", "context_length", 400),
]


@pytest.mark.parametrize(("model", "kind", "status"), ERROR_CASES)
async def test_chat_errors(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter, model: str, kind: str, status: int) -> None:
    with pytest.raises(UpstreamFailure) as info:
        await adapter.chat(ask("hi"), make_call(fake, session, model))
    assert (info.value.kind, info.value.status) == (kind, status)
    assert_no_secret(info.value)
    if status == 429:
        assert info.value.retry_after_s == 2.0


@pytest.mark.parametrize(("model", "kind", "status"), ERROR_CASES)
async def test_stream_errors_before_the_first_chunk(
    fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter, model: str, kind: str, status: int
) -> None:
    chunks, failure = await collect_until_failure(adapter.stream_chat(ask("hi"), make_call(fake, session, model)))
    assert chunks == []
    assert (failure.kind, failure.status) == (kind, status)
    assert_no_secret(failure)


@pytest.mark.parametrize(("model", "low", "high"), [("fault-429-retry-ms-1500", 1.5, 1.5), ("fault-429-date-3", 1.0, 3.0)])
async def test_retry_after_variants_from_the_wire(
    fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter, model: str, low: float, high: float
) -> None:
    with pytest.raises(UpstreamFailure) as info:
        await adapter.chat(ask("hi"), make_call(fake, session, model))
    assert info.value.kind == "rate_limited" and low <= info.value.retry_after_s <= high


async def test_fault_503_twice_then_served(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    call = make_call(fake, session, "fault-503-x2")
    for _ in range(2):
        with pytest.raises(UpstreamFailure) as info:
            await adapter.chat(ask("hi"), call)
        assert info.value.kind == "server"
    assert (await adapter.chat(ask("hi"), call)).text == "hi"


async def test_wrong_key_is_auth_and_never_echoed(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    wrong = "ant-wrong-key-5f3a9c1e7d"
    with pytest.raises(UpstreamFailure) as info:
        await adapter.chat(ask("hi"), make_call(fake, session, key=wrong))
    assert info.value.kind == "auth" and info.value.message == "provider rejected the gateway's key"
    assert_no_secret(info.value, wrong)
    with pytest.raises(UpstreamFailure) as info:
        await adapter.chat(ask("hi"), make_call(fake, session, key="bad\r\nx-evil: 1" + wrong))
    assert info.value.kind == "auth"
    assert_no_secret(info.value, wrong)


async def test_connection_refused_is_connect(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    call = make_call(fake, session, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamFailure) as info:
        await adapter.chat(ask("hi"), call)
    assert info.value.kind == "connect"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    _, failure = await collect_until_failure(adapter.stream_chat(ask("hi"), call))
    assert failure.kind == "connect"


async def test_cut_stream_yields_what_came_then_protocol(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    chunks, failure = await collect_until_failure(
        adapter.stream_chat(ask("one two three four five six"), make_call(fake, session, "fault-cut-after-3"))
    )
    assert "".join(c.text for c in chunks) == "one two three"
    assert chunks[0].role == "assistant"
    assert all(c.finish_reason == "" for c in chunks)  # never a "stop" on a cut (A6)
    assert failure.kind == "protocol" and failure.counts_for_breaker


async def test_cut_while_the_consumer_is_busy_loses_nothing(
    fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter
) -> None:
    # The last deltas and the connection loss arrive while nobody reads: aiohttp raises the loss
    # before handing out the buffered bytes, and the adapter must still deliver them.
    fake.stream_pause_s = 0.03
    texts: list[str] = []
    with pytest.raises(UpstreamFailure) as info:
        async for batch in adapter.stream_chat(ask("one two three four"), make_call(fake, session, "fault-cut-after-3")):
            texts.extend(c.text for c in batch)
            await asyncio.sleep(0.3)
    assert "".join(texts) == "one two three"
    assert info.value.kind == "protocol"


async def test_stream_ending_without_message_stop(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    chunks, failure = await collect_until_failure(
        adapter.stream_chat(ask("one two three"), make_call(fake, session, "fault-eof-after-2"))
    )
    assert [c.text for c in chunks] == ["one", " two"]
    assert failure.kind == "protocol" and "message_stop" in failure.message


async def test_error_event_mid_stream(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    chunks, failure = await collect_until_failure(
        adapter.stream_chat(ask("one two three"), make_call(fake, session, "fault-error-event-after-2"))
    )
    assert [c.text for c in chunks] == ["one", " two"]
    assert (failure.kind, failure.provider_code) == ("protocol", "overloaded_error")


async def test_malformed_event_then_the_end_of_the_body(fake: FakeAnthropic, session: aiohttp.ClientSession,
                                                       adapter: AnthropicAdapter) -> None:
    """The bad event is skipped, but the body ends before any stop_reason: still a cut answer (A6)."""
    chunks, failure = await collect_until_failure(
        adapter.stream_chat(ask("one two three"), make_call(fake, session, "fault-bad-json"))
    )
    assert [c.text for c in chunks] == ["one"]
    assert failure.kind == "protocol" and "stop_reason" in failure.message


async def test_a_malformed_event_mid_stream_is_skipped_and_the_rest_kept(
    fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    """Failover Bench S10 / RELIABILITY E3: the whole answer, its stop reason and the provider's usage."""
    call = make_call(fake, session, "fault-glitch-after-2")
    chunks = flat(await collect(adapter.stream_chat(ask("one two three four"), call)))
    assert "".join(c.text for c in chunks) == "one two three four"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(4, 4)]
    warnings = [r for r in caplog.records if r.name == "tollgate.providers"]
    assert [r.getMessage() for r in warnings] == ["skipped a malformed stream event from provider anthropic"]
    assert KEY not in caplog.text and "content_block_delta" not in caplog.text


async def test_a_finished_stream_without_message_stop_is_complete(
    fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter
) -> None:
    """Failover Bench S11: message_delta (stop_reason, usage), then a clean end without message_stop."""
    req = ask("one two three", sampling=Sampling(max_tokens=2))
    chunks = flat(await collect(adapter.stream_chat(req, make_call(fake, session, "fault-no-stop"))))
    assert "".join(c.text for c in chunks) == "one two"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["length"]
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(3, 2)]
    assert chunks[-1].finish_reason  # the finish chunk is the last thing delivered


async def test_a_final_message_stop_without_its_blank_line_still_ends_the_stream(
    fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter
) -> None:
    chunks = flat(await collect(adapter.stream_chat(ask("one two"), make_call(fake, session, "fault-unterminated"))))
    assert "".join(c.text for c in chunks) == "one two"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]


async def test_too_many_malformed_events_are_a_protocol_failure(
    session: aiohttp.ClientSession, adapter: AnthropicAdapter
) -> None:
    """Past MAX_SKIPPED_EVENTS the upstream is not glitching but speaking something else."""
    start = _sse(("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 1}}}))
    junk = b"event: content_block_delta\ndata: {nope\n\n" * (MAX_SKIPPED_EVENTS + 1)
    rest = _sse(_text_delta("b"), ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
                ("message_stop", {"type": "message_stop"}))

    async def messages(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for piece in (start, _sse(_text_delta("a")), junk, rest):
            await resp.write(piece)
        return resp

    async with serve(messages, "/v1/messages") as base_url:
        call = Call(Target(provider="anthropic", kind="anthropic", key_id="k", model="m", base_url=base_url),
                    api_key=KEY, session=session, timeout_s=10.0)
        chunks, failure = await collect_until_failure(adapter.stream_chat(ask("hi"), call))
    assert [c.text for c in chunks] == ["a"]
    assert failure.kind == "protocol" and "too many malformed" in failure.message


async def test_unary_cut_and_garbage_bodies(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    for model in ("fault-cut-after-1", "fault-bad-json"):
        with pytest.raises(UpstreamFailure) as info:
            await adapter.chat(ask("hi"), make_call(fake, session, model))
        assert info.value.kind == "protocol"


async def test_slow_first_token_times_out(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    call = make_call(fake, session, "fault-slow-first-5", timeout_s=10.0, first_token_timeout_s=0.3)
    chunks, failure = await collect_until_failure(adapter.stream_chat(ask("hi"), call))
    elapsed = loop.time() - start
    assert chunks == [] and failure.kind == "timeout" and "first token" in failure.message
    assert 0.25 <= elapsed < 1.0
    assert await fake.wait_disconnected(1.0)  # and the upstream was let go


async def test_chat_total_timeout(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    start = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamFailure) as info:
        await adapter.chat(ask("hi"), make_call(fake, session, "fault-slow-first-5", timeout_s=0.3))
    assert info.value.kind == "timeout"
    assert asyncio.get_running_loop().time() - start < 1.0


async def test_idle_timeout_after_some_tokens(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    call = make_call(fake, session, "fault-stall-after-2", timeout_s=10.0, idle_timeout_s=0.3)
    chunks, failure = await collect_until_failure(adapter.stream_chat(ask("one two three four"), call))
    assert [c.text for c in chunks] == ["one", " two"]
    assert failure.kind == "timeout" and "no data" in failure.message
    assert await fake.wait_disconnected(1.0)


async def test_stream_total_timeout(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    call = make_call(fake, session, "fault-slow-tokens-100", timeout_s=0.5)
    chunks, failure = await collect_until_failure(adapter.stream_chat(ask("a b c d e f g h i j"), call))
    assert 0 < len(chunks) < 10 and failure.kind == "timeout"


async def test_cancellation_mid_stream_closes_the_upstream(
    fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter
) -> None:
    got: list[Chunk] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for batch in adapter.stream_chat(ask("one two three four"), make_call(fake, session, "fault-stall-after-2")):
            got.extend(batch)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake.wait_disconnected(1.0)
    assert fake.streams_cancelled == 1 and fake.open_streams == 0
    assert got[0].text == "one"
    assert await eventually(lambda: fake.open_connections == 0)  # the socket is gone, not pooled


async def test_consumer_leaving_early_closes_the_upstream(
    fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter
) -> None:
    stream = adapter.stream_chat(ask("one two three four"), make_call(fake, session, "fault-slow-tokens-50"))
    first = await stream.__anext__()
    assert first[0].text == "one"
    await stream.aclose()  # type: ignore[attr-defined]
    assert await fake.wait_disconnected(1.0)
    assert fake.streams_cancelled == 1
    assert await eventually(lambda: fake.open_connections == 0)


async def test_list_models(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    assert await adapter.list_models(make_call(fake, session)) == ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"]
    assert fake.requests[-1].path.startswith("/v1/models?limit=")
    with pytest.raises(UpstreamFailure) as info:
        await adapter.list_models(make_call(fake, session, key="sk-ant-nope-nope-nope"))
    assert info.value.kind == "auth"


async def test_list_models_follows_pages(session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    names = [f"claude-{i}" for i in range(1205)]
    async with run_fake_anthropic(models=names) as fake:
        assert await adapter.list_models(make_call(fake, session)) == names
        assert len(fake.requests) == 2


async def test_embed_is_not_offered(fake: FakeAnthropic, session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    with pytest.raises(UpstreamFailure) as info:
        await adapter.embed(EmbedRequest(model="m", inputs=["x"]), make_call(fake, session))
    assert (info.value.kind, info.value.status, info.value.message) == ("bad_request", 400, "anthropic has no embeddings API")
    assert fake.requests == []


# --- the fake is wire-faithful: the official SDK parses it ---------------------------------------


@pytest.fixture
async def sdk(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key=KEY, max_retries=0, timeout=10.0, _strict_response_validation=True
    ) as client:
        yield client


SDK_TOOL = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {}}}


async def test_sdk_parses_a_message(sdk: anthropic.AsyncAnthropic) -> None:
    msg = await sdk.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, system="be brief", messages=[{"role": "user", "content": "hello SDK world"}]
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "hello SDK world"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (5, 3)


async def test_sdk_parses_tool_use_and_thinking(sdk: anthropic.AsyncAnthropic) -> None:
    msg = await sdk.messages.create(
        model="fault-tool", max_tokens=100, tools=[SDK_TOOL], messages=[{"role": "user", "content": "weather?"}]
    )
    tool = msg.content[1]
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.input == {"x": 1}
    assert msg.stop_reason == "tool_use"
    msg = await sdk.messages.create(model="fault-thinking", max_tokens=100, messages=[{"role": "user", "content": "hm"}])
    assert msg.content[0].type == "thinking" and msg.content[0].signature


async def test_sdk_parses_a_stream(sdk: anthropic.AsyncAnthropic) -> None:
    async with sdk.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "stream me please 🌍"}]
    ) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == "stream me please 🌍"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4 and final.usage.input_tokens == 4


@pytest.mark.parametrize("model", ["fault-tool", "fault-thinking", "fault-trickle", "fault-slow-tokens-5"])
async def test_sdk_parses_every_stream_shape(sdk: anthropic.AsyncAnthropic, model: str) -> None:
    async with sdk.messages.stream(
        model=model, max_tokens=100, tools=[SDK_TOOL], messages=[{"role": "user", "content": "a b c"}]
    ) as stream:
        events = [ev.type async for ev in stream]
        final = await stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    if model == "fault-tool":
        assert final.content[-1].type == "tool_use" and final.content[-1].input == {"x": 1}
    if model == "fault-thinking":
        assert final.content[0].type == "thinking" and final.content[0].signature == "sig_fake_0001"


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("fault-400", anthropic.BadRequestError),
        ("fault-401", anthropic.AuthenticationError),
        ("fault-403", anthropic.PermissionDeniedError),
        ("fault-404", anthropic.NotFoundError),
        ("fault-429-retry-2", anthropic.RateLimitError),
        ("fault-500", anthropic.InternalServerError),
        ("fault-529", anthropic.InternalServerError),
    ],
)
async def test_sdk_parses_errors(sdk: anthropic.AsyncAnthropic, model: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        await sdk.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["type"] == "error"  # type: ignore[attr-defined]


async def test_sdk_sees_the_error_event(sdk: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.APIStatusError):
        async with sdk.messages.stream(
            model="fault-error-event", max_tokens=10, messages=[{"role": "user", "content": "a b c"}]
        ) as stream:
            async for _ in stream:
                pass


async def test_sdk_lists_models(sdk: anthropic.AsyncAnthropic, fake: FakeAnthropic) -> None:
    ids = [m.id async for m in sdk.models.list()]
    assert ids == fake.models
    assert (await sdk.models.retrieve("claude-haiku-4-5")).id == "claude-haiku-4-5"


async def test_fake_rejects_what_anthropic_rejects(fake: FakeAnthropic, session: aiohttp.ClientSession) -> None:
    url = fake.base_url + "/v1/messages"
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    ok = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    bad = [
        {**ok, "seed": 1},
        {k: v for k, v in ok.items() if k != "max_tokens"},
        {**ok, "temperature": 1.5},
        {**ok, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        {**ok, "messages": [{"role": "system", "content": "a"}]},
        {**ok, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
        {**ok, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}]},
        {**ok, "tool_choice": {"type": "auto"}},
        {**ok, "tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]},
    ]
    for body in bad:
        async with session.post(url, json=body, headers=headers) as resp:
            assert resp.status == 400, body
            assert (await resp.json())["error"]["type"] == "invalid_request_error"
    async with session.post(url, json=ok, headers={**headers, "anthropic-version": ""}) as resp:
        assert resp.status == 400
    async with session.post(url, json=ok, headers={"anthropic-version": "2023-06-01"}) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["type"] == "authentication_error"
    async with session.post(url, json=ok, headers=headers) as resp:
        assert resp.status == 200 and resp.headers["request-id"].startswith("req_")


async def test_the_first_token_leaves_before_the_rest_of_its_read_is_translated(
        session: aiohttp.ClientSession, adapter: AnthropicAdapter) -> None:
    """The whole scripted stream in one write, as a fast model or a buffering proxy sends it:
    the first batch ends at the first content (the thinking delta), the rest follows, and the
    whole is what one translation of the stream gives."""
    async def messages(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(SCRIPTED_STREAM)
        return resp

    async with serve(messages, "/v1/messages") as origin:
        call = Call(Target(provider="anthropic", kind="anthropic", key_id="pk_test", model="c", base_url=origin),
                    api_key=KEY, session=session, timeout_s=5.0)
        batches = [b async for b in adapter.stream_chat(ask("hi"), call)]
    assert [(c.role, c.reasoning, c.text) for c in batches[0]] == [("assistant", "hm", "")]
    assert len(batches) == 2
    whole, _ = _translate(SCRIPTED_STREAM, 100_000)
    assert flat(batches) == flat(whole)
