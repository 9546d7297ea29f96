"""services/rpc/forward.py: InferenceService.Forward (seed 003's pass-through) over a real port:
the upstream's head first (status, relayable headers, route), then its body as it comes; the
route in initial metadata; what cannot be relayed refused as INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import grpc
import orjson

from tests.services.rpc.conftest import bearer, refused_stream
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import inference_service_pb2_grpc as ipb_grpc

CHAT = {"model": "tokens-3", "messages": [{"role": "user", "content": "hi"}]}


def forward_request(body: dict, **kw) -> ipb.ForwardRequest:
    return ipb.ForwardRequest(**{"provider": "openai", "method": "POST", "path": "chat/completions", "body": orjson.dumps(body),
                                 "headers": [ipb.Header(name="content-type", value="application/json")], **kw})


async def test_the_head_then_the_body_as_the_provider_sent_it(channel, api_key, fake_openai):
    call = ipb_grpc.InferenceServiceStub(channel).Forward(forward_request(CHAT), metadata=bearer(api_key))
    msgs = [m async for m in call]
    head = msgs[0].head
    assert msgs[0].WhichOneof("event") == "head" and all(m.WhichOneof("event") == "body" for m in msgs[1:])
    assert head.status == 200 and head.id.startswith("req_")
    assert (head.route.provider, head.route.key_id) == ("primary", "primary-k1")
    assert dict((h.name, h.value) for h in head.headers)["content-type"].startswith("application/json")
    answer = orjson.loads(b"".join(m.body for m in msgs[1:]))
    assert answer["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    md = dict(await call.initial_metadata())
    assert md["x-request-id"] == head.id and md["x-llm-provider"] == "primary" and md["x-llm-model"] == "tokens-3"
    sent = fake_openai.requests[-1]
    assert sent.body == CHAT and sent.headers["Authorization"] == "Bearer sk-test-upstream"
    assert api_key not in str(sent.headers)  # the caller's key never goes upstream


async def test_an_upstream_error_is_relayed_as_its_status_not_a_grpc_error(channel, api_key):
    msgs = [m async for m in ipb_grpc.InferenceServiceStub(channel).Forward(
        forward_request({**CHAT, "model": "fault-400"}), metadata=bearer(api_key))]
    assert msgs[0].head.status == 400
    err = orjson.loads(b"".join(m.body for m in msgs[1:]))["error"]
    assert err["message"] == "Invalid value for 'temperature'." and err["code"] == "invalid_value"


async def test_a_path_that_climbs_out_of_the_api_root_is_invalid_argument(channel, api_key, fake_openai):
    before = len(fake_openai.requests)
    got, err = await refused_stream(ipb_grpc.InferenceServiceStub(channel).Forward(
        forward_request(CHAT, path="../admin/keys"), metadata=bearer(api_key)))
    assert got == [] and err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_PATH" and err.metadata["field"] == "path"
    assert len(fake_openai.requests) == before


async def test_a_method_that_cannot_be_relayed_is_invalid_argument(channel, api_key):
    _, err = await refused_stream(ipb_grpc.InferenceServiceStub(channel).Forward(
        forward_request(CHAT, method="TRACE"), metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "INVALID_METHOD"


async def test_forward_needs_a_key(channel):
    _, err = await refused_stream(ipb_grpc.InferenceServiceStub(channel).Forward(forward_request(CHAT)))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED
