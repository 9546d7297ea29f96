"""Tests for the Ollama adapter: pure translation cases, then the same paths over real HTTP against the fake."""

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
from services.providers import ollama_codec as codec
from services.providers.base import MAX_SKIPPED_EVENTS, Call
from services.providers.gemini_codec import AUTH_MESSAGE
from services.providers.ollama import OllamaAdapter
from tests.support.fakes.ollama import FakeOllama, run_fake_ollama
from tests.support.local_server import serve

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
PNG_B64 = base64.b64encode(PNG).decode()
LOOKUP = Tool("lookup", "Look a thing up", {"type": "object", "properties": {"x": {"type": "integer"}}})
MODEL = "llama3.2"


def user(text: str) -> Message:
    return Message("user", text)


def chat(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=list(messages), **kw)


def body_of(req: ChatRequest, stream: bool = True) -> dict[str, Any]:
    return codec.build_request(req, MODEL, stream=stream)


# --- pure translation ------------------------------------------------------------------------

TOOL_HISTORY = [
    user("weather in Paris?"),
    Message("assistant", "", tool_calls=[ToolCall("call_0", "weather", '{"city": "Paris"}')]),
    Message("tool", '{"temp": 21}', tool_call_id="call_0"),
]

REQUEST_CASES: list[tuple[str, ChatRequest, dict[str, Any]]] = [
    ("plain", chat(user("hi")), {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    (
        "multi_turn",
        chat(user("a"), Message("assistant", "b"), user("c")),
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "a"},
                                                      {"role": "assistant", "content": "b"},
                                                      {"role": "user", "content": "c"}]},
    ),
    (
        "system_and_developer_stay_in_place",
        chat(Message("system", "be brief"), user("a"), Message("developer", "now formal")),
        {"model": MODEL, "stream": True, "messages": [{"role": "system", "content": "be brief"},
                                                      {"role": "user", "content": "a"},
                                                      {"role": "system", "content": "now formal"}]},
    ),
    (
        "tool_calls_and_results",
        chat(*TOOL_HISTORY),
        {"model": MODEL, "stream": True, "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather",
                                                                              "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": '{"temp": 21}', "tool_name": "weather"},
        ]},
    ),
    (
        "tools_openai_style",
        chat(user("x"), tools=[LOOKUP, Tool("noargs")]),
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}], "tools": [
            {"type": "function", "function": {"name": "lookup", "description": "Look a thing up",
                                              "parameters": LOOKUP.parameters}},
            {"type": "function", "function": {"name": "noargs", "description": "",
                                              "parameters": {"type": "object", "properties": {}}}},
        ]},
    ),
    (
        "tool_choice_none_drops_tools",
        chat(user("x"), tools=[LOOKUP], sampling=Sampling(tool_choice="none")),
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ),
    (
        "images_inline_and_data_url",
        chat(Message("user", parts=[ContentPart("text", text="what is it?"), ContentPart("image", data=PNG),
                                    ContentPart("image", image_url=f"data:image/png;base64,{PNG_B64}")])),
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "what is it?",
                                                       "images": [PNG_B64, PNG_B64]}]},
    ),
    (
        "sampling",
        chat(user("x"), sampling=Sampling(temperature=0.2, top_p=0.9, max_tokens=64, stop=["END"], seed=7,
                                          presence_penalty=0.5, frequency_penalty=-0.5)),
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}],
         "options": {"temperature": 0.2, "top_p": 0.9, "num_predict": 64, "stop": ["END"], "seed": 7,
                     "presence_penalty": 0.5, "frequency_penalty": -0.5}},
    ),
    (
        "json_object",
        chat(user("x"), sampling=Sampling(response_format="json_object")),
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}], "format": "json"},
    ),
    (
        "json_schema_openai_wrapper",
        chat(user("x"), sampling=Sampling(response_format="json_schema", json_schema={
            "name": "out", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}})),
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}],
         "format": {"type": "object", "properties": {"a": {"type": "string"}}}},
    ),
]


