"""services/rpc/inference.py: InferenceService over a real port, through the generated stubs
(Chat, StreamChat, Embed, Media, CountTokens; Forward has tests/services/rpc/test_forward.py)."""

from __future__ import annotations

import grpc
import orjson

from tests.services.rpc.conftest import bearer, refused, refused_stream
from tests.support.gateway import config, provider, run_gateway
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import inference_service_pb2_grpc as ipb_grpc


def chat_input(model: str, text: str = "hi", **kw) -> pb.ChatInput:
    return pb.ChatInput(model=model, messages=[pb.Message(role=pb.ROLE_USER, text=text)], **kw)


async def test_chat_answers_with_route_usage_and_initial_metadata(channel, api_key, fake_openai):
    call = ipb_grpc.InferenceServiceStub(channel).Chat(ipb.ChatRequest(input=chat_input("tokens-3")),
                                                       metadata=bearer(api_key))
    resp = await call
    md = dict(await call.initial_metadata())
    assert resp.text == "tok0 tok1 tok2 " and resp.finish_reason == pb.FINISH_REASON_STOP
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (fake_openai.prompt_tokens, 3)
    assert (resp.route.provider, resp.route.model, resp.route.key_id) == ("primary", "tokens-3", "primary-k1")
    assert md["x-request-id"] == resp.id and md["x-llm-provider"] == "primary" and md["x-llm-key-id"] == "primary-k1"
    assert int(md["x-ratelimit-limit"]) > 0 and "x-tollgate-ignored" not in md


async def test_chat_max_tokens_over_the_models_maximum_is_clamped_before_it_goes_upstream(channel, api_key, fake_openai):
    inp = chat_input("gpt-4o-mini")
    inp.sampling.max_tokens = 1_000_000  # the catalogue's gpt-4o-mini answers at most 16384 tokens
    await ipb_grpc.InferenceServiceStub(channel).Chat(ipb.ChatRequest(input=inp), metadata=bearer(api_key))
    assert fake_openai.requests[-1].body["max_tokens"] == 16384


async def test_chat_with_fields_only_openai_knows_is_relayed_as_sent(channel, api_key, fake_openai):
    body = {"model": "tokens-2", "messages": [{"role": "user", "content": "hi"}], "service_tier": "flex"}
    inp = chat_input("tokens-2", surface="openai", raw_body=orjson.dumps(body), extra_fields=["service_tier"])
    call = ipb_grpc.InferenceServiceStub(channel).Chat(ipb.ChatRequest(input=inp), metadata=bearer(api_key))
    resp = await call
    answer = orjson.loads(resp.raw)  # the provider's own JSON, not a translated ChatResponse
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"] == "tok0 tok1 "
    assert resp.text == "" and resp.id.startswith("req_")
    assert fake_openai.requests[-1].body["service_tier"] == "flex"
    assert dict(await call.initial_metadata())["x-llm-provider"] == "primary"


async def test_stream_chat_sends_start_deltas_usage_end_in_that_order(channel, api_key, fake_openai):
    call = ipb_grpc.InferenceServiceStub(channel).StreamChat(
        ipb.StreamChatRequest(input=chat_input("tokens-3"), include_usage=True), metadata=bearer(api_key))
    kinds, text, usage, end = [], "", None, None
    async for msg in call:
        kind = msg.WhichOneof("event")
        kinds.append(kind)
        if kind == "delta":
            text += "".join(d.text for d in msg.delta.deltas)
        elif kind == "usage":
            usage = msg.usage
        elif kind == "end":
            end = msg.end
    assert kinds[0] == "start" and kinds[-2:] == ["usage", "end"] and set(kinds[1:-2]) == {"delta"}
    assert text == "tok0 tok1 tok2 "
    assert usage.completion_tokens == 3 and end.usage.completion_tokens == 3
    assert end.finish_reason == pb.FINISH_REASON_STOP and end.route.provider == "primary"


