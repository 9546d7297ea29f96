"""RELIABILITY E3, values of the wrong type from an OpenAI-compatible upstream: well-formed JSON
whose fields are not what the API reference says (a number for the text, a string for the
choices, an object for a tool call's arguments).

A whole completion with such a field is the upstream's protocol error: 502
`upstream_protocol_error` in OpenAI's shape (and the next candidate, as for any protocol error),
or, where the field is only informative (the id, the model, the finish reason, the usage, the
reasoning), the answer with that field left out; a tool call's arguments sent as JSON are kept as their text. In
a stream, such an event is a malformed event: skipped, the rest of the answer kept (as a
truncated one is). Before, each of these was a 500 "internal error" (TypeError or
AttributeError inside the gateway), a stream cut by an in-band internal error. OpenAI-compatible embeddings
answers too (a string for a vector's number, a string for an item, an object for the data), and
Gemini's answers and events had the same hole (a number for a part's text, a string for the parts or the
candidate), and Ollama's stream for a line whose `message` is not an object (the last tests).
"""

from __future__ import annotations

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from tests.support.gateway import config, provider, run_gateway
from tests.support.local_server import serve, serve_app, serve_chat
from tests.support.sse_read import CHAT, bearer

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _answer(message: bytes, rest: bytes = b'"id": "x", "created": 1, "model": "m"') -> bytes:
    return (b'{' + rest + b', "object": "chat.completion", "choices": [{"index": 0, "message": ' + message
            + b', "finish_reason": "stop"}]}')


HI = b'{"role": "assistant", "content": "hi"}'
# model -> (the upstream's answer, the status the caller gets)
ANSWERS: dict[str, tuple[bytes, int]] = {
    "content-number": (_answer(b'{"role": "assistant", "content": 5}'), 502),
    "message-string": (_answer(b'"hi"'), 502),
    "choices-object": (b'{"id": "x", "created": 1, "model": "m", "choices": {"a": 1}}', 502),
    "tool-calls-string": (_answer(b'{"role": "assistant", "content": "hi", "tool_calls": "x"}'), 502),
    "tool-name-number": (_answer(b'{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": '
                                 b'"function", "function": {"name": 7, "arguments": "{}"}}]}'), 502),
    "id-number": (_answer(HI, b'"id": 123, "created": 1, "model": "m"'), 200),
    "model-number": (_answer(HI, b'"id": "x", "created": 1, "model": 42'), 200),
    "finish-number": (_answer(HI).replace(b'"finish_reason": "stop"', b'"finish_reason": 7'), 200),
    "usage-string": (_answer(HI)[:-1] + b', "usage": "lots"}', 200),
    "reasoning-object": (_answer(b'{"role": "assistant", "content": "hi", "reasoning": {"effort": "low"}}'), 200),
    "arguments-object": (_answer(b'{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": '
                                 b'"function", "function": {"name": "f", "arguments": {"city": "Oslo"}}}]}'), 200),
}

HEAD = b'"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"'


def _event(rest: bytes) -> bytes:
    return b"data: {" + HEAD + b", " + rest + b"}\n\n"


TOKEN = _event(b'"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": null}]')
END = _event(b'"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]') + b"data: [DONE]\n\n"
# model -> an event between two good tokens
EVENTS: dict[str, bytes] = {
    "s-content-number": _event(b'"choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": null}]'),
    "s-choices-string": _event(b'"choices": "abc"'),
    "s-delta-list": _event(b'"choices": [{"index": 0, "delta": [1], "finish_reason": null}]'),
    "s-tool-calls-string": _event(b'"choices": [{"index": 0, "delta": {"tool_calls": "x"}, "finish_reason": null}]'),
    "s-index-string": _event(b'"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "a", "function": '
                             b'{"name": "f"}}]}, "finish_reason": null}]'),
    "s-finish-list": _event(b'"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": [1]}]'),
}


async def upstream(request: web.Request) -> web.StreamResponse:
    model = (await request.json())["model"]
    if model in ANSWERS:
        return web.Response(body=ANSWERS[model][0], content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for piece in (TOKEN, EVENTS[model], TOKEN, END):
        await resp.write(piece)
    await resp.write_eof()
    return resp


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory):
    async with serve_chat(upstream) as base_url:
        # A provider and key per case: one case's failures never open the breaker another meets.
        providers = tuple(provider(f"p-{m}", base_url, models=(m,), keys=(f"sk-{m}",)) for m in [*ANSWERS, *EVENTS])
        async with run_gateway(config(tmp_path_factory.mktemp("e3t"), providers=providers)) as gw:
            yield gw, bearer(await gw.new_key(tier="unlimited"))