@pytest.mark.parametrize("name,req,expected", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_build_request(name: str, req: ChatRequest, expected: dict[str, Any]) -> None:
    assert body_of(req) == expected


def test_stream_flag_is_always_explicit() -> None:
    assert body_of(chat(user("x")), stream=False)["stream"] is False


@pytest.mark.parametrize(
    "req,message",
    [
        (chat(Message("user", parts=[ContentPart("image", image_url="https://example.com/a.png")])),
         codec.INLINE_ONLY),
        (chat(Message("user", parts=[ContentPart("image", image_url="file:///etc/passwd")])), codec.INLINE_ONLY),
        (chat(Message("assistant", tool_calls=[ToolCall("c", "f", '"str"')])), "not a JSON object"),
    ],
)
def test_untranslatable_requests_fail_as_bad_request(req: ChatRequest, message: str) -> None:
    with pytest.raises(UpstreamFailure) as exc:
        body_of(req)
    assert (exc.value.kind, exc.value.status) == ("bad_request", 400) and message in exc.value.message


@pytest.mark.parametrize(
    "reason,tool,expected",
    [("stop", False, "stop"), ("length", False, "length"), ("", False, "stop"), ("stop", True, "tool_calls")],
)
def test_map_finish(reason: str, tool: bool, expected: str) -> None:
    assert codec.map_finish(reason, tool) == expected


def test_parse_response() -> None:
    result = codec.parse_response({
        "model": "llama3.2", "message": {"role": "assistant", "content": "", "thinking": "hmm",
                                         "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}},
                                                        {"id": "call_x", "function": {"name": "g", "arguments": {}}}]},
        "done": True, "done_reason": "stop", "prompt_eval_count": 12, "eval_count": 7,
    })
    assert (result.finish_reason, result.reasoning, result.model) == ("tool_calls", "hmm", "llama3.2")
    assert [(t.id, t.name, t.arguments) for t in result.tool_calls] == [("call_0", "f", '{"a":1}'),
                                                                        ("call_x", "g", "{}")]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.estimated) == (12, 7, False)
    cached = codec.parse_response({"message": {"content": "x"}, "done": True, "eval_count": 1})
    assert cached.usage.estimated  # prompt_eval_count left out: the prompt count is unknown


def test_line_splitter_any_chunking() -> None:
    lines = [orjson.dumps({"message": {"content": w}, "done": False}) for w in ("é", " ☃", " x")]
    lines.append(orjson.dumps({"done": True, "done_reason": "stop", "prompt_eval_count": 1, "eval_count": 3}))
    wire = b"\n".join(lines) + b"\n"
    for cut in range(1, len(wire)):
        splitter, decoder, chunks = codec.LineSplitter(), codec.StreamDecoder(), []
        for piece in (wire[:cut], wire[cut:]):
            for line in splitter.feed(piece):
                chunks.extend(decoder.feed(line))
        assert "".join(c.text for c in chunks) == "é ☃ x" and chunks[-1].finish_reason == "stop", cut
        assert decoder.finished and splitter.close() == []


def test_line_splitter_keeps_unterminated_last_line() -> None:
    splitter = codec.LineSplitter()
    assert splitter.feed(b'{"a":1}\n\n{"b"') == [b'{"a":1}']
    assert splitter.close() == [b'{"b"']


def test_stream_decoder() -> None:
    d = codec.StreamDecoder()
    assert d.feed(b'{"message": {"role": "assistant", "content": ""}, "done": false}') == []
    assert d.feed(b'{"message": {"content": "Hi"}, "done": false}') == [Chunk(text="Hi", role="assistant")]
    tool = d.feed(b'{"message": {"content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]}}')
    assert [(t.index, t.id, t.name, t.arguments) for t in tool[0].tool_calls] == [(0, "call_0", "f", '{"x":1}')]
    last = d.feed(b'{"done": true, "done_reason": "stop", "prompt_eval_count": 2, "eval_count": 3}')
    assert last[0].finish_reason == "tool_calls" and last[0].usage.completion_tokens == 3
    with pytest.raises(UpstreamFailure) as exc:
        codec.StreamDecoder().feed(b'{"error": "model crashed"}')
    assert (exc.value.kind, exc.value.message) == ("server", "model crashed")


def test_stream_decoder_skips_malformed_lines_up_to_the_limit() -> None:
    """RELIABILITY E3 / Failover Bench S10: a line that is not a JSON object gives nothing."""
    d = codec.StreamDecoder("ollama-local")
    junk = [b'{"message": {"content": "tru', b'"str"', b"[]", b"{nope"]
    for line in junk + junk[: MAX_SKIPPED_EVENTS - len(junk)]:
        assert d.feed(line) == []
    assert d.feed(b'{"message": {"content": "Hi"}, "done": false}') == [Chunk(text="Hi", role="assistant")]
    with pytest.raises(UpstreamFailure) as exc:
        d.feed(b"{nope")
    assert exc.value.kind == "protocol" and "too many malformed" in exc.value.message


