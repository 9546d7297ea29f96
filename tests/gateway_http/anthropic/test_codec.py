"""gateway_http/anthropic/codec.py: Anthropic Messages JSON <-> tollgate.v1 messages, without a server.

The SDK tests (test_anthropic_surface.py) drive the whole bridge; these pin the codec itself: what
a body becomes, which field an error names, and that what it renders is what the official
`anthropic` SDK parses, content blocks opening and closing in order.
"""

from __future__ import annotations

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway_http.anthropic import codec
from gateway_http.errors import BridgeError
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb

EVENT = TypeAdapter(RawMessageStreamEvent)


def test_a_body_becomes_one_chat_input():
    inp = codec.chat_input({
        "model": "claude-sonnet-4-5", "max_tokens": 100, "system": "be brief", "temperature": 0.2,
        "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
        "messages": [{"role": "user", "content": "hi"},
                     {"role": "assistant", "content": [{"type": "text", "text": "hello"}]}],
    })
    assert (inp.model, inp.surface, inp.user) == ("claude-sonnet-4-5", "anthropic", "u-1")
    assert [(m.role, m.text) for m in inp.messages] == [
        (pb.ROLE_SYSTEM, "be brief"), (pb.ROLE_USER, "hi"), (pb.ROLE_ASSISTANT, "hello")]
    assert (inp.sampling.max_tokens, list(inp.sampling.stop)) == (100, ["END"])
    assert inp.sampling.temperature == pytest.approx(0.2)


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5}, "model"),
    ({"model": "m", "messages": [], "max_tokens": 5}, "messages"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "stop_sequences": "END"},
     "stop_sequences"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "stream": "yes"}, "stream"),
])
def test_a_bad_field_is_named(body, param):
    with pytest.raises(BridgeError) as caught:
        codec.chat_input(body)
    assert caught.value.param == param and 400 <= caught.value.status < 500


def test_count_tokens_needs_no_max_tokens():
    inp = codec.chat_input({"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}, require_max_tokens=False)
    assert codec.estimate_tokens(inp) >= 100


def test_a_message_renders_as_the_sdk_reads_it():
    resp = ipb.ChatResponse(id="req_abc", text="Let me check.", reasoning="thinking it over",
                            finish_reason=pb.FINISH_REASON_STOP, usage=pb.Usage(prompt_tokens=7, completion_tokens=4),
                            route=pb.Route(model="claude-x"))
    resp.tool_calls.add(id="", name="get_time", arguments='{"tz":"UTC"}')
    msg = Message.model_validate(orjson.loads(codec.message_json(resp, "claude", thinking=True)))
    assert msg.id == "msg_abc" and msg.model == "claude-x" and msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use"]
    assert msg.content[2].input == {"tz": "UTC"} and msg.content[2].id == "toolu_abc_0"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (7, 4)
    hidden = Message.model_validate(orjson.loads(codec.message_json(resp, "claude", thinking=False)))
    assert [b.type for b in hidden.content] == ["text", "tool_use"]  # reasoning only when asked for


def _events(sse: bytes) -> list:
    out = []
    for raw in filter(None, sse.split(b"\n\n")):
        name, data = raw.split(b"\n", 1)
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        doc = orjson.loads(data[6:])
        assert doc["type"] == name[7:].decode()
        if doc["type"] != "ping":
            out.append(EVENT.validate_python(doc))
    return out


def test_a_stream_renders_blocks_in_order_as_the_sdk_reads_them():
    w = codec.StreamWriter("req_s1", "claude", thinking=False)
    batch = ipb.DeltaBatch()
    batch.deltas.add(text="Hel")
    batch.deltas.add(text="lo")
    batch.deltas.add(tool_calls=[pb.ToolCallDelta(index=0, id="toolu_1", name="f", arguments='{"a":')])
    batch.deltas.add(tool_calls=[pb.ToolCallDelta(index=0, arguments="1}")])
    w.usage(pb.Usage(prompt_tokens=3, completion_tokens=5))
    events = _events(w.start() + w.deltas(batch) + w.end(ipb.StreamEnd(finish_reason=pb.FINISH_REASON_STOP)))
    types = [e.type for e in events]
    assert types == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    assert events[0].message.id == "msg_s1"
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta") == "Hello"
    assert "".join(e.delta.partial_json for e in events
                   if e.type == "content_block_delta" and e.delta.type == "input_json_delta") == '{"a":1}'
    assert events[-2].delta.stop_reason == "tool_use" and events[-2].usage.output_tokens == 5


def test_an_empty_stream_still_has_one_text_block():
    w = codec.StreamWriter("req_s2", "claude", thinking=False)
    events = _events(w.start() + w.end(ipb.StreamEnd(finish_reason=pb.FINISH_REASON_LENGTH)))
    assert [e.type for e in events] == ["message_start", "content_block_start", "content_block_stop",
                                        "message_delta", "message_stop"]
    assert events[3].delta.stop_reason == "max_tokens"