MSGS = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("model", list(ANSWERS))
async def test_a_completion_with_a_field_of_the_wrong_type(shared, model):
    gw, auth = shared
    r = await gw.http.post(CHAT, json={"model": model, "messages": MSGS}, headers=auth)
    assert r.status_code == ANSWERS[model][1], r.text
    if r.status_code == 502:
        err = r.json()["error"]
        assert err["code"] == "upstream_protocol_error" and "malformed completion" in err["message"]
        return
    msg = r.json()["choices"][0]["message"]
    if model == "arguments-object":
        [call] = msg["tool_calls"]
        assert orjson.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    else:
        assert msg["content"] == "hi"
        # The model the answer names, else (a number) the one it was routed to.
        assert r.json()["model"] == (model if model == "model-number" else "m")


@pytest.mark.parametrize("model", list(EVENTS))
async def test_a_stream_event_with_a_field_of_the_wrong_type_is_skipped(shared, model):
    gw, auth = shared
    r = await gw.http.post(CHAT, json={"model": model, "messages": MSGS, "stream": True}, headers=auth)
    assert r.status_code == 200, r.text
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and "error" not in r.text
    texts = [d.get("content") for e in events[:-1] for c in orjson.loads(e)["choices"] if (d := c.get("delta"))]
    assert [t for t in texts if t] == ["ok", "ok"]


async def test_an_ollama_stream_line_whose_message_is_not_an_object_is_skipped(tmp_path):
    lines = [b'{"model": "m", "message": {"role": "assistant", "content": "ok"}, "done": false}',
             b'{"model": "m", "message": "hi", "done": false}',
             b'{"model": "m", "message": {"role": "assistant", "content": "ok"}, "done": false}',
             b'{"model": "m", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop", '
             b'"prompt_eval_count": 3, "eval_count": 2}']

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for line in lines:
            await resp.write(line + b"\n")
        await resp.write_eof()
        return resp

    async with serve(chat, "/api/chat") as origin:
        cfg = config(tmp_path, providers=(provider("local", origin, kind="ollama", models=("m",)),))
        async with run_gateway(cfg) as gw:
            r = await gw.http.post(CHAT, json={"model": "m", "messages": MSGS, "stream": True},
                                   headers=bearer(await gw.new_key()))
    assert r.status_code == 200, r.text
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and "error" not in r.text
    texts = [d.get("content") for e in events[:-1] for c in orjson.loads(e)["choices"] if (d := c.get("delta"))]
    assert [t for t in texts if t] == ["ok", "ok"]


def _gemini(cand: bytes, meta: bytes = b'{"promptTokenCount": 3, "candidatesTokenCount": 1}') -> bytes:
    return b'{"candidates": ' + cand + b', "usageMetadata": ' + meta + b', "modelVersion": "m"}'


def _gemini_text(text: bytes, finish: bytes = b'"STOP"') -> bytes:
    return _gemini(b'[{"content": {"role": "model", "parts": [{"text": ' + text + b'}]}, "finishReason": ' + finish + b"}]")


# name -> (the whole answer, the status the caller gets); each also streamed as one bad event
# between two good ones.
GEMINI: dict[str, tuple[bytes, int]] = {
    "text-number": (_gemini_text(b"5"), 502),
    "parts-string": (_gemini(b'[{"content": {"role": "model", "parts": "hi"}, "finishReason": "STOP"}]'), 502),
    "content-string": (_gemini(b'[{"content": "hi", "finishReason": "STOP"}]'), 502),
    "candidates-object": (_gemini(b'{"a": 1}'), 502),
    "candidate-string": (_gemini(b'["hi"]'), 502),
    "usage-string": (_gemini_text(b'"hi"')[:-1].replace(b'"usageMetadata": {"promptTokenCount": 3, '
                                                       b'"candidatesTokenCount": 1}', b'"usageMetadata": "x"') + b"}", 200),
    "finish-list": (_gemini_text(b'"hi"', b"[1]"), 200),
}