async def test_stream_chat_of_an_unknown_provider_hint_fails_before_any_message(channel, api_key):
    inp = chat_input("tokens-3", route=pb.RouteHints(provider="nowhere"))
    got, err = await refused_stream(ipb_grpc.InferenceServiceStub(channel).StreamChat(
        ipb.StreamChatRequest(input=inp), metadata=bearer(api_key)))
    assert got == []
    assert err.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    assert err.reason and err.request_id.startswith("req_")


async def test_embed_returns_one_vector_per_input_in_order(channel, api_key, fake_openai):
    req = ipb.EmbedRequest(model="text-embedding-3-small", inputs=["a", "bbb"], dimensions=3)
    call = ipb_grpc.InferenceServiceStub(channel).Embed(req, metadata=bearer(api_key))
    resp = await call
    assert [e.index for e in resp.embeddings] == [0, 1]
    assert [len(e.values) for e in resp.embeddings] == [3, 3]
    assert abs(resp.embeddings[1].values[0] - 3 / 7) < 1e-6  # the fake's value for a 3-character input
    assert resp.usage.prompt_tokens == 2 and resp.route.provider == "primary"
    assert fake_openai.requests[-1].body["dimensions"] == 3
    assert dict(await call.initial_metadata())["x-request-id"] == resp.id


async def test_media_sends_the_providers_head_then_its_body(channel, api_key, fake_openai):
    body = orjson.dumps({"model": "tts-1", "input": "hello", "voice": "alloy"})
    call = ipb_grpc.InferenceServiceStub(channel).Media(
        ipb.MediaRequest(operation="audio/speech", model="tts-1", body=body, content_type="application/json"),
        metadata=bearer(api_key))
    msgs = [m async for m in call]
    assert msgs[0].WhichOneof("event") == "head" and msgs[0].head.status == 200
    assert msgs[0].head.route.provider == "primary"
    assert {h.name: h.value for h in msgs[0].head.headers}.get("content-type", "").startswith("audio/mpeg")
    assert b"".join(m.body for m in msgs[1:]) == b"ID3fake-mp3-hello"
    assert fake_openai.requests[-1].path == "/v1/audio/speech"


async def test_media_of_an_unknown_operation_is_invalid_argument_naming_it(channel, api_key):
    _, err = await refused_stream(ipb_grpc.InferenceServiceStub(channel).Media(
        ipb.MediaRequest(operation="video/generations", model="tts-1", body=b"{}"), metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("operation", "unknown") in err.field_violations


async def test_media_on_a_route_without_the_operation_is_unsupported(tmp_path):
    # Anthropic has no images API: refused before anything goes upstream (nothing listens there).
    cfg = config(tmp_path, providers=(provider("claude", "http://127.0.0.1:9", kind="anthropic", models=("claude-x",)),))
    async with run_gateway(cfg) as gw, grpc.aio.insecure_channel(gw.rt.grpc_target) as ch:
        key = await gw.new_key()
        _, err = await refused_stream(ipb_grpc.InferenceServiceStub(ch).Media(
            ipb.MediaRequest(operation="images/generations", model="claude-x", body=b'{"model":"claude-x"}'),
            metadata=bearer(key)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "UNSUPPORTED_OPERATION"
    assert err.field_violations == [("model", "anthropic has no /images/generations")]


async def test_count_tokens_off_an_anthropic_route_is_an_estimate(channel, api_key, fake_openai):
    before = len(fake_openai.requests)
    resp = await ipb_grpc.InferenceServiceStub(channel).CountTokens(
        ipb.CountTokensRequest(input=chat_input("tokens-3", text="one two three four five six seven eight")),
        metadata=bearer(api_key))
    assert resp.estimated and resp.input_tokens > 0 and resp.route.provider == ""
    assert len(fake_openai.requests) == before  # nothing asked upstream


async def test_chat_without_a_key_is_unauthenticated(channel):
    err = await refused(ipb_grpc.InferenceServiceStub(channel).Chat(ipb.ChatRequest(input=chat_input("tokens-3"))))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and err.request_id.startswith("req_")
