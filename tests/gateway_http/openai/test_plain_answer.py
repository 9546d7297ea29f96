"""An in-process unary chat answer as a ChatAnswer (inprocess.py's plain_answer): the OpenAI body
rendered from it is byte for byte the one rendered from the ChatResponse, and every answer the
message would treat otherwise (a tool call, a value of another type, a count past int32) stays a
message."""

from __future__ import annotations

import orjson
import pytest

from gateway_http.openai import codec
from services.core.types import ChatResult, Target, ToolCall, Usage
from services.routing.route_log import RouteLog
from services.rpc import convert
from tollgate.inprocess import ChatAnswer

TARGET = Target("p", "openai_compatible", "k1", "up-model", "http://127.0.0.1:1/v1")


def _both(res: ChatResult, log: RouteLog, u: Usage | None) -> tuple[bytes, bytes]:
    answer = convert.chat_answer(res, "req_abc", log, u, 1700000000.7)
    assert type(answer) is ChatAnswer
    msg = convert.chat_response(res, "req_abc", log, u, 0.25, 1700000000.7, None)
    return codec.completion_json(answer, "asked"), codec.completion_json(msg, "asked")


@pytest.mark.parametrize("res,log,u", [
    (ChatResult("Hello there.", "stop", Usage(5, 3)), RouteLog("cost", [], TARGET), Usage(5, 3)),
    (ChatResult("", "length", Usage(), reasoning="thinking"), RouteLog("", [], TARGET, "served-as"),
     Usage(7, 0, True, cached_tokens=4, reasoning_tokens=2)),
    (ChatResult("x", "content_filter", Usage()), RouteLog(), None),  # no target: the caller's model
    (ChatResult("y", "odd-reason", Usage()), RouteLog("", [], TARGET), Usage(0, 0)),
])
def test_the_plain_answer_renders_as_the_message_does(res, log, u):
    plain, message = _both(res, log, u)
    assert plain == message


@pytest.mark.parametrize("res,u", [
    (ChatResult("", "tool_calls", Usage(), [ToolCall("c1", "f", "{}")]), Usage(1, 1)),
    (ChatResult(["a list"], "stop", Usage()), Usage(1, 1)),  # type: ignore[arg-type]
    (ChatResult("t", "stop", Usage()), Usage(2**31, 1)),
    (ChatResult("t", "stop", Usage()), Usage(2**30, 2**30)),  # the total past int32
    (ChatResult("t", "stop", Usage()), Usage(1.5, 1)),  # type: ignore[arg-type]
])
def test_what_the_message_treats_otherwise_stays_a_message(res, u):
    assert convert.chat_answer(res, "req_abc", RouteLog("", [], TARGET), u, 1.0) is None


async def test_an_in_process_caller_that_asks_gets_the_same_body_from_a_chat_answer(gateway, fake_openai):
    from services.server import local_channel
    from tollgate.inprocess import LOCAL_CALLS
    from tollgate.v1 import chat_pb2 as pb
    from tollgate.v1 import inference_service_pb2 as ipb
    from tollgate.v1 import inference_service_pb2_grpc as ipb_grpc

    key = await gateway.new_key()
    stub = ipb_grpc.InferenceServiceStub(local_channel(gateway.rt.app))
    req = ipb.ChatRequest(input=pb.ChatInput(model="tokens-5", messages=[pb.Message(role=pb.ROLE_USER, text="hi")]))
    seen = {}
    for ask in (False, True):
        call = stub.Chat(req, metadata=(("authorization", "Bearer " + key),), timeout=30)
        assert type(call) in LOCAL_CALLS
        if ask:
            call.plain_answer()
        resp = await call
        seen[ask] = (type(resp), orjson.loads(codec.completion_json(resp, "tokens-5")), dict(call.initial_pairs()))
    (plain_type, plain_body, plain_md), (asked_type, asked_body, asked_md) = seen[False], seen[True]
    assert plain_type is ipb.ChatResponse and asked_type is ChatAnswer  # only the caller that asked
    for body in (plain_body, asked_body):  # the request id and its time differ; nothing else
        body.pop("id"), body.pop("created")
    assert asked_body == plain_body and asked_body["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "
    assert asked_md.keys() == plain_md.keys()