@pytest.mark.parametrize(
    "status,headers,body,kind,retry,message",
    [
        (400, {}, b'{"error": "invalid options"}', "bad_request", None, "invalid options"),
        (400, {}, b'{"error": "input exceeds the maximum context length"}', "context_length", None, "context length"),
        (401, {}, b'{"error": "unauthorized"}', "auth", None, AUTH_MESSAGE),
        (403, {}, b"forbidden", "auth", None, AUTH_MESSAGE),
        (404, {}, b"{\"error\": \"model 'x' not found\"}", "not_found", None, "model 'x' not found"),
        (404, {}, b"404 page", "bad_request", None, "404 page"),
        (422, {}, b'{"error": {"message": "bad shape"}}', "bad_request", None, "bad shape"),
        (429, {"retry-after": "3"}, b'{"error": "slow down"}', "rate_limited", 3.0, "slow down"),
        (408, {}, b"", "timeout", None, "HTTP 408"),
        (500, {}, b'{"error": "llama runner process has terminated"}', "server", None, "runner"),
        (503, {}, b'{"error": "server busy"}', "server", None, "server busy"),
        (502, {}, b"<html>bad gateway</html>", "server", None, "bad gateway"),
    ],
)
def test_classify(status: int, headers: dict[str, str], body: bytes, kind: str, retry: float | None,
                  message: str) -> None:
    f = OllamaAdapter().classify(status, headers, body)
    assert (f.kind, f.status, f.retry_after_s) == (kind, status, retry)
    assert message in f.message


# --- over HTTP against the fake --------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with run_fake_ollama() as f:
        yield f


def make_call(fake: FakeOllama, session: aiohttp.ClientSession, model: str = MODEL, *, key: str = "",
              timeout_s: float = 10.0, first: float | None = None, idle: float | None = None,
              base_url: str | None = None) -> Call:
    target = Target(provider="ollama-local", kind="ollama", key_id="pk_test", model=model,
                    base_url=fake.base_url if base_url is None else base_url)
    return Call(target=target, api_key=key, session=session, timeout_s=timeout_s,
                first_token_timeout_s=first, idle_timeout_s=idle)


async def collect(req: ChatRequest, call: Call) -> list[list[Chunk]]:
    return [batch async for batch in OllamaAdapter().stream_chat(req, call)]


async def collect_until_failure(req: ChatRequest, call: Call) -> tuple[list[Chunk], UpstreamFailure]:
    chunks: list[Chunk] = []
    with pytest.raises(UpstreamFailure) as exc:
        async for batch in OllamaAdapter().stream_chat(req, call):
            chunks.extend(batch)
    return chunks, exc.value


def flat(batches: list[list[Chunk]]) -> list[Chunk]:
    return [c for b in batches for c in b]


async def test_plain_chat(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    result = await OllamaAdapter().chat(chat(user("hello brave new world")), make_call(fake, session))
    assert (result.text, result.finish_reason, result.model) == ("hello brave new world", "stop", MODEL)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 4)
    rec = fake.last
    assert (rec.method, rec.path) == ("POST", "/api/chat")
    assert rec.body == {"model": MODEL, "messages": [{"role": "user", "content": "hello brave new world"}],
                        "stream": False}
    assert "authorization" not in rec.headers  # plain Ollama takes no key


