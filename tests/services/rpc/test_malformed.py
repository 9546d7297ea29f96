"""services/rpc/malformed.py: a request that does not parse as its method's message is
INVALID_ARGUMENT / MALFORMED_REQUEST with the Guard's google.rpc.Status (not grpc's UNKNOWN), on
unary and streaming methods alike; one that parses goes on to the servicer; methods outside
tollgate.v1 are left alone. Raw bytes over a real port (tests/reliability/test_e6_grpc_fuzz.py
fuzzes every method; this is the unit's own)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2

from tests.services.rpc.conftest import bearer, refused, refused_stream
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb

PAST_THE_END = b"\x0a\x7f\x01"  # a length of 127 with one byte left


async def test_a_unary_request_that_does_not_parse_is_malformed_with_details(channel, api_key):
    chat = channel.unary_unary("/tollgate.v1.InferenceService/Chat")
    for raw in (PAST_THE_END, b"\xff" * 16):
        err = await refused(chat(raw, metadata=bearer(api_key)))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "MALFORMED_REQUEST"
        assert err.field_violations == [("request", "does not parse as the method's request message")]
        assert "not a valid Chat message" in err.message and err.request_id.startswith("req_")


async def test_a_streaming_request_that_does_not_parse_is_malformed_before_any_message(channel, api_key):
    got, err = await refused_stream(channel.unary_stream("/tollgate.v1.InferenceService/StreamChat")(
        PAST_THE_END, metadata=bearer(api_key)))
    assert got == [] and err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "MALFORMED_REQUEST"
    assert "StreamChat" in err.message


async def test_a_request_that_parses_reaches_the_guard_and_the_servicer(channel, api_key):
    raw = ipb.ChatRequest(input=pb.ChatInput(model="tokens-2", messages=[pb.Message(role=pb.ROLE_USER, text="hi")]))
    chat = channel.unary_unary("/tollgate.v1.InferenceService/Chat", response_deserializer=ipb.ChatResponse.FromString)
    assert (await chat(raw.SerializeToString(), metadata=bearer(api_key))).text == "tok0 tok1 "
    err = await refused(chat(raw.SerializeToString()))  # parsed, so the guard decides: no key
    assert err.code == grpc.StatusCode.UNAUTHENTICATED


async def test_methods_outside_tollgate_are_not_wrapped(channel):
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    err = await refused(check(PAST_THE_END))
    assert (err.code, err.reason) == (grpc.StatusCode.UNKNOWN, "")  # grpc's own answer, no details of ours
    ok = await check(health_pb2.HealthCheckRequest().SerializeToString())
    assert health_pb2.HealthCheckResponse.FromString(ok).status == health_pb2.HealthCheckResponse.SERVING
