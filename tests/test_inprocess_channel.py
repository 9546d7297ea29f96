"""The in-process channel keeps gRPC's deadline and cancellation semantics with one watchdog
per loop instead of a timer per call and per message (clients/tollgate/inprocess.py)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc.aio import AioRpcError

from tollgate.inprocess import DEADLINE_GRACE_S, InProcessChannel, _Watchdog
from tollgate.v1 import chat_pb2
from tollgate.v1 import inference_service_pb2 as pb
from tollgate.v1 import inference_service_pb2_grpc as rpc

def req(model: str) -> pb.ChatRequest:
    return pb.ChatRequest(input=chat_pb2.ChatInput(model=model))


SLACK_S = DEADLINE_GRACE_S + _Watchdog.TICK_S + 0.5  # the backstop fires within grace + one tick


class Servicer(rpc.InferenceServiceServicer):
    """Ignores deadlines on purpose: the channel's backstop is what is under test."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.cancelled = 0

    async def Chat(self, request, context):
        if request.input.model == "slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return pb.ChatResponse(id="r1", text=request.input.model)

    async def StreamChat(self, request, context):
        try:
            for i in range(3):
                yield pb.StreamChatResponse()
                if request.input.model == "slow" and i == 1:
                    await asyncio.sleep(30)
        finally:
            self.closed.set()


@pytest.fixture
def setup():
    channel = InProcessChannel()
    servicer = Servicer()
    rpc.add_InferenceServiceServicer_to_server(servicer, channel)
    return rpc.InferenceServiceStub(channel), servicer, channel


async def test_unary_within_deadline_answers(setup):
    stub, _, _ = setup
    resp = await stub.Chat(req("fast"), timeout=5)
    assert resp.id == "r1" and resp.text == "fast"


async def test_unary_past_deadline_is_deadline_exceeded_and_cancels_the_servicer(setup):
    stub, servicer, channel = setup
    t0 = time.monotonic()
    with pytest.raises(AioRpcError) as err:
        await stub.Chat(req("slow"), timeout=0.1)
    took = time.monotonic() - t0
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.1 + DEADLINE_GRACE_S <= took < 0.1 + SLACK_S
    assert servicer.cancelled == 1
    assert not channel.watchdog()._calls  # nothing left behind


async def test_stream_past_deadline_mid_stream_ends_with_deadline_exceeded(setup):
    stub, servicer, _ = setup
    call = stub.StreamChat(req("slow"), timeout=0.2)
    got = [await call.read(), await call.read()]
    assert len(got) == 2
    with pytest.raises(AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.closed.is_set()  # the servicer's finally ran


async def test_stream_read_after_the_deadline_passed_between_reads(setup):
    stub, servicer, _ = setup
    call = stub.StreamChat(req("fast"), timeout=0.05)
    await call.read()
    await asyncio.sleep(0.05 + DEADLINE_GRACE_S + 0.05)  # a slow consumer, not waiting on us
    with pytest.raises(AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.closed.is_set()


async def test_caller_cancellation_stays_cancellation(setup):
    stub, servicer, _ = setup
    task = asyncio.ensure_future(stub.Chat(req("slow"), timeout=10))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert servicer.cancelled == 1


async def test_many_calls_share_one_watchdog_and_it_stops_when_idle(setup):
    stub, _, channel = setup
    await asyncio.gather(*(stub.Chat(req("fast"), timeout=5) for _ in range(50)))
    streams = [stub.StreamChat(req("fast"), timeout=5) for _ in range(20)]
    for call in streams:
        assert len([m async for m in call]) == 3
    dog = channel.watchdog()
    assert not dog._calls
    await asyncio.sleep(_Watchdog.TICK_S * 2)
    assert dog._timer is None  # no periodic work while nothing is in flight