async def test_base_url_with_v1_suffix(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    call = make_call(fake, session, base_url=fake.base_url + "/v1/")
    assert (await OllamaAdapter().chat(chat(user("via v1")), call)).text == "via v1"
    assert "".join(c.text for c in flat(await collect(chat(user("streamed too")), call))) == "streamed too"
    assert await OllamaAdapter().list_models(call) == ["llama3.2:latest", "llava:latest", "all-minilm:latest"]
    assert [r.path for r in fake.requests] == ["/api/chat", "/api/chat", "/api/tags"]


async def test_key_sent_as_bearer_for_a_proxy(session: aiohttp.ClientSession) -> None:
    async with run_fake_ollama(required_key="ok_proxy_key_1234") as fake:
        result = await OllamaAdapter().chat(chat(user("hi")), make_call(fake, session, key="ok_proxy_key_1234"))
        assert result.text == "hi" and fake.last.headers["authorization"] == "Bearer ok_proxy_key_1234"
        with pytest.raises(UpstreamFailure) as exc:
            await OllamaAdapter().chat(chat(user("hi")), make_call(fake, session, key="ok_wrong_key_5678"))
        assert exc.value.kind == "auth" and "ok_wrong_key_5678" not in str(exc.value)


async def test_multi_turn_with_system(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    req = chat(Message("system", "be brief"), user("first"), Message("assistant", "ok"), user("second one"))
    result = await OllamaAdapter().chat(req, make_call(fake, session))
    assert result.text == "second one" and result.usage.prompt_tokens == 6
    assert [m["role"] for m in fake.last.body["messages"]] == ["system", "user", "assistant", "user"]


async def test_tool_call_answer(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    req = chat(user("use it"), tools=[LOOKUP])
    result = await OllamaAdapter().chat(req, make_call(fake, session, "fault-tool"))
    assert result.finish_reason == "tool_calls"
    assert [(t.id, t.name, orjson.loads(t.arguments)) for t in result.tool_calls] == [("call_0", "lookup", {"x": 1})]
    assert fake.last.body["tools"][0]["function"]["name"] == "lookup"

    chunks = flat(await collect(req, make_call(fake, session, "fault-tool")))
    deltas = [d for c in chunks for d in c.tool_calls]
    assert [(d.index, d.id, d.name, orjson.loads(d.arguments)) for d in deltas] == [(0, "call_0", "lookup", {"x": 1})]
    assert chunks[0].role == "assistant" and chunks[-1].finish_reason == "tool_calls"


async def test_tool_results_round_trip(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    result = await OllamaAdapter().chat(chat(*TOOL_HISTORY, user("so?")), make_call(fake, session))
    assert result.text == "so?"  # the fake checked arguments are an object, not a string
    assert fake.last.body["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert fake.last.body["messages"][2] == {"role": "tool", "content": '{"temp": 21}', "tool_name": "weather"}


async def test_inline_image(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    req = chat(Message("user", parts=[ContentPart("text", text="describe"), ContentPart("image", data=PNG)]))
    assert (await OllamaAdapter().chat(req, make_call(fake, session, "llava"))).text == "describe"
    assert fake.last.body["messages"][0]["images"] == [PNG_B64]


@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
async def test_image_url_refused_before_any_io(fake: FakeOllama, session: aiohttp.ClientSession,
                                               streamed: bool) -> None:
    req = chat(Message("user", parts=[ContentPart("image", image_url="https://example.com/cat.png")]))
    with pytest.raises(UpstreamFailure) as exc:
        if streamed:
            await collect(req, make_call(fake, session))
        else:
            await OllamaAdapter().chat(req, make_call(fake, session))
    assert (exc.value.kind, exc.value.status, exc.value.message) == ("bad_request", 400, codec.INLINE_ONLY)
    assert fake.requests == []


async def test_sampling_and_length(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    sampling = Sampling(temperature=0.0, top_p=0.5, max_tokens=2, stop=["x"], seed=1, presence_penalty=0.1,
                        frequency_penalty=0.2)
    result = await OllamaAdapter().chat(chat(user("one two three four"), sampling=sampling), make_call(fake, session))
    assert (result.text, result.finish_reason, result.usage.completion_tokens) == ("one two", "length", 2)
    assert fake.last.body["options"] == {"temperature": 0.0, "top_p": 0.5, "num_predict": 2, "stop": ["x"],
                                         "seed": 1, "presence_penalty": 0.1, "frequency_penalty": 0.2}


async def test_json_modes(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    call = make_call(fake, session)
    result = await OllamaAdapter().chat(chat(user("give json"), sampling=Sampling(response_format="json_object")), call)
    assert orjson.loads(result.text) == {"echo": "give json"} and fake.last.body["format"] == "json"
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}}
    req = chat(user("typed"), sampling=Sampling(response_format="json_schema", json_schema=schema))
    chunks = flat(await collect(req, call))
    assert orjson.loads("".join(c.text for c in chunks)) == {"echo": "typed"} and fake.last.body["format"] == schema


async def test_stream_ordered_chunks_usage_and_finish(session: aiohttp.ClientSession) -> None:
    async with run_fake_ollama(token_delay_s=0.02) as fake:  # paced, so each line is its own read
        batches = await collect(chat(user("the quick brown fox")), make_call(fake, session))
    chunks = flat(batches)
    assert len(batches) == 5 and all(len(b) == 1 for b in batches)
    assert [c.text for c in chunks] == ["the", " quick", " brown", " fox", ""]
    assert chunks[0].role == "assistant" and all(c.role == "" for c in chunks[1:])
    assert all(c.finish_reason == "" and c.usage is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 4)
    assert fake.last.body["stream"] is True


async def test_stream_length_and_thinking(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    chunks = flat(await collect(chat(user("a b c d"), sampling=Sampling(max_tokens=3)),
                                make_call(fake, session, "thinker")))
    assert chunks[0].reasoning == "Let me think." and "".join(c.text for c in chunks) == "a b c"
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage.completion_tokens == 3


async def test_embeddings_and_models(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    adapter, call = OllamaAdapter(), make_call(fake, session, "all-minilm")
    result = await adapter.embed(EmbedRequest("e", ["alpha beta", "gamma"], dimensions=4), call)
    assert len(result.vectors) == 2 and all(len(v) == 4 for v in result.vectors)
    assert (result.usage.prompt_tokens, result.usage.estimated, result.model) == (3, False, "all-minilm")
    assert fake.last.path == "/api/embed"
    assert fake.last.body == {"model": "all-minilm", "input": ["alpha beta", "gamma"], "dimensions": 4}
    assert await adapter.list_models(call) == ["llama3.2:latest", "llava:latest", "all-minilm:latest"]


@pytest.mark.parametrize(
    "model,kind,status,retry,message",
    [
        ("fault-400", "bad_request", 400, None, "invalid request"),
        ("fault-401", "auth", 401, None, AUTH_MESSAGE),
        ("fault-403", "auth", 403, None, AUTH_MESSAGE),
        ("missing-model", "not_found", 404, None, "model 'missing-model' not found"),
        ("fault-429-retry-2", "rate_limited", 429, 2.0, "too many requests"),
        ("fault-500", "server", 500, None, "unexpected EOF"),
        ("fault-503-x5", "server", 503, None, "server busy"),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["chat", "stream"])
async def test_error_mapping(fake: FakeOllama, session: aiohttp.ClientSession, model: str, kind: str, status: int,
                             retry: float | None, message: str, streamed: bool) -> None:
    call = make_call(fake, session, model)
    with pytest.raises(UpstreamFailure) as exc:
        if streamed:
            await collect(chat(user("hi")), call)
        else:
            await OllamaAdapter().chat(chat(user("hi")), call)
    f = exc.value
    assert (f.kind, f.status, f.retry_after_s) == (kind, status, retry)
    assert message in f.message


async def test_embed_missing_model(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    with pytest.raises(UpstreamFailure) as exc:
        await OllamaAdapter().embed(EmbedRequest("e", ["x"]), make_call(fake, session, "missing-model"))
    assert exc.value.kind == "not_found"


async def test_503_then_recovers(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    call = make_call(fake, session, "fault-503-x1")
    with pytest.raises(UpstreamFailure) as exc:
        await OllamaAdapter().chat(chat(user("hi")), call)
    assert exc.value.kind == "server"
    assert (await OllamaAdapter().chat(chat(user("hi again")), call)).text == "hi again"


async def test_cut_stream_is_protocol_after_partial_chunks(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    chunks, failure = await collect_until_failure(chat(user("one two three four five")),
                                                  make_call(fake, session, "fault-cut-after-3"))
    assert "".join(c.text for c in chunks) == "one two three"
    assert all(c.finish_reason == "" for c in chunks) and failure.kind == "protocol"


async def test_malformed_line_then_the_end_is_protocol_after_partial_chunks(fake: FakeOllama,
                                                                           session: aiohttp.ClientSession) -> None:
    """The bad line is skipped, but the body ends before the done line: a cut answer (A6)."""
    chunks, failure = await collect_until_failure(chat(user("one two three")),
                                                  make_call(fake, session, "fault-badjson-after-2"))
    assert "".join(c.text for c in chunks) == "one two" and failure.kind == "protocol"
    assert "before its done line" in failure.message


async def test_a_malformed_line_mid_stream_is_skipped_and_the_rest_kept(
        fake: FakeOllama, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    """Failover Bench S10 / RELIABILITY E3: the whole answer, its finish and the provider's usage."""
    chunks = flat(await collect(chat(user("one two three four")), make_call(fake, session, "fault-glitch-after-2")))
    assert "".join(c.text for c in chunks) == "one two three four"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(4, 4)]
    warnings = [r.getMessage() for r in caplog.records if r.name == "tollgate.providers"]
    assert warnings == ["skipped a malformed stream event from provider ollama-local"]
    assert "tru" not in caplog.text


async def test_a_done_line_without_its_newline_still_ends_the_stream(fake: FakeOllama,
                                                                   session: aiohttp.ClientSession) -> None:
    """NDJSON has no end marker: the done line, then a clean end, is the whole answer (S11), even
    without the line's newline."""
    chunks = flat(await collect(chat(user("one two three")), make_call(fake, session, "fault-unterminated")))
    assert "".join(c.text for c in chunks) == "one two three"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(3, 3)]


async def test_too_many_malformed_lines_are_a_protocol_failure(session: aiohttp.ClientSession) -> None:
    word = orjson.dumps({"model": MODEL, "message": {"role": "assistant", "content": "a"}, "done": False}) + b"\n"
    junk = b'{"model": "x", "message": {"content\n' * (MAX_SKIPPED_EVENTS + 1)
    done = orjson.dumps({"model": MODEL, "message": {"role": "assistant", "content": ""}, "done": True,
                         "done_reason": "stop", "prompt_eval_count": 1, "eval_count": 1}) + b"\n"

    async def api_chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for piece in (word, junk, done):
            await resp.write(piece)
        return resp

    async with serve(api_chat, "/api/chat") as origin:
        call = Call(Target(provider="ollama-local", kind="ollama", key_id="pk_test", model=MODEL, base_url=origin),
                    api_key="", session=session, timeout_s=10.0)
        chunks, failure = await collect_until_failure(chat(user("hi")), call)
    assert [c.text for c in chunks] == ["a"]
    assert failure.kind == "protocol" and "too many malformed" in failure.message


async def test_in_band_error_after_partial_chunks(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    chunks, failure = await collect_until_failure(chat(user("one two three")),
                                                  make_call(fake, session, "fault-error-after-1"))
    assert [c.text for c in chunks] == ["one"] and failure.kind == "server" and "unexpected EOF" in failure.message


async def test_slow_first_token_times_out(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    chunks, failure = await collect_until_failure(chat(user("hi")),
                                                  make_call(fake, session, "fault-slow-first-5", first=0.3))
    assert chunks == [] and failure.kind == "timeout" and "first token" in failure.message
    assert 0.25 <= time.monotonic() - started < 1.5
    assert await fake.wait_disconnect(1.0)


async def test_overall_timeout_on_whole_answer(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    with pytest.raises(UpstreamFailure) as exc:
        await OllamaAdapter().chat(chat(user("hi")), make_call(fake, session, "fault-slow-first-5", timeout_s=0.3))
    assert exc.value.kind == "timeout"


async def test_idle_timeout_after_partial_chunks(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    chunks, failure = await collect_until_failure(chat(user("one two three")),
                                                  make_call(fake, session, "fault-stall-after-2", idle=0.3))
    assert "".join(c.text for c in chunks) == "one two"
    assert failure.kind == "timeout" and "no data" in failure.message


async def test_cancellation_closes_upstream(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in OllamaAdapter().stream_chat(chat(user("one two three")),
                                                   make_call(fake, session, "fault-stall-after-2")):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2)
    assert fake.disconnects == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake.wait_disconnect(1.0) and fake.disconnects == 1


async def test_connect_error(fake: FakeOllama, session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    call = make_call(fake, session, base_url=f"http://127.0.0.1:{port}")
    for attempt in (OllamaAdapter().chat(chat(user("hi")), call), collect(chat(user("hi")), call)):
        with pytest.raises(UpstreamFailure) as exc:
            await attempt
        assert exc.value.kind == "connect"


async def test_the_first_token_leaves_before_the_rest_of_its_read_is_decoded(session: aiohttp.ClientSession) -> None:
    """A fast local model's whole answer in one write: the first batch ends at the first token,
    the rest follows, nothing lost or reordered."""
    words = [f" w{i}" for i in range(20)]
    lines = [{"model": MODEL, "message": {"role": "assistant", "content": ""}, "done": False}]
    lines += [{"model": MODEL, "message": {"role": "assistant", "content": w}, "done": False} for w in words]
    lines += [{"model": MODEL, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
               "prompt_eval_count": 3, "eval_count": 20}]

    async def api_chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        return resp

    async with serve(api_chat, "/api/chat") as origin:
        call = Call(Target(provider="ollama-local", kind="ollama", key_id="pk_test", model=MODEL, base_url=origin),
                    api_key="", session=session, timeout_s=10.0)
        batches = await collect(chat(user("hi")), call)
    assert [c.text for c in batches[0]] == [" w0"]
    assert len(batches) == 2
    assert "".join(c.text for c in flat(batches)) == "".join(words)
    assert [c.finish_reason for c in flat(batches) if c.finish_reason] == ["stop"]
