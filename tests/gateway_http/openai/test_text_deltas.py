"""The in-process plain-text path (inprocess.py's text_deltas): a batch of plain text deltas goes
to the OpenAI route as a tuple of str instead of a StreamChatResponse. What the client gets must
be the same bytes the message would have rendered to, and every other batch must stay a message."""

from __future__ import annotations

import pytest

from gateway_http.openai import codec
from services.core.types import Chunk, ToolCallDelta, Usage
from services.rpc import convert

BATCHES = [
    [Chunk("Hello")],
    [Chunk("Hello"), Chunk(" world"), Chunk("!")],
    [Chunk('quote " backslash \\ newline \n tab \t')],
    [Chunk("héllo ✓ 日本 🙂"), Chunk("\u2028\u0000")],
    [Chunk("a"), Chunk(""), Chunk("b")],
    [Chunk("", usage=Usage(3, 4))],
    [Chunk("last", usage=Usage(3, 4))],
    [Chunk("")],
    [Chunk("", "assistant")],
    [Chunk("", "assistant"), Chunk("Hi")],
    [Chunk("Hi", finish_reason="stop")],
    [Chunk("Hi"), Chunk("", finish_reason="length")],
    [Chunk("", reasoning="thinking")],
    [Chunk("x"), Chunk("", tool_calls=[ToolCallDelta(0, "call_1", "f", "{}")])],
]


def _via_message(batch: list[Chunk], w: codec.ChunkWriter) -> bytes:
    msg = convert.delta_batch(batch)
    return w.deltas(msg.delta) if msg is not None else b""


@pytest.mark.parametrize("batch", BATCHES)
def test_plain_text_batches_render_to_the_messages_bytes(batch):
    w = codec.ChunkWriter("req_abc", 1700000000, "gpt-4o-mini")
    plain = convert.plain_texts(batch)
    plain_only = all(not (c.role or c.reasoning or c.finish_reason or c.tool_calls) for c in batch)
    assert (plain is not None) == plain_only  # anything but plain text stays a message
    if plain is not None:
        assert all(type(t) is str and t for t in plain)
        assert (w.texts(plain) if plain else b"") == _via_message(batch, w)


async def test_an_in_process_caller_that_asks_gets_the_same_text_as_tuples(gateway, fake_openai):
    from services.server import local_channel
    from tollgate.inprocess import LOCAL_CALLS
    from tollgate.v1 import chat_pb2 as pb
    from tollgate.v1 import inference_service_pb2 as ipb
    from tollgate.v1 import inference_service_pb2_grpc as ipb_grpc

    key = await gateway.new_key()
    stub = ipb_grpc.InferenceServiceStub(local_channel(gateway.rt.app))
    req = ipb.StreamChatRequest(input=pb.ChatInput(model="tokens-5", messages=[pb.Message(role=pb.ROLE_USER, text="hi")]),
                                include_usage=True)
    seen = {}
    for ask in (False, True):
        call = stub.StreamChat(req, metadata=(("authorization", "Bearer " + key),), timeout=30)
        assert type(call) in LOCAL_CALLS
        if ask:
            call.text_deltas()
        kinds, text = [], ""
        async for msg in call:
            if type(msg) is tuple:
                kinds.append("texts")
                text += "".join(msg)
                continue
            kind = msg.WhichOneof("event")
            kinds.append(kind)
            if kind == "delta":
                text += "".join(d.text for d in msg.delta.deltas)
        seen[ask] = (kinds, text)
    (plain_kinds, plain_text), (asked_kinds, asked_text) = seen[False], seen[True]
    assert asked_text == plain_text == "tok0 tok1 tok2 tok3 tok4 "
    assert "texts" not in plain_kinds and "texts" in asked_kinds  # only the caller that asked
    # start, usage and end stay messages either way; the first batch holds the role: a message
    assert [k for k in asked_kinds if k != "texts"][0] == "start" and asked_kinds[-2:] == ["usage", "end"]
    assert "delta" in asked_kinds
