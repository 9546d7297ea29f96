"""services/rpc/convert.py: proto <-> core at the servicers' edge, where proto types stop."""

from __future__ import annotations

import pytest

from services.core.errors import InvalidArgument
from services.core.types import Chunk, ToolCallDelta, Target, Usage
from services.routing.route_log import AttemptRecord, RouteLog
from services.rpc import convert
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb


def _input(**kw) -> pb.ChatInput:
    inp = pb.ChatInput(**{"model": "m", "surface": "openai", **kw})
    if not inp.messages:
        inp.messages.add(role=pb.ROLE_USER, text="hi")
    return inp


def test_a_chat_input_becomes_a_chat_request():
    inp = _input(user="u-1", route=pb.RouteHints(provider="openai", strategy="cost"))
    inp.messages.add(role=pb.ROLE_ASSISTANT, text="", tool_calls=[pb.ToolCall(id="c1", name="f", arguments="{}")])
    inp.sampling.max_tokens = 12
    inp.sampling.stop.append("END")
    req = convert.chat_request(inp, max_messages=10, include_usage=True)
    assert (req.model, req.user, req.surface, req.include_usage) == ("m", "u-1", "openai", True)
    assert [m.role for m in req.messages] == ["user", "assistant"]
    assert req.messages[1].tool_calls[0].name == "f"
    assert (req.route.provider, req.route.strategy) == ("openai", "cost")
    assert (req.sampling.max_tokens, req.sampling.stop, req.sampling.temperature) == (12, ["END"], None)


def test_unset_sampling_is_the_defaults():
    req = convert.chat_request(_input(), max_messages=10)
    assert req.sampling.max_tokens is None and req.sampling.temperature is None and req.surface == "openai"


@pytest.mark.parametrize("inp, reason", [
    (pb.ChatInput(model="m"), "MESSAGES_REQUIRED"),
    (_input(model="bad\x01model"), "INVALID_MODEL"),
    (_input(model="x" * 257), "INVALID_MODEL"),
    (pb.ChatInput(model="m", messages=[pb.Message(role=pb.ROLE_USER, text="a")] * 3), "TOO_MANY_MESSAGES"),
    (_input(sampling=pb.Sampling(max_tokens=0)), "INVALID_MAX_TOKENS"),
])
def test_what_cannot_be_routed_is_refused_with_its_reason(inp, reason):
    with pytest.raises(InvalidArgument) as caught:
        convert.chat_request(inp, max_messages=2)
    assert caught.value.reason == reason


def test_a_route_log_becomes_the_route_the_caller_sees():
    log = RouteLog(strategy="priority", upstream_model="gpt-x-2024")
    log.attempts += [AttemptRecord("a", "a-k1", "gpt-x", "server", 503, 12.5), AttemptRecord("b", "b-k1", "gpt-x", "ok", 200, 30.0)]
    log.target = Target(provider="b", kind="openai", key_id="b-k1", model="gpt-x", base_url="http://b/v1")
    r = convert.route(log)
    assert (r.provider, r.kind, r.model, r.key_id, r.strategy) == ("b", "openai", "gpt-x-2024", "b-k1", "priority")
    assert [(a.provider, a.outcome, a.status) for a in r.attempts] == [("a", "server", 503), ("b", "ok", 200)]


def test_a_batch_of_chunks_becomes_one_delta_message():
    msg = convert.delta_batch([
        Chunk(role="assistant"), Chunk(text="Hel"), Chunk(text="lo"),
        Chunk(usage=Usage(1, 2)),  # usage travels in its own message
        Chunk(tool_calls=[ToolCallDelta(0, "c1", "f", "{}")]), Chunk(finish_reason="tool_calls"),
    ])
    assert msg.WhichOneof("event") == "delta"
    d = msg.delta.deltas
    assert len(d) == 5
    assert d[0].role == pb.ROLE_ASSISTANT and [x.text for x in d[1:3]] == ["Hel", "lo"]
    assert d[3].tool_calls[0].name == "f" and d[4].finish_reason == pb.FINISH_REASON_TOOL_CALLS


def test_usage_and_embed_requests():
    u = convert.usage(Usage(3, 4))
    assert (u.prompt_tokens, u.completion_tokens) == (3, 4)
    assert convert.usage(None) == pb.Usage()
    er = convert.embed_request(ipb.EmbedRequest(model="e", inputs=["a", "b"], dimensions=8))
    assert (er.model, er.inputs, er.dimensions, er.surface) == ("e", ["a", "b"], 8, "grpc")
    with pytest.raises(InvalidArgument):
        convert.embed_request(ipb.EmbedRequest(model="e"))
