"""services/pipeline.py: quota -> route -> call -> meter, driven directly (no servicer, no bridge).

Each entry point runs the same skeleton; what a caller and the operator see of it: the answer
and its Outcome, exactly one ledger row per request whatever the ending, and the token
reservation settled or given back. Real App (store, in-process limiter, router) and a real
fake upstream on a loopback port.
"""

from __future__ import annotations

import asyncio

import pytest

from services.core import errors as E
from services.core.types import ChatRequest, EmbedRequest, Message
from services.pipeline import StreamFinished, StreamStarted, new_request_id
from services.routing.passthrough import native_request
from tests.support.gateway import config, provider, run_gateway


@pytest.fixture
async def gw(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url, models=("tokens-3", "fault-400",
                                                                                        "fault-cut-after-2", "emb")),))
    async with run_gateway(cfg) as gw:
        yield gw


async def principal(gw):
    key = await gw.new_key(tier="pro")
    return await gw.app.auth.resolve({"authorization": "Bearer " + key})


def chat(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message("user", "hi")])


async def rows(gw, n: int) -> list:
    for _ in range(100):
        got = await gw.ledger()
        if len(got) >= n:
            return got
        await asyncio.sleep(0.02)
    return await gw.ledger()


async def reservations(gw) -> int:
    return (await gw.app.limiter.snapshot())["reservations"]


async def test_chat_answers_with_its_outcome_and_one_row(gw):
    p = await principal(gw)
    rid = new_request_id()
    result, out = await gw.app.pipeline.chat(p, chat("tokens-3"), rid, 10.0)
    assert result.text and out.request_id == rid and out.status == "ok"
    assert out.route.target.provider == "primary" and out.decision is not None
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0
    [row] = await rows(gw, 1)
    assert (row.request_id, row.status, row.provider, row.attempts) == (rid, "ok", "primary", 1)
    assert await reservations(gw) == 0


async def test_a_declared_failure_is_one_row_with_its_status(gw):
    p = await principal(gw)
    with pytest.raises(E.UpstreamBadRequest) as caught:
        await gw.app.pipeline.chat(p, chat("fault-400"), new_request_id(), 10.0)
    assert "ratelimit_limit" in caught.value.metadata  # the admitted request's limits ride on its error
    [row] = await rows(gw, 1)
    assert (row.status, row.error) == ("bad_request", caught.value.reason)
    assert await reservations(gw) == 0


async def test_a_stream_starts_streams_and_finishes(gw):
    p = await principal(gw)
    events = [ev async for ev in gw.app.pipeline.stream(p, chat("tokens-3"), new_request_id(), 10.0)]
    assert isinstance(events[0], StreamStarted) and isinstance(events[-1], StreamFinished)
    text = "".join(c.text for batch in events[1:-1] for c in batch)
    assert text and events[-1].outcome.finish_reason == "stop"
    [row] = await rows(gw, 1)
    assert row.status == "ok" and row.completion_tokens > 0
    assert await reservations(gw) == 0


async def test_a_stream_the_caller_leaves_is_one_row_and_gives_back_its_reservation(gw):
    p = await principal(gw)
    events = gw.app.pipeline.stream(p, chat("tokens-3"), new_request_id(), 10.0)
    assert isinstance(await events.__anext__(), StreamStarted)
    await events.aclose()  # the client went away after the first message
    [row] = await rows(gw, 1)
    assert row.status == "cancelled"  # a gRPC caller; a bridge surface says client_cancelled
    assert await reservations(gw) == 0


async def test_embed_meters_its_inputs(gw):
    p = await principal(gw)
    result, out = await gw.app.pipeline.embed(p, EmbedRequest(model="emb", inputs=["a b c", "d"]), new_request_id(), 10.0)
    assert len(result.vectors) == 2 and out.status == "ok" and out.usage.prompt_tokens > 0
    [row] = await rows(gw, 1)
    assert row.status == "ok" and row.completion_tokens == 0


async def test_forward_relays_and_meters_the_native_answer(gw):
    p = await principal(gw)
    body = b'{"model":"tokens-3","messages":[{"role":"user","content":"hi"}]}'
    req = native_request("openai", "POST", "v1/chat/completions", "", [("content-type", "application/json")], body)
    pieces = [ev async for ev in gw.app.pipeline.forward(p, req, gw.app.passthrough, new_request_id(), 10.0)]
    head, data = pieces[0], b"".join(pieces[1:])
    assert head.exchange.status == 200 and b'"usage"' in data
    [row] = await rows(gw, 1)
    assert (row.status, row.surface) == ("ok", "passthrough_openai") and not row.estimated
    assert await reservations(gw) == 0
