"""Tests for the Gemini adapter: pure translation cases, then the same paths over real HTTP against the fake."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from typing import Any, AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

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
from services.providers import gemini_codec as codec
from services.providers.base import MAX_SKIPPED_EVENTS, Call
from services.providers.gemini import GeminiAdapter
from tests.support.fakes.gemini import DEFAULT_KEY, FakeGemini, run_fake_gemini
from tests.support.local_server import serve

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
LOOKUP = Tool("lookup", "Look a thing up", {"type": "object", "properties": {"x": {"type": "integer"}},
                                             "additionalProperties": False})


def user(text: str) -> Message:
    return Message("user", text)


def chat(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model="gemini-2.5-flash", messages=list(messages), **kw)


# --- pure translation ------------------------------------------------------------------------

TOOL_HISTORY = [
    user("weather in Paris and Rome?"),
    Message("assistant", "Checking.", tool_calls=[ToolCall("call_0", "weather", '{"city": "Paris"}'),
                                                   ToolCall("call_1", "weather", '{"city": "Rome"}')]),
    Message("tool", '{"temp": 21}', tool_call_id="call_0"),
    Message("tool", "sunny", tool_call_id="call_1"),
]

REQUEST_CASES: list[tuple[str, ChatRequest, dict[str, Any]]] = [
    ("plain", chat(user("hi")), {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    (
        "multi_turn",
        chat(user("a"), Message("assistant", "b"), user("c")),
        {"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]},
                      {"role": "user", "parts": [{"text": "c"}]}]},
    ),
    (
        "system_and_developer",
        chat(Message("system", "be brief"), Message("developer", "no emoji"), user("hi")),
        {"systemInstruction": {"parts": [{"text": "be brief"}, {"text": "no emoji"}]},
         "contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    ),
    (
        "same_role_neighbours_merge",
        chat(user("one"), user("two")),
        {"contents": [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}]},
    ),
    (
        "empty_assistant_turn_dropped",
        chat(user("a"), Message("assistant", ""), user("b")),
        {"contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]},
    ),
    (
        "tool_calls_and_results",
        chat(*TOOL_HISTORY),
        {"contents": [
            {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]},
            {"role": "model", "parts": [{"text": "Checking."},
                                        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                                        {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}]},
            # Parallel results answer in one user turn, each under the NAME of its call.
            {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"temp": 21}}},
                                       {"functionResponse": {"name": "weather", "response": {"output": "sunny"}}}]},
        ]},
    ),
    (
        "tools_and_choice_auto",
        chat(user("x"), tools=[LOOKUP, Tool("noargs")], sampling=Sampling(tool_choice="auto")),
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
         "tools": [{"functionDeclarations": [
             {"name": "lookup", "description": "Look a thing up", "parametersJsonSchema": LOOKUP.parameters},
             {"name": "noargs"}]}],
         "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}},
    ),
    (
        "images_inline_data_url_and_http",
        chat(Message("user", parts=[
            ContentPart("text", text="what are these?"),
            ContentPart("image", data=PNG),
            ContentPart("image", image_url="data:image/webp;base64,UklGRg=="),
            ContentPart("image", image_url="https://example.com/cat.png"),
            ContentPart("image", image_url="https://example.com/photo", media_type="image/heic"),
        ])),
        {"contents": [{"role": "user", "parts": [
            {"text": "what are these?"},
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
            {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
            {"fileData": {"mimeType": "image/heic", "fileUri": "https://example.com/photo"}},
        ]}]},
    ),
    (
        "sampling",
        chat(user("x"), sampling=Sampling(temperature=0.2, top_p=0.9, max_tokens=64, stop=["END"], seed=7,
                                          presence_penalty=0.5, frequency_penalty=-0.5)),
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
         "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 64, "stopSequences": ["END"],
                              "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": -0.5}},
    ),
    (
        "json_object",
        chat(user("x"), sampling=Sampling(response_format="json_object")),
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
         "generationConfig": {"responseMimeType": "application/json"}},
    ),
    (
        "json_schema_openai_wrapper",
        chat(user("x"), sampling=Sampling(response_format="json_schema", json_schema={
            "name": "out", "strict": True, "schema": {"type": "object", "properties": {"a": {"type": "string"}}}})),
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
         "generationConfig": {"responseMimeType": "application/json",
                              "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "string"}}}}},
    ),
    (
        "text_format_is_default",
        chat(user("x"), sampling=Sampling(response_format="text")),
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
    ),
]


@pytest.mark.parametrize("name,req,expected", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_build_request(name: str, req: ChatRequest, expected: dict[str, Any]) -> None:
    assert codec.build_request(req) == expected


@pytest.mark.parametrize(
    "choice,config",
    [
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ("lookup", {"mode": "ANY", "allowedFunctionNames": ["lookup"]}),
    ],
)
def test_tool_choice(choice: str, config: dict[str, Any]) -> None:
    body = codec.build_request(chat(user("x"), tools=[LOOKUP], sampling=Sampling(tool_choice=choice)))
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_bare_json_schema_kept() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    gen = codec.generation_config(Sampling(response_format="json_schema", json_schema=schema))
    assert gen["responseJsonSchema"] == schema


@pytest.mark.parametrize(
    "req,message",
    [
        (chat(user("x"), Message("tool", "r", tool_call_id="call_9")), "answers no earlier tool call"),
        (chat(Message("assistant", tool_calls=[ToolCall("c", "f", "[1]")])), "not a JSON object"),
        (chat(Message("assistant", tool_calls=[ToolCall("c", "f", "{oops")])), "not a JSON object"),
        (chat(Message("user", parts=[ContentPart("image", image_url="ftp://h/x.png")])), "scheme"),
        (chat(Message("user", parts=[ContentPart("image", image_url="data:image/png")])), "data: URL"),
    ],
)
def test_untranslatable_requests_fail_as_bad_request(req: ChatRequest, message: str) -> None:
    with pytest.raises(UpstreamFailure) as exc:
        codec.build_request(req)
    assert exc.value.kind == "bad_request" and message in exc.value.message


def test_tool_result_name_falls_back_to_message_name() -> None:
    body = codec.build_request(chat(user("x"), Message("tool", "r", name="lookup", tool_call_id="zz")))
    assert body["contents"][0]["parts"][1] == {"functionResponse": {"name": "lookup", "response": {"output": "r"}}}


def test_non_base64_data_url_is_encoded() -> None:
    part = codec.image_part(ContentPart("image", image_url="data:image/svg+xml,%3Csvg%2F%3E"))
    assert part == {"inlineData": {"mimeType": "image/svg+xml", "data": base64.b64encode(b"<svg/>").decode()}}


@pytest.mark.parametrize(
    "reason,tool,expected",
    [
        ("STOP", False, "stop"), ("MAX_TOKENS", False, "length"), ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"), ("SPII", False, "content_filter"), ("OTHER", False, "stop"),
        ("STOP", True, "tool_calls"), ("MAX_TOKENS", True, "length"),
    ],
)
def test_map_finish(reason: str, tool: bool, expected: str) -> None:
    assert codec.map_finish(reason, tool) == expected


def test_parse_response_text_thoughts_tools_usage() -> None:
    result = codec.parse_response({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "hmm", "thought": True}, {"text": "Hello"}, {"text": " there"},
            {"functionCall": {"name": "f", "args": {"a": [1, 2]}}}, {"functionCall": {"name": "g"}}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 6,
                          "cachedContentTokenCount": 3, "totalTokenCount": 20},
        "modelVersion": "gemini-2.5-flash-001", "responseId": "r1",
    })
    assert (result.text, result.reasoning, result.finish_reason) == ("Hello there", "hmm", "tool_calls")
    assert [(t.id, t.name, t.arguments) for t in result.tool_calls] == [
        ("call_0", "f", '{"a":[1,2]}'), ("call_1", "g", "{}")]
    u = result.usage
    assert (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens, u.cached_tokens) == (10, 10, 6, 3)
    assert (result.model, result.response_id) == ("gemini-2.5-flash-001", "r1")


def test_parse_response_blocked_prompt_and_no_candidates() -> None:
    with pytest.raises(UpstreamFailure) as exc:
        codec.parse_response({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    assert exc.value.kind == "content_filter" and exc.value.provider_code == "PROHIBITED_CONTENT"
    with pytest.raises(UpstreamFailure) as exc:
        codec.parse_response({"candidates": []})
    assert exc.value.kind == "protocol"


def test_stream_decoder() -> None:
    d = codec.StreamDecoder()
    ev = lambda obj: orjson.dumps(obj)  # noqa: E731
    assert d.feed(ev({"usageMetadata": {"promptTokenCount": 3}})) == []
    first = d.feed(ev({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}))
    assert first == [Chunk(text="Hi", role="assistant")]
    tool = d.feed(ev({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"x": 1}}}]}}]}))
    assert tool[0].tool_calls[0].index == 0 and tool[0].tool_calls[0].id == "call_0"
    assert tool[0].tool_calls[0].arguments == '{"x":1}' and tool[0].role == ""
    last = d.feed(ev({"candidates": [{"finishReason": "STOP"}],
                      "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}}))
    assert last[0].finish_reason == "tool_calls" and last[0].usage.completion_tokens == 2
    assert d.finished
    assert d.feed(ev({"candidates": [{"content": {"parts": [{"text": "late"}]}}]})) == []


def test_stream_decoder_skips_malformed_events_up_to_the_limit() -> None:
    """RELIABILITY E3 / Failover Bench S10: an event that is not a JSON object gives nothing."""
    d = codec.StreamDecoder("gemini-main")
    junk = [b'{"candidates": [', b"[1, 2]", b"null", b"not json"]
    for data in junk + junk[: MAX_SKIPPED_EVENTS - len(junk)]:
        assert d.feed(data) == []
    assert d.feed(b'{"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}') == [Chunk(text="Hi", role="assistant")]
    with pytest.raises(UpstreamFailure) as exc:
        d.feed(b'{"candidates": [')
    assert exc.value.kind == "protocol" and "too many malformed" in exc.value.message


def test_stream_decoder_in_band_error() -> None:
    with pytest.raises(UpstreamFailure) as exc:
        codec.StreamDecoder().feed(b'{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}')
    assert (exc.value.kind, exc.value.status) == ("server", 503)


def _err(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return orjson.dumps({"error": err})


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}
KEY_INVALID = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}


@pytest.mark.parametrize(
    "status,headers,body,kind,retry,message",
    [
        (400, {}, _err(400, "INVALID_ARGUMENT", "Bad field x"), "bad_request", None, "Bad field x"),
        (400, {}, _err(400, "INVALID_ARGUMENT", "API key not valid.", [KEY_INVALID]), "auth", None,
         codec.AUTH_MESSAGE),
        (401, {}, _err(401, "UNAUTHENTICATED", "who?"), "auth", None, codec.AUTH_MESSAGE),
        (403, {}, _err(403, "PERMISSION_DENIED", "nope"), "auth", None, codec.AUTH_MESSAGE),
        (404, {}, _err(404, "NOT_FOUND", "models/x is not found"), "bad_request", None, "models/x is not found"),
        (422, {}, b"unprocessable", "bad_request", None, "unprocessable"),
        (400, {}, _err(400, "INVALID_ARGUMENT", "The input token count (9) exceeds the maximum number of tokens "
                       "allowed (8)."), "context_length", None, "input token count"),
        (429, {}, _err(429, "RESOURCE_EXHAUSTED", "quota", [RETRY_INFO]), "rate_limited", 1.5, "quota"),
        (429, {"retry-after": "7"}, _err(429, "RESOURCE_EXHAUSTED", "quota", [RETRY_INFO]), "rate_limited", 7.0,
         "quota"),
        (429, {"retry-after-ms": "250"}, b"{}", "rate_limited", 0.25, "HTTP 429"),
        (429, {"retry-after": "Wed, 21 Oct 2026 07:28:30 GMT", "date": "Wed, 21 Oct 2026 07:28:00 GMT"}, b"",
         "rate_limited", 30.0, "HTTP 429"),
        (429, {"retry-after": "soon"}, b"", "rate_limited", None, "HTTP 429"),
        (408, {}, b"", "timeout", None, "HTTP 408"),
        (409, {}, _err(409, "ABORTED", "try again"), "server", None, "try again"),
        (500, {}, _err(500, "INTERNAL", "boom"), "server", None, "boom"),
        (503, {}, _err(503, "UNAVAILABLE", "overloaded"), "server", None, "overloaded"),
        (504, {}, _err(504, "DEADLINE_EXCEEDED", "slow"), "server", None, "slow"),
        (502, {}, b"<html>Bad Gateway</html>", "server", None, "<html>Bad Gateway</html>"),
        (302, {}, b"", "protocol", None, "unexpected HTTP status 302"),
    ],
)
def test_classify(status: int, headers: dict[str, str], body: bytes, kind: str, retry: float | None,
                  message: str) -> None:
    f = GeminiAdapter().classify(status, headers, body)
    assert (f.kind, f.status, f.retry_after_s) == (kind, status, retry)
    assert message in f.message


def test_parse_duration() -> None:
    assert [codec.parse_duration(v) for v in ("2s", "1.5s", "0.25s", "2", None, "xs")] == [2.0, 1.5, 0.25, None,
                                                                                           None, None]


# --- over HTTP against the fake --------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with run_fake_gemini() as f:
        yield f


def make_call(fake: FakeGemini, session: aiohttp.ClientSession, model: str = "gemini-2.5-flash", *,
              key: str = DEFAULT_KEY, timeout_s: float = 10.0, first: float | None = None,
              idle: float | None = None, base_url: str | None = None) -> Call:
    target = Target(provider="gemini-main", kind="gemini", key_id="pk_test", model=model,
                    base_url=fake.base_url if base_url is None else base_url)
    return Call(target=target, api_key=key, session=session, timeout_s=timeout_s,
                first_token_timeout_s=first, idle_timeout_s=idle)


async def collect(adapter: GeminiAdapter, req: ChatRequest, call: Call) -> list[list[Chunk]]:
    return [batch async for batch in adapter.stream_chat(req, call)]


async def collect_until_failure(req: ChatRequest, call: Call) -> tuple[list[Chunk], UpstreamFailure]:
    chunks: list[Chunk] = []
    with pytest.raises(UpstreamFailure) as exc:
        async for batch in GeminiAdapter().stream_chat(req, call):
            chunks.extend(batch)
    return chunks, exc.value


def flat(batches: list[list[Chunk]]) -> list[Chunk]:
    return [c for b in batches for c in b]


async def test_plain_chat(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    result = await GeminiAdapter().chat(chat(user("hello brave new world")), make_call(fake, session))
    assert (result.text, result.finish_reason) == ("hello brave new world", "stop")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 4)
    assert result.model == "gemini-2.5-flash" and result.response_id.startswith("resp_")
    rec = fake.last
    assert rec.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert rec.headers["x-goog-api-key"] == DEFAULT_KEY and rec.query == {}
    assert rec.body == {"contents": [{"role": "user", "parts": [{"text": "hello brave new world"}]}]}


async def test_multi_turn_with_system(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    req = chat(Message("system", "be brief"), user("first"), Message("assistant", "ok"), user("second one"))
    result = await GeminiAdapter().chat(req, make_call(fake, session))
    assert result.text == "second one"
    assert fake.last.body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert [c["role"] for c in fake.last.body["contents"]] == ["user", "model", "user"]


async def test_tool_call_answer(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    req = chat(user("use it"), tools=[LOOKUP], sampling=Sampling(tool_choice="required"))
    result = await GeminiAdapter().chat(req, make_call(fake, session, "fault-tool"))
    assert result.finish_reason == "tool_calls"
    assert [(t.id, t.name, orjson.loads(t.arguments)) for t in result.tool_calls] == [("call_0", "lookup", {"x": 1})]
    decl = fake.last.body["tools"][0]["functionDeclarations"][0]
    assert decl["parametersJsonSchema"] == LOOKUP.parameters
    assert fake.last.body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    chunks = flat(await collect(GeminiAdapter(), req, make_call(fake, session, "fault-tool")))
    deltas = [d for c in chunks for d in c.tool_calls]
    assert [(d.index, d.id, d.name, orjson.loads(d.arguments)) for d in deltas] == [(0, "call_0", "lookup", {"x": 1})]
    assert chunks[0].role == "assistant" and chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_tool_results_round_trip(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    result = await GeminiAdapter().chat(chat(*TOOL_HISTORY, user("so?")), make_call(fake, session))
    assert result.text == "so?"  # the fake validated the body: names present, one kind of data per part
    contents = fake.last.body["contents"]
    assert contents[2]["parts"][0] == {"functionResponse": {"name": "weather", "response": {"temp": 21}}}
    assert contents[2]["parts"][-1] == {"text": "so?"}


async def test_images(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    req = chat(Message("user", parts=[ContentPart("text", text="describe"), ContentPart("image", data=PNG),
                                      ContentPart("image", image_url="https://example.com/a.jpg")]))
    result = await GeminiAdapter().chat(req, make_call(fake, session))
    assert result.usage.prompt_tokens == 3  # one word and two images, by the fake's count
    parts = fake.last.body["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}
    assert parts[2] == {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}}


async def test_sampling_and_length(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    sampling = Sampling(temperature=0.0, top_p=0.5, max_tokens=2, stop=["x"], seed=1, presence_penalty=0.1,
                        frequency_penalty=0.2)
    result = await GeminiAdapter().chat(chat(user("one two three four"), sampling=sampling), make_call(fake, session))
    assert (result.text, result.finish_reason, result.usage.completion_tokens) == ("one two", "length", 2)
    assert fake.last.body["generationConfig"] == {"temperature": 0.0, "topP": 0.5, "maxOutputTokens": 2,
                                                  "stopSequences": ["x"], "seed": 1, "presencePenalty": 0.1,
                                                  "frequencyPenalty": 0.2}


async def test_json_modes(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    adapter, call = GeminiAdapter(), make_call(fake, session)
    result = await adapter.chat(chat(user("give json"), sampling=Sampling(response_format="json_object")), call)
    assert orjson.loads(result.text) == {"echo": "give json"}
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    req = chat(user("typed"), sampling=Sampling(response_format="json_schema", json_schema={"name": "e", "schema": schema}))
    chunks = flat(await collect(adapter, req, call))
    assert orjson.loads("".join(c.text for c in chunks)) == {"echo": "typed"}
    assert fake.last.body["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}


async def test_stream_ordered_chunks_usage_and_finish(session: aiohttp.ClientSession) -> None:
    async with run_fake_gemini(token_delay_s=0.02) as fake:  # paced, so each event is its own read
        batches = await collect(GeminiAdapter(), chat(user("the quick brown fox jumps")), make_call(fake, session))
    chunks = flat(batches)
    assert len(batches) == 5 and all(len(b) == 1 for b in batches)
    assert [c.text for c in chunks] == ["the", " quick", " brown", " fox", " jumps"]
    assert chunks[0].role == "assistant" and all(c.role == "" for c in chunks[1:])
    assert all(c.finish_reason == "" and c.usage is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 5)
    rec = fake.last
    assert rec.path.endswith(":streamGenerateContent") and rec.query == {"alt": "sse"}


async def test_stream_length(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    chunks = flat(await collect(GeminiAdapter(), chat(user("a b c d"), sampling=Sampling(max_tokens=3)),
                                make_call(fake, session)))
    assert "".join(c.text for c in chunks) == "a b c"
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage.completion_tokens == 3


async def test_safety_finish(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    call = make_call(fake, session, "fault-safety")
    result = await GeminiAdapter().chat(chat(user("bad")), call)
    assert (result.text, result.finish_reason) == ("", "content_filter")
    chunks = flat(await collect(GeminiAdapter(), chat(user("bad")), call))
    assert chunks == [Chunk(role="assistant", finish_reason="content_filter", usage=chunks[0].usage)]


async def test_blocked_prompt(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    call = make_call(fake, session, "fault-blocked")
    with pytest.raises(UpstreamFailure) as exc:
        await GeminiAdapter().chat(chat(user("bad")), call)
    assert exc.value.kind == "content_filter"
    chunks, failure = await collect_until_failure(chat(user("bad")), call)
    assert chunks == [] and failure.kind == "content_filter"


async def test_thinking(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    call = make_call(fake, session, "thinker-1")
    result = await GeminiAdapter().chat(chat(user("why")), call)
    assert (result.text, result.reasoning, result.usage.reasoning_tokens, result.usage.completion_tokens) == (
        "why", "Let me think.", 3, 4)
    chunks = flat(await collect(GeminiAdapter(), chat(user("why not")), call))
    assert chunks[0].reasoning == "Let me think." and chunks[0].text == "why"
    assert chunks[-1].usage.reasoning_tokens == 3


async def test_embeddings(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    adapter, call = GeminiAdapter(), make_call(fake, session, "gemini-embedding-001")
    result = await adapter.embed(EmbedRequest("e", ["alpha", "beta"], dimensions=4), call)
    assert len(result.vectors) == 2 and all(len(v) == 4 for v in result.vectors)
    assert result.vectors[0] != result.vectors[1] and result.usage.estimated
    assert fake.last.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert fake.last.body["requests"][0] == {"model": "models/gemini-embedding-001",
                                             "content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 4}
    fake.reset()
    big = await adapter.embed(EmbedRequest("e", [f"t{i}" for i in range(150)]), call)
    assert len(big.vectors) == 150 and [len(b["requests"]) for b in fake.bodies()] == [100, 50]


async def test_list_models_pages(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    fake.models_page_size = 2
    names = await GeminiAdapter().list_models(make_call(fake, session))
    assert names == ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001"]
    assert [r.query.get("pageToken") for r in fake.requests] == [None, "2"]
    assert all(r.headers["x-goog-api-key"] == DEFAULT_KEY for r in fake.requests)


@pytest.mark.parametrize(
    "model,kind,status,retry,message",
    [
        ("fault-400", "bad_request", 400, None, "Request contains an invalid argument."),
        ("fault-401", "auth", 400, None, codec.AUTH_MESSAGE),
        ("fault-403", "auth", 403, None, codec.AUTH_MESSAGE),
        ("missing-model", "bad_request", 404, None, "models/missing-model is not found"),
        ("fault-429-retry-2", "rate_limited", 429, 2.0, "exceeded your current quota"),
        ("fault-500", "server", 500, None, "internal error"),
        ("fault-503-x5", "server", 503, None, "overloaded"),
        ("fault-context", "context_length", 400, None, "input token count"),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
async def test_error_mapping(fake: FakeGemini, session: aiohttp.ClientSession, model: str, kind: str, status: int,
                             retry: float | None, message: str, streamed: bool) -> None:
    call = make_call(fake, session, model)
    with pytest.raises(UpstreamFailure) as exc:
        if streamed:
            await collect(GeminiAdapter(), chat(user("hi")), call)
        else:
            await GeminiAdapter().chat(chat(user("hi")), call)
    f = exc.value
    assert (f.kind, f.status, f.retry_after_s) == (kind, status, retry)
    assert message in f.message


async def test_503_then_recovers(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    call = make_call(fake, session, "fault-503-x1")
    with pytest.raises(UpstreamFailure) as exc:
        await GeminiAdapter().chat(chat(user("hi")), call)
    assert exc.value.kind == "server" and exc.value.counts_for_breaker
    assert (await GeminiAdapter().chat(chat(user("hi again")), call)).text == "hi again"


@pytest.mark.parametrize("key", ["gk_wrong_key_123456", ""])
async def test_rejected_key_never_echoed(fake: FakeGemini, session: aiohttp.ClientSession, key: str) -> None:
    with pytest.raises(UpstreamFailure) as exc:
        await GeminiAdapter().chat(chat(user("hi")), make_call(fake, session, key=key))
    assert exc.value.kind == "auth" and exc.value.message == codec.AUTH_MESSAGE
    if key:
        assert key not in str(exc.value) and key not in repr(exc.value)
        assert all(key not in r.path and "key" not in r.query for r in fake.requests)
    else:
        assert "x-goog-api-key" not in fake.last.headers


async def test_cut_stream_is_protocol_after_partial_chunks(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    chunks, failure = await collect_until_failure(chat(user("one two three four five")),
                                                  make_call(fake, session, "fault-cut-after-3"))
    assert "".join(c.text for c in chunks) == "one two three"
    assert all(c.finish_reason == "" for c in chunks)
    assert failure.kind == "protocol" and failure.counts_for_breaker


async def test_malformed_event_then_the_end_is_protocol_after_partial_chunks(fake: FakeGemini,
                                                                            session: aiohttp.ClientSession) -> None:
    """The bad event is skipped, but the body ends before any finishReason: a cut answer (A6)."""
    chunks, failure = await collect_until_failure(chat(user("one two three")),
                                                  make_call(fake, session, "fault-badjson-after-2"))
    assert "".join(c.text for c in chunks) == "one two" and failure.kind == "protocol"
    assert "before its final event" in failure.message


async def test_a_malformed_event_mid_stream_is_skipped_and_the_rest_kept(
        fake: FakeGemini, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    """Failover Bench S10 / RELIABILITY E3: the whole answer, its finish and the provider's usage."""
    chunks = flat(await collect(GeminiAdapter(), chat(user("one two three four")),
                                make_call(fake, session, "fault-glitch-after-2")))
    assert "".join(c.text for c in chunks) == "one two three four"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(4, 4)]
    warnings = [r.getMessage() for r in caplog.records if r.name == "tollgate.providers"]
    assert warnings == ["skipped a malformed stream event from provider gemini-main"]
    assert DEFAULT_KEY not in caplog.text and "candidates" not in caplog.text


