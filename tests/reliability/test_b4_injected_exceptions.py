"""RELIABILITY B4: an exception at any await of a call ends it with a declared status within 1 s:
never UNKNOWN (an exception the servicer let escape) and never a hang (grpc#29248), with nothing
left behind (no task, no upstream connection checked out, no token reservation held).

The injection is generic rather than a list of places: `Injector` drives the servicer's own
coroutine and, at its n-th suspension, throws into it instead of resuming it, so the exception
surfaces at whichever await the call had reached: auth, quotas, routing, the adapter's connect,
send and read, the ledger. n runs from 1 until a call completes before reaching it, on unary
Chat and on StreamChat (a stream also between and after its messages), against a real fake
upstream through the servicers the gateway registers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from services.server import local_channel
from tests.support.gateway import config, provider, run_gateway
from tests.support.leaks import pools, settle, tasks
from tollgate.inprocess import LocalAbort, LocalContext
from tollgate.v1 import chat_pb2
from tollgate.v1 import inference_service_pb2 as ipb

DECLARED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
            grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_SUSPENSIONS = 300  # a call that suspends more often than this is a finding of its own


class Injected(RuntimeError):
    pass


class Injector:
    """Counts the suspensions of the awaitables it wraps; when the n-th ends, throws Injected into
    the awaitable instead of resuming it with its result (once)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.fired = False

    def wrap(self, awaitable: Any) -> Any:
        return _Wrapped(self, awaitable)


class _Wrapped:
    def __init__(self, inj: Injector, awaitable: Any) -> None:
        self.inj, self.awaitable = inj, awaitable

    def __await__(self):
        it = self.awaitable.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                if error is not None:
                    yielded = it.throw(error)
                else:
                    yielded = it.send(value)
            except StopIteration as stop:
                return stop.value
            error, value = None, None
            self.inj.seen += 1
            try:
                value = yield yielded
            except BaseException as e:  # a cancellation from outside: passed on
                error = e
            if error is None and self.inj.seen == self.inj.n and not self.inj.fired:
                # What the await was waiting for has come (and was read: no stray exception
                # left unretrieved); the await raises instead of returning it.
                self.inj.fired = True
                error = Injected(f"injected at suspension {self.inj.n}")


def chat_request(model: str) -> Any:
    return chat_pb2.ChatInput(model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")])


async def unary(channel, key: str, inj: Injector) -> str:
    """Chat with the injection; the outcome: "ok" or the status code's name."""
    handler = channel.handler("/tollgate.v1.InferenceService/Chat")
    ctx = LocalContext((("authorization", "Bearer " + key),), time.monotonic() + 10)
    try:
        await inj.wrap(handler.unary_unary(ipb.ChatRequest(input=chat_request("tokens-3")), ctx))
    except LocalAbort as e:
        return e.code.name
    return "ok"


async def stream(channel, key: str, inj: Injector) -> str:
    handler = channel.handler("/tollgate.v1.InferenceService/StreamChat")
    ctx = LocalContext((("authorization", "Bearer " + key),), time.monotonic() + 10)
    gen = handler.unary_stream(ipb.StreamChatRequest(input=chat_request("tokens-3"), include_usage=True), ctx)
    try:
        while True:
            try:
                await inj.wrap(gen.__anext__())
            except StopAsyncIteration:
                return "ok"
    except LocalAbort as e:
        return e.code.name
    finally:
        await gen.aclose()


async def sweep(gw, call) -> dict[str, int]:
    """Runs `call` with an injection at suspension 1, 2, … until one completes first; each must
    end within 1 s with a declared status. Returns how often each outcome came."""
    key = await gw.new_key(tier="unlimited")
    channel = local_channel(gw.app)
    await call(channel, key, Injector(0))  # warm: pools, caches, the key's first lookup
    await asyncio.sleep(0.1)
    base_tasks = tasks()
    outcomes: dict[str, int] = {}
    for n in range(1, MAX_SUSPENSIONS):
        inj = Injector(n)
        try:
            outcome = await asyncio.wait_for(call(channel, key, inj), 1.0)
        except Injected as e:
            raise AssertionError(f"suspension {n}: the injected exception escaped (the caller would see UNKNOWN)") from e
        except TimeoutError:
            raise AssertionError(f"suspension {n}: no answer within 1 s") from None
        assert outcome == "ok" or grpc.StatusCode[outcome] in DECLARED, (n, outcome)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if not inj.fired:
            break  # the call completed in fewer suspensions: every await has had its turn
    else:
        raise AssertionError(f"more than {MAX_SUSPENSIONS} suspensions in one call")
    # Nothing left behind: no task, no upstream connection, no token reservation.
    assert await settle(lambda: tasks() <= base_tasks + 1), (tasks(), base_tasks)
    assert await settle(lambda: pools(gw.app).in_use == 0), pools(gw.app)
    snap = await gw.app.limiter.snapshot()
    assert snap["reservations"] == 0, snap
    return outcomes


async def test_an_exception_at_any_await_of_chat_ends_it_declared(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as gw:
        outcomes = await sweep(gw, unary)
        assert outcomes["ok"] == 1 and outcomes.get("INTERNAL", 0) >= 3, outcomes


async def test_an_exception_at_any_await_of_a_stream_ends_it_declared(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as gw:
        outcomes = await sweep(gw, stream)
        assert outcomes["ok"] == 1 and outcomes.get("INTERNAL", 0) >= 3, outcomes