async def test_gemini_answers_and_events_with_a_field_of_the_wrong_type(tmp_path):
    async def handler(request: web.Request) -> web.StreamResponse:
        case = (await request.json())["contents"][-1]["parts"][0]["text"]
        if "streamGenerateContent" not in request.path:
            return web.Response(body=GEMINI[case][0], content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        ok = _gemini(b'[{"content": {"role": "model", "parts": [{"text": "ok"}]}}]')
        for event in (ok, GEMINI[case][0].replace(b'"finishReason": "STOP"', b'"finishReason": null'), ok,
                      _gemini_text(b'""')):
            await resp.write(b"data: " + event + b"\r\n\r\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    async with serve_app(app) as origin:
        # A provider and key per case, as above: a case's 502 never opens another's breaker.
        providers = tuple(provider(f"g-{c}", origin, kind="gemini", models=(c,), keys=(f"key-{c}",)) for c in GEMINI)
        async with run_gateway(config(tmp_path, providers=providers)) as gw:
            auth = bearer(await gw.new_key(tier="unlimited"))
            for case, (_, status) in GEMINI.items():
                msgs = [{"role": "user", "content": case}]
                r = await gw.http.post(CHAT, json={"model": case, "messages": msgs}, headers=auth)
                assert r.status_code == status, (case, r.text)
                if status == 502:
                    assert r.json()["error"]["code"] == "upstream_protocol_error", (case, r.text)
                else:
                    assert r.json()["choices"][0]["message"]["content"] == "hi", (case, r.text)
                r = await gw.http.post(CHAT, json={"model": case, "messages": msgs, "stream": True}, headers=auth)
                assert r.status_code == 200 and "error" not in r.text, (case, r.text)
                events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
                assert events[-1] == "[DONE]", (case, r.text)
                texts = [d.get("content") for e in events[:-1] for c in orjson.loads(e)["choices"]
                         if (d := c.get("delta"))]
                # The bad event is skipped; one whose usage is of the wrong type is kept with its
                # text, and one whose finish reason is ends the stream (any finish reason does).
                expect = {"usage-string": ["ok", "hi", "ok"], "finish-list": ["ok", "hi"]}.get(case, ["ok", "ok"])
                assert [t for t in texts if t] == expect, (case, r.text)


EMBEDDINGS: dict[str, bytes] = {
    "vector-of-strings": b'{"object": "list", "data": [{"index": 0, "embedding": ["a", "b"]}], "model": "m"}',
    "vector-nested": b'{"object": "list", "data": [{"index": 0, "embedding": [[0.1], 0.2]}], "model": "m"}',
    "vector-number": b'{"object": "list", "data": [{"index": 0, "embedding": 5}], "model": "m"}',
    "vector-bad-base64": b'{"object": "list", "data": [{"index": 0, "embedding": "!!!"}], "model": "m"}',
    "item-string": b'{"object": "list", "data": ["x"], "model": "m"}',
    "data-object": b'{"object": "list", "data": {"a": 1}, "model": "m"}',
}


async def test_embeddings_with_a_field_of_the_wrong_type_are_a_protocol_error(tmp_path):
    async def handler(request: web.Request) -> web.Response:
        case = (await request.json())["model"]
        if case == "model-number":
            return web.Response(body=b'{"object": "list", "data": [{"index": 0, "embedding": [0.5, 1]}], "model": 5}',
                                content_type="application/json")
        return web.Response(body=EMBEDDINGS[case], content_type="application/json")

    async with serve(handler, "/v1/embeddings") as origin:
        cases = [*EMBEDDINGS, "model-number"]
        providers = tuple(provider(f"e-{c}", origin + "/v1", models=(c,), keys=(f"sk-{c}",)) for c in cases)
        async with run_gateway(config(tmp_path, providers=providers)) as gw:
            auth = bearer(await gw.new_key(tier="unlimited"))
            for case in EMBEDDINGS:
                r = await gw.http.post("/v1/embeddings", json={"model": case, "input": "x"}, headers=auth)
                assert r.status_code == 502, (case, r.text)
                assert r.json()["error"]["code"] == "upstream_protocol_error", (case, r.text)
            r = await gw.http.post("/v1/embeddings", json={"model": "model-number", "input": "x"}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["embedding"] == [0.5, 1.0] and r.json()["model"] == "model-number"
