"""The gRPC server on its real port: the four services through TollgateClient, rich errors,
the standard health service, server reflection, deadlines and cancellation (RELIABILITY B1,
B3, B5). Everything goes over a real grpc.aio channel to a real fake OpenAI upstream."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.gateway import config, provider, run_gateway
from tollgate.client import TollgateClient, error_info
from tollgate.v1 import chat_pb2
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import model_service_pb2 as mpb

SERVICES = ("tollgate.v1.InferenceService", "tollgate.v1.ModelService", "tollgate.v1.KeyService",
            "tollgate.v1.AdminService")


def chat_input(model: str, text: str = "hi") -> chat_pb2.ChatInput:
    return chat_pb2.ChatInput(model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=text)])


async def ledger_rows(gw, want: int = 1, timeout: float = 2.0) -> list:
    """The ledger once it holds `want` rows (a cancelled call writes its row as it unwinds)."""
    end = time.monotonic() + timeout
    rows = await gw.ledger()
    while len(rows) < want and time.monotonic() < end:
        await asyncio.sleep(0.05)
        rows = await gw.ledger()
    return rows


def auth(key: str) -> tuple[tuple[str, str], ...]:
    """The call metadata TollgateClient sends, for calls made on the raw stubs."""
    return (("authorization", "Bearer " + key),)


@pytest.fixture
async def api_key(gateway) -> str:
    return await gateway.new_key()


@pytest.fixture
async def client(gateway, api_key):
    c = TollgateClient.connect(gateway.rt.grpc_target, api_key=api_key)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def allow_listed(tmp_path, fake_openai):
    """A gateway whose only provider serves an allow-list, so unknown models are NOT_FOUND."""
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url, models=("gpt-4o-mini", "my-model")),))
    async with run_gateway(cfg) as gw:
        key = await gw.new_key()
        c = TollgateClient.connect(gw.rt.grpc_target, api_key=key)
        try:
            yield gw, c, key
        finally:
            await c.close()


# --------------------------------------------------------------------------- InferenceService

async def test_chat_over_real_port(client, gateway, fake_openai):
    resp = await client.chat(chat_input("tokens-4"), timeout=10)
    assert resp.text == "tok0 tok1 tok2 tok3 "
    assert resp.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (fake_openai.prompt_tokens, 4)
    assert resp.id.startswith("req_")
    assert resp.route.provider == "primary"
    rows = await gateway.ledger()
    assert [(r.request_id, r.status, r.surface, r.completion_tokens, r.estimated) for r in rows] == \
        [(resp.id, "ok", "grpc", 4, False)]


async def test_chat_initial_metadata_names_route(client, api_key):
    call = client.inference.Chat(ipb.ChatRequest(input=chat_input("tokens-2")), metadata=auth(api_key), timeout=10)
    await call
    md = dict(await call.initial_metadata())
    assert md["x-llm-provider"] == "primary"
    assert md["x-request-id"].startswith("req_")


async def test_stream_chat_message_order_and_text(client, gateway, fake_openai):
    msgs = [m async for m in client.stream_chat(chat_input("tokens-6"), include_usage=True, timeout=10)]
    kinds = [m.WhichOneof("event") for m in msgs]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert set(kinds[1:-1]) <= {"delta", "usage"} and "delta" in kinds
    # Usage (asked for) comes after every delta, right before the end.
    assert kinds[-2] == "usage" and "usage" not in kinds[:-2]
    text = "".join(d.text for m in msgs if m.WhichOneof("event") == "delta" for d in m.delta.deltas)
    assert text == "tok0 tok1 tok2 tok3 tok4 tok5 "
    assert msgs[-2].usage.completion_tokens == 6
    assert msgs[-1].end.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert msgs[0].start.id.startswith("req_") and msgs[0].start.route.provider == "primary"
    rows = await gateway.ledger()
    assert [(r.request_id, r.status, r.completion_tokens) for r in rows] == [(msgs[0].start.id, "ok", 6)]


async def test_stream_chat_without_usage_sends_no_usage_message(client):
    msgs = [m async for m in client.stream_chat(chat_input("tokens-3"), timeout=10)]
    kinds = [m.WhichOneof("event") for m in msgs]
    assert kinds[0] == "start" and kinds[-1] == "end" and "usage" not in kinds


# --------------------------------------------------------------------------- ModelService

async def test_list_and_get_models(allow_listed):
    _, c, key = allow_listed
    page = await c.list_models()
    assert [m.id for m in page.models] == ["gpt-4o-mini", "my-model"]
    assert page.total_size == 2 and page.next_page_token == ""
    got = await c.models.GetModel(mpb.GetModelRequest(id="my-model"), metadata=auth(key), timeout=5)
    assert got.model.id == "my-model" and list(got.model.providers) == ["primary"]


async def test_get_unknown_model_is_not_found_with_reason(allow_listed):
    _, c, key = allow_listed
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.models.GetModel(mpb.GetModelRequest(id="nope"), metadata=auth(key), timeout=5)
    info = error_info(e.value)
    assert info.code == grpc.StatusCode.NOT_FOUND
    assert info.reason == "MODEL_NOT_FOUND" and info.metadata["model"] == "nope"


# --------------------------------------------------------------------------- errors

async def test_bad_key_is_unauthenticated(gateway):
    c = TollgateClient.connect(gateway.rt.grpc_target, api_key="tg_not-a-real-key")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.chat(chat_input("tokens-2"), timeout=5)
        info = error_info(e.value)
        assert info.code == grpc.StatusCode.UNAUTHENTICATED
        assert info.reason == "INVALID_API_KEY"
        assert info.request_id.startswith("req_")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.list_models()
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await c.close()


async def test_no_key_is_unauthenticated(gateway):
    c = TollgateClient.connect(gateway.rt.grpc_target)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            _ = [m async for m in c.stream_chat(chat_input("tokens-2"), timeout=5)]
        assert error_info(e.value).reason == "API_KEY_REQUIRED"
    finally:
        await c.close()


async def test_unknown_model_with_allow_list_is_not_found(allow_listed, fake_openai):
    gw, c, _ = allow_listed
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.chat(chat_input("no-such-model"), timeout=5)
    info = error_info(e.value)
    assert info.code == grpc.StatusCode.NOT_FOUND and info.reason == "MODEL_NOT_FOUND"
    assert fake_openai.requests == []
    with pytest.raises(grpc.aio.AioRpcError) as e:
        _ = [m async for m in c.stream_chat(chat_input("no-such-model"), timeout=5)]
    assert error_info(e.value).reason == "MODEL_NOT_FOUND"


async def test_empty_messages_is_invalid_argument_with_field_violation(client, fake_openai):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.chat(chat_pb2.ChatInput(model="tokens-2"), timeout=5)
    info = error_info(e.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in info.field_violations] == ["messages"]
    assert fake_openai.requests == []


# --------------------------------------------------------------------------- health

async def test_health_check_serving_without_auth(gateway):
    async with grpc.aio.insecure_channel(gateway.rt.grpc_target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("",) + SERVICES:
            r = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert r.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Check(health_pb2.HealthCheckRequest(service="tollgate.v1.NoSuchService"), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_watch_sends_current_status_at_once(gateway):
    async with grpc.aio.insecure_channel(gateway.rt.grpc_target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name, want in (("tollgate.v1.InferenceService", health_pb2.HealthCheckResponse.SERVING),
                           ("tollgate.v1.NoSuchService", health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)):
            call = stub.Watch(health_pb2.HealthCheckRequest(service=name))
            try:
                first = await asyncio.wait_for(call.read(), 1.0)
                assert first.status == want, name
            finally:
                call.cancel()


# --------------------------------------------------------------------------- reflection

async def _reflect(target: str, req: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
    async with grpc.aio.insecure_channel(target) as ch:
        call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(timeout=5)
        await call.write(req)
        await call.done_writing()
        resp = await call.read()
        call.cancel()
        return resp


async def test_reflection_lists_services_and_resolves_symbols(gateway):
    resp = await _reflect(gateway.rt.grpc_target, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in resp.list_services_response.service}
    assert set(SERVICES) <= names
    assert "grpc.health.v1.Health" in names
    resp = await _reflect(gateway.rt.grpc_target,
                          reflection_pb2.ServerReflectionRequest(file_containing_symbol="tollgate.v1.InferenceService"))
    assert resp.file_descriptor_response.file_descriptor_proto


async def test_every_reflected_service_has_a_health_status(gateway):
    resp = await _reflect(gateway.rt.grpc_target, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = [s.name for s in resp.list_services_response.service]
    async with grpc.aio.insecure_channel(gateway.rt.grpc_target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in names:
            if name.startswith("tollgate."):
                r = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert r.status == health_pb2.HealthCheckResponse.SERVING, name


# --------------------------------------------------------------------------- deadlines, cancellation

async def test_deadline_exceeded_while_upstream_is_slow(client, gateway, fake_openai):
    t0 = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        _ = [m async for m in client.stream_chat(chat_input("fault-slow-first-5"), timeout=1)]
    took = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert took < 1.5, took
    # The server gives up too: the upstream connection is closed and one row is written
    # (its status is checked by the xfail below: it races between deadline_exceeded and cancelled).
    await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
    rows = await ledger_rows(gateway)
    assert [(r.completion_tokens, r.attempts) for r in rows] == [(0, 1)], rows
    assert rows[0].latency_ms < 1500  # the server stopped at the deadline, not after the 5 s upstream


async def test_a_call_that_runs_out_of_time_is_metered_deadline_exceeded(tmp_path, fake_openai):
    from services.server import local_channel

    cfg = config(tmp_path, breaker_threshold=1000, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as gw:
        key = await gw.new_key()
        remote = TollgateClient.connect(gw.rt.grpc_target, api_key=key)
        local = TollgateClient(local_channel(gw.app), api_key=key)

        async def one(c: TollgateClient, stream: bool) -> grpc.StatusCode:
            try:
                if stream:
                    _ = [m async for m in c.stream_chat(chat_input("fault-slow-first-5"), timeout=1)]
                else:
                    await c.chat(chat_input("fault-slow-first-5"), timeout=1)
            except grpc.aio.AioRpcError as e:
                return e.code()
            return grpc.StatusCode.OK

        try:
            codes = await asyncio.gather(*(one(c, stream) for c in (remote, local) for stream in (True, False)
                                           for _ in range(10)))
        finally:
            await remote.close()
        assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
        rows = await ledger_rows(gw, want=40)
        assert sorted({r.status for r in rows}) == ["deadline_exceeded"], sorted(r.status for r in rows)


async def test_cancel_stream_closes_upstream_and_writes_one_cancelled_row(client, api_key, gateway, fake_openai):
    call = client.inference.StreamChat(ipb.StreamChatRequest(input=chat_input("fault-stall-after-3")),
                                       metadata=auth(api_key), timeout=30)
    text = ""
    async for msg in call:
        if msg.WhichOneof("event") == "delta":
            text += "".join(d.text for d in msg.delta.deltas)
            if text.count("tok") >= 3:
                break
    assert text == "tok0 tok1 tok2 "
    t0 = time.monotonic()
    call.cancel()
    await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
    assert time.monotonic() - t0 < 1.0
    assert fake_openai.disconnects == 1
    rows = await ledger_rows(gateway)
    assert [(r.status, r.surface) for r in rows] == [("cancelled", "grpc")]
    assert rows[0].completion_tokens > 0 and rows[0].estimated
    assert gateway.app.pipeline.active == 0


async def test_unary_chat_cancelled_by_the_client_writes_one_cancelled_row(client, api_key, gateway, fake_openai):
    call = client.inference.Chat(ipb.ChatRequest(input=chat_input("fault-slow-first-5")), metadata=auth(api_key), timeout=30)

    async def wait_call():
        return await call

    fut = asyncio.ensure_future(wait_call())
    end = time.monotonic() + 2
    while not fake_openai.requests and time.monotonic() < end:
        await asyncio.sleep(0.02)
    assert fake_openai.requests
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fut
    rows = await ledger_rows(gateway)
    assert [(r.status, r.surface, r.completion_tokens) for r in rows] == [("cancelled", "grpc", 0)]


async def test_twenty_cancelled_streams_close_twenty_upstreams_and_write_twenty_rows(client, api_key, gateway, fake_openai):
    """RELIABILITY B1, scaled: every cancel reaches its upstream and its row; nothing stays active."""
    calls = [client.inference.StreamChat(ipb.StreamChatRequest(input=chat_input("fault-stall-after-3")),
                                         metadata=auth(api_key), timeout=30) for _ in range(20)]

    async def first_tokens(call):
        seen = 0
        async for msg in call:
            if msg.WhichOneof("event") == "delta":
                seen += sum(d.text.count("tok") for d in msg.delta.deltas)
                if seen >= 3:
                    return

    await asyncio.wait_for(asyncio.gather(*(first_tokens(c) for c in calls)), 10)
    for c in calls:
        c.cancel()
    end = time.monotonic() + 1.0
    while fake_openai.disconnects < 20 and time.monotonic() < end:
        await asyncio.sleep(0.02)
    assert fake_openai.disconnects == 20
    rows = await ledger_rows(gateway, want=20)
    assert len(rows) == 20 and {r.status for r in rows} == {"cancelled"}
    assert len({r.request_id for r in rows}) == 20
    assert gateway.app.pipeline.active == 0


async def test_too_many_messages_is_invalid_argument(client, fake_openai):
    inp = chat_pb2.ChatInput(model="tokens-2", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="x")] * 2049)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.chat(inp, timeout=5)
    info = error_info(e.value)
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in info.field_violations] == ["messages"]
    assert fake_openai.requests == []


async def test_oversized_message_is_resource_exhausted(client, gateway, fake_openai):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.chat(chat_input("tokens-2", text="x" * (17 * 1024 * 1024)), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert fake_openai.requests == []
    # The server is still fine afterwards.
    assert (await client.chat(chat_input("tokens-2"), timeout=5)).text == "tok0 tok1 "


async def test_stream_cut_after_first_tokens_is_unavailable_in_band(client, gateway):
    """RELIABILITY A6 on gRPC: the deltas already sent, then UNAVAILABLE; never a StreamEnd."""
    kinds, text = [], ""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for m in client.stream_chat(chat_input("fault-cut-after-3"), timeout=10):
            kinds.append(m.WhichOneof("event"))
            if kinds[-1] == "delta":
                text += "".join(d.text for d in m.delta.deltas)
    info = error_info(e.value)
    assert (info.code, info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN")
    # All three tokens should arrive; see the xfail below for the tail that aiohttp can drop.
    assert text.startswith("tok0 ") and "tok0 tok1 tok2 ".startswith(text), text
    assert kinds[0] == "start" and "end" not in kinds
    rows = await ledger_rows(gateway)
    assert [(r.status, r.estimated) for r in rows] == [("upstream_error", True)]
    assert rows[0].completion_tokens >= 1


async def test_cut_stream_delivers_every_token_sent_before_the_cut(tmp_path, fake_openai):
    """Thirty cut streams one after another, thirty at once: each should carry all 3 tokens sent.
    (The loss is a race; over a real gRPC port it hits a large share of these 60 streams.)"""
    cfg = config(tmp_path, breaker_threshold=1000, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as gw:
        c = TollgateClient.connect(gw.rt.grpc_target, api_key=await gw.new_key())

        async def tokens() -> int:
            text = ""
            with pytest.raises(grpc.aio.AioRpcError):
                async for m in c.stream_chat(chat_input("fault-cut-after-3"), timeout=10):
                    if m.WhichOneof("event") == "delta":
                        text += "".join(d.text for d in m.delta.deltas)
            return text.count("tok")

        try:
            got = [await tokens() for _ in range(30)]
            got += await asyncio.gather(*(tokens() for _ in range(30)))
        finally:
            await c.close()
        assert got == [3] * 60
        rows = await ledger_rows(gw, want=60)
        assert min(r.completion_tokens for r in rows) >= 3
