"""gateway_http/openai/codec.py: OpenAI Chat Completions JSON <-> tollgate.v1 messages, without a server.

The SDK tests (test_openai_sdk.py) drive the whole bridge; these pin the codec itself: what a
body becomes, which field an error names with which status, and that what it renders is what the
official `openai` SDK parses.
"""

from __future__ import annotations

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway_http.errors import BridgeError
from gateway_http.openai import codec
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb


def test_a_body_becomes_one_chat_input():
    inp = codec.chat_input({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 0.5, "max_tokens": 64, "stop": "END", "seed": 7, "user": "u-1",
        "provider": "openai", "strategy": "cost",
        "tools": [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
        "tool_choice": "auto", "logit_bias": {"1": 2},  # unknown to the codec: ignored, as OpenAI-compatible servers do
    })
    assert inp.model == "gpt-4o-mini" and inp.surface == "openai"
    assert [(m.role, m.text) for m in inp.messages] == [(pb.ROLE_SYSTEM, "be brief"), (pb.ROLE_USER, "hi")]
    s = inp.sampling
    assert (s.temperature, s.max_tokens, list(s.stop), s.seed, s.tool_choice) == (0.5, 64, ["END"], 7, "auto")
    assert (inp.user, inp.route.provider, inp.route.strategy) == ("u-1", "openai", "cost")
    assert [t.name for t in inp.tools] == ["get_time"] and inp.tools[0].parameters["type"] == "object"


def test_max_completion_tokens_wins_over_max_tokens():
    inp = codec.chat_input({"model": "m", "messages": [{"role": "user", "content": "x"}],
                            "max_tokens": 10, "max_completion_tokens": 20})
    assert inp.sampling.max_tokens == 20


@pytest.mark.parametrize("body, status, param", [
    ({"model": "m"}, 400, "messages"),
    ({"model": "m", "messages": []}, 400, "messages"),
    ({"model": "m", "messages": "hi"}, 422, "messages"),
    ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, 422, "model"),
    ({"model": "a\nb", "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, 400, "temperature"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 422, "temperature"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": 5}, 422, "stop"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}, 400,
     "response_format"),
])
def test_a_bad_field_is_named_with_openai_status(body, status, param):
    with pytest.raises(BridgeError) as caught:
        codec.chat_input(body)
    assert (caught.value.status, caught.value.param) == (status, param)


def test_bodies_that_are_not_objects_are_refused():
    for raw in (b"", b"[1]", b"{nope"):
        with pytest.raises(BridgeError) as caught:
            codec.load_json(raw)
        assert caught.value.status == 400
    assert codec.load_json(b'{"a": 1}') == {"a": 1}


def test_stream_options_shape():
    assert codec.stream_options({}) is False
    assert codec.stream_options({"stream_options": {"include_usage": True}}) is True
    with pytest.raises(BridgeError):
        codec.stream_options({"stream_options": {"include_usage": "yes"}})


def test_a_completion_renders_as_the_sdk_reads_it():
    resp = ipb.ChatResponse(id="req_abc", text="", created=1_700_000_000, finish_reason=pb.FINISH_REASON_TOOL_CALLS,
                            usage=pb.Usage(prompt_tokens=5, completion_tokens=3, total_tokens=8, cached_tokens=2),
                            route=pb.Route(model="gpt-4o-mini-2024"))
    resp.tool_calls.add(id="call_1", name="get_time", arguments='{"tz":"UTC"}')
    done = ChatCompletion.model_validate(orjson.loads(codec.completion_json(resp, "gpt-4o-mini")))
    assert done.id == "chatcmpl-abc" and done.model == "gpt-4o-mini-2024"
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls[0].function.name == "get_time"
    assert done.usage.total_tokens == 8 and done.usage.prompt_tokens_details.cached_tokens == 2


def _chunks(sse: bytes) -> list[ChatCompletionChunk]:
    events = [e for e in sse.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    return [ChatCompletionChunk.model_validate(orjson.loads(e[6:])) for e in events]


def test_stream_chunks_render_as_the_sdk_reads_them():
    w = codec.ChunkWriter("req_xyz", 1_700_000_000, "m")
    batch = ipb.DeltaBatch()
    batch.deltas.add(text="Hel")
    batch.deltas.add(text="lo \"you\"")
    batch.deltas.add(tool_calls=[pb.ToolCallDelta(index=0, id="call_9", name="f", arguments="{}")])
    batch.deltas.add(finish_reason=pb.FINISH_REASON_STOP)
    chunks = _chunks(w.role() + w.deltas(batch) + w.usage(pb.Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)))
    assert {c.id for c in chunks} == {"chatcmpl-xyz"} and {c.model for c in chunks} == {"m"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == 'Hello "you"'
    assert chunks[3].choices[0].delta.tool_calls[0].function.name == "f"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 3
    assert codec.DONE == b"data: [DONE]\n\n"
