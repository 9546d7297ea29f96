"""services/rpc/responses.py: ResponsesService over a real port. An OpenAI route gets the body as
sent (the answer relayed, then stored); any other route is translated to chat and the response
object rendered here; either way a stored response can be read, continued and deleted by its owner."""

from __future__ import annotations

import grpc
import orjson
import pytest

from tests.services.rpc.conftest import bearer, refused, refused_stream
from tests.support.gateway import config, provider, run_gateway
from tollgate.v1 import responses_service_pb2 as rpb
from tollgate.v1 import responses_service_pb2_grpc as rpb_grpc


def body(**kw) -> bytes:
    return orjson.dumps({"model": "tokens-3", "input": "hi", **kw})


@pytest.fixture
async def translated(tmp_path, fake_openai):
    """A gateway whose only route is OpenAI-shaped but not OpenAI itself: the Responses API is
    translated to chat there."""
    cfg = config(tmp_path, providers=(provider("compat", fake_openai.base_url, kind="openai_compatible"),))
    async with run_gateway(cfg) as gw, grpc.aio.insecure_channel(gw.rt.grpc_target) as ch:
        yield rpb_grpc.ResponsesServiceStub(ch), await gw.new_key()


async def test_create_on_an_openai_route_relays_and_stores_the_answer(channel, api_key, fake_openai):
    stub = rpb_grpc.ResponsesServiceStub(channel)
    call = stub.CreateResponse(rpb.CreateResponseRequest(body=body()), metadata=bearer(api_key))
    resp = await call
    doc = orjson.loads(resp.response)
    assert doc["id"] == resp.id and doc["object"] == "response" and doc["status"] == "completed"
    assert fake_openai.requests[-1].path == "/v1/responses"
    assert resp.route.provider == "primary" and resp.usage.completion_tokens == doc["usage"]["output_tokens"]
    assert dict(await call.initial_metadata())["x-llm-provider"] == "primary"
    stored = await stub.GetResponse(rpb.GetResponseRequest(id=resp.id), metadata=bearer(api_key))
    assert orjson.loads(stored.response) == doc


async def test_create_translated_to_chat_renders_a_response_object(translated, fake_openai):
    stub, key = translated
    resp = await stub.CreateResponse(rpb.CreateResponseRequest(body=body()), metadata=bearer(key))
    doc = orjson.loads(resp.response)
    assert fake_openai.requests[-1].path == "/v1/chat/completions"  # translated, not relayed
    assert resp.id.startswith("resp_") and doc["id"] == resp.id and doc["status"] == "completed"
    text = [c["text"] for item in doc["output"] if item["type"] == "message" for c in item["content"]]
    assert [t.strip() for t in text] == ["tok0 tok1 tok2"]
    assert (resp.usage.completion_tokens, resp.route.provider) == (3, "compat")


async def test_a_second_turn_by_id_sends_the_whole_conversation_to_a_translated_route(translated, fake_openai):
    stub, key = translated
    first = await stub.CreateResponse(rpb.CreateResponseRequest(body=body(input="first question")), metadata=bearer(key))
    await stub.CreateResponse(rpb.CreateResponseRequest(body=body(input="second question", previous_response_id=first.id)),
                              metadata=bearer(key))
    sent = fake_openai.requests[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "first question"), ("assistant", "tok0 tok1 tok2 "), ("user", "second question")]


async def test_an_unknown_previous_response_is_not_found_naming_the_field(channel, api_key):
    err = await refused(rpb_grpc.ResponsesServiceStub(channel).CreateResponse(
        rpb.CreateResponseRequest(body=body(previous_response_id="resp_nope")), metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "RESPONSE_NOT_FOUND"
    assert err.field_violations == [("previous_response_id", "not found")]


@pytest.mark.parametrize("raw, reason", [(b"{not json", "INVALID_JSON"), (b"[1, 2]", "INVALID_JSON"),
                                         (b"[" + b"[]," * 500_001 + b"[]]", "BODY_TOO_COMPLEX")])
async def test_a_body_that_is_not_a_json_object_is_invalid_argument(channel, api_key, raw, reason):
    err = await refused(rpb_grpc.ResponsesServiceStub(channel).CreateResponse(
        rpb.CreateResponseRequest(body=raw), metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == reason


async def test_stream_sends_the_events_in_order_and_stores_the_completed_response(channel, api_key):
    stub = rpb_grpc.ResponsesServiceStub(channel)
    call = stub.StreamResponse(rpb.StreamResponseRequest(body=body(stream=True)), metadata=bearer(api_key))
    events = [(m.type, orjson.loads(m.data)) async for m in call]
    types = [t for t, _ in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(d["delta"] for t, d in events if t == "response.output_text.delta") == "tok0 tok1 tok2"
    assert dict(await call.initial_metadata())["x-llm-provider"] == "primary"
    rid = events[-1][1]["response"]["id"]
    stored = await stub.GetResponse(rpb.GetResponseRequest(id=rid), metadata=bearer(api_key))
    assert orjson.loads(stored.response)["status"] == "completed"


async def test_stream_of_an_unknown_previous_response_fails_before_any_event(channel, api_key):
    got, err = await refused_stream(rpb_grpc.ResponsesServiceStub(channel).StreamResponse(
        rpb.StreamResponseRequest(body=body(stream=True, previous_response_id="resp_nope")), metadata=bearer(api_key)))
    assert got == [] and err.code == grpc.StatusCode.NOT_FOUND


async def test_delete_then_get_is_not_found_and_another_caller_never_sees_it(gateway, channel, api_key):
    stub = rpb_grpc.ResponsesServiceStub(channel)
    resp = await stub.CreateResponse(rpb.CreateResponseRequest(body=body()), metadata=bearer(api_key))
    other = await gateway.new_key(name="other")
    err = await refused(stub.GetResponse(rpb.GetResponseRequest(id=resp.id), metadata=bearer(other)))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "RESPONSE_NOT_FOUND"
    err = await refused(stub.DeleteResponse(rpb.DeleteResponseRequest(id=resp.id), metadata=bearer(other)))
    assert err.code == grpc.StatusCode.NOT_FOUND
    done = await stub.DeleteResponse(rpb.DeleteResponseRequest(id=resp.id), metadata=bearer(api_key))
    assert (done.id, done.deleted) == (resp.id, True)
    err = await refused(stub.GetResponse(rpb.GetResponseRequest(id=resp.id), metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.NOT_FOUND