async def test_a_final_event_without_its_blank_line_still_ends_the_stream(fake: FakeGemini,
                                                                        session: aiohttp.ClientSession) -> None:
    """Gemini sends no end marker: a clean end after finishReason is the normal end (S11), even when
    the last event lacks its closing blank line."""
    chunks = flat(await collect(GeminiAdapter(), chat(user("one two three")),
                                make_call(fake, session, "fault-unterminated")))
    assert "".join(c.text for c in chunks) == "one two three"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(3, 3)]


async def test_too_many_malformed_events_are_a_protocol_failure(session: aiohttp.ClientSession) -> None:
    def frame(obj: Any) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"

    word = frame({"candidates": [{"content": {"role": "model", "parts": [{"text": "a"}]}}]})
    junk = b"data: {not json\r\n\r\n" * (MAX_SKIPPED_EVENTS + 1)
    last = frame({"candidates": [{"content": {"role": "model", "parts": [{"text": "b"}]}, "finishReason": "STOP"}],
                  "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2}})

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in (word, junk, last):
            await resp.write(piece)
        return resp

    async with serve(stream, "/v1beta/models/{name}") as origin:
        call = Call(Target(provider="gemini-main", kind="gemini", key_id="pk_test", model="gemini-2.5-flash",
                           base_url=origin), api_key=DEFAULT_KEY, session=session, timeout_s=10.0)
        chunks, failure = await collect_until_failure(chat(user("hi")), call)
    assert [c.text for c in chunks] == ["a"]
    assert failure.kind == "protocol" and "too many malformed" in failure.message


async def test_in_band_error_after_partial_chunks(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    chunks, failure = await collect_until_failure(chat(user("one two three")),
                                                  make_call(fake, session, "fault-error-after-1"))
    assert [c.text for c in chunks] == ["one"] and (failure.kind, failure.status) == ("server", 500)


async def test_slow_first_token_times_out(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    chunks, failure = await collect_until_failure(chat(user("hi")),
                                                  make_call(fake, session, "fault-slow-first-5", first=0.3))
    elapsed = time.monotonic() - started
    assert chunks == [] and failure.kind == "timeout" and "first token" in failure.message
    assert 0.25 <= elapsed < 1.5
    assert await fake.wait_disconnect(1.0)


async def test_overall_timeout_on_whole_answer(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamFailure) as exc:
        await GeminiAdapter().chat(chat(user("hi")), make_call(fake, session, "fault-slow-first-5", timeout_s=0.3))
    assert exc.value.kind == "timeout" and time.monotonic() - started < 1.5


async def test_idle_timeout_after_partial_chunks(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    chunks, failure = await collect_until_failure(chat(user("one two three")),
                                                  make_call(fake, session, "fault-stall-after-2", idle=0.3))
    assert "".join(c.text for c in chunks) == "one two"
    assert failure.kind == "timeout" and "no data" in failure.message


async def test_cancellation_closes_upstream(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in GeminiAdapter().stream_chat(chat(user("one two three")),
                                                   make_call(fake, session, "fault-stall-after-2")):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2)
    assert fake.disconnects == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake.wait_disconnect(1.0) and fake.disconnects == 1


async def test_leaving_the_stream_early_closes_upstream(session: aiohttp.ClientSession) -> None:
    async with run_fake_gemini(token_delay_s=0.5) as fake:
        stream = GeminiAdapter().stream_chat(chat(user("a b c d e f")), make_call(fake, session))
        async for _ in stream:
            break
        await stream.aclose()  # what `async with aclosing(...)` or the consumer's finally does
        assert await fake.wait_disconnect(1.0)


async def test_connect_error(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    # A port that was just free: nothing listens there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    call = make_call(fake, session, base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(UpstreamFailure) as exc:
        await GeminiAdapter().chat(chat(user("hi")), call)
    assert exc.value.kind == "connect" and DEFAULT_KEY not in str(exc.value)
    with pytest.raises(UpstreamFailure) as exc:
        await collect(GeminiAdapter(), chat(user("hi")), call)
    assert exc.value.kind == "connect"


async def test_bad_request_fails_before_any_io(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    req = chat(user("x"), Message("tool", "r", tool_call_id="call_404"))
    with pytest.raises(UpstreamFailure) as exc:
        await collect(GeminiAdapter(), req, make_call(fake, session))
    assert exc.value.kind == "bad_request" and fake.requests == []


async def test_base_url_with_version_suffix(fake: FakeGemini, session: aiohttp.ClientSession) -> None:
    call = make_call(fake, session, "models/gemini-2.5-pro", base_url=fake.base_url + "/v1beta/")
    assert (await GeminiAdapter().chat(chat(user("ok then")), call)).text == "ok then"
    assert fake.last.path == "/v1beta/models/gemini-2.5-pro:generateContent"


async def test_session_total_timeout_does_not_cut_a_long_stream() -> None:
    # The attempt's own deadlines rule; a shared session's default total must not end a stream.
    async with run_fake_gemini(token_delay_s=0.1) as fake, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2, sock_connect=5)) as short:
        chunks = flat(await collect(GeminiAdapter(), chat(user("a b c d e")), make_call(fake, short)))
    assert "".join(c.text for c in chunks) == "a b c d e" and chunks[-1].finish_reason == "stop"


async def test_the_first_token_leaves_before_the_rest_of_its_read_is_decoded(session: aiohttp.ClientSession) -> None:
    """A whole streamed answer in one write: the first batch ends at the first text, the rest
    follows, nothing lost or reordered."""
    words = [f" w{i}" for i in range(20)]
    events = [{"candidates": [{"content": {"role": "model", "parts": [{"text": w}]}}]} for w in words]
    events.append({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 20, "totalTokenCount": 23}})

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events))
        return resp

    async with serve(stream, "/v1beta/models/{name}") as origin:
        call = Call(Target(provider="gemini-main", kind="gemini", key_id="pk_test", model="gemini-2.5-flash",
                           base_url=origin), api_key=DEFAULT_KEY, session=session, timeout_s=10.0)
        batches = await collect(GeminiAdapter(), chat(user("hi")), call)
    assert [c.text for c in batches[0]] == [" w0"]
    assert len(batches) == 2
    assert "".join(c.text for c in flat(batches)) == "".join(words)
    assert [c.finish_reason for c in flat(batches) if c.finish_reason] == ["stop"]
