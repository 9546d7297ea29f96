"""RELIABILITY C3: a token budget holds under concurrency, on the in-process limiter and on Redis.

10,000 tokens/day left, 50 concurrent gRPC calls each reserving 100 prompt + 900 max_tokens →
exactly 10 pass and 40 get RESOURCE_EXHAUSTED with a QuotaFailure; once settled the day's
counter equals the ledger's sum; a failed request gives its reservation back; a request that
needed a retry (same-route retry, then another provider) is charged once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from aiohttp import web

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from services.core.types import ChatRequest, Message
from services.metering.tokens import estimate_prompt
from services.store.records import UsageFilter
from tests.reliability.scripted import err, ok, run_scripted
from tests.support.gateway import config, provider, run_gateway
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tollgate.client import TollgateClient, error_info
from tollgate.v1 import chat_pb2

TIERS = DEFAULT_TIERS + (TierConfig("c3", tpd=10_000),)
PROMPT = "budget " * 53 + "tokens"  # 377 characters: 100 tokens with the framing (checked below)
COMPLETION = 20  # what the scripted upstream answers with; it reports prompt_tokens 7


@pytest.fixture(params=["memory", "redis"])
def limiter_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("redis_url") if request.param == "redis" else ""


def chat_input(model: str = "gpt-4o-mini", max_tokens: int = 900) -> chat_pb2.ChatInput:
    return chat_pb2.ChatInput(model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=PROMPT)],
                              sampling=chat_pb2.Sampling(max_tokens=max_tokens))


async def counter(gw, key_id: str) -> int:
    """The day's token counter as the limiter holds it (used + held)."""
    d = await gw.app.limiter.peek("ak:" + key_id, gw.app.quotas.token_rules("c3"))
    return d.used


async def ledger_sum(gw, key_id: str) -> int:
    await gw.app.ledger.flush()
    t = await gw.app.store.usage_totals(UsageFilter(key_id=key_id))
    return t["prompt_tokens"] + t["completion_tokens"]


def test_the_prompt_is_100_tokens_by_the_gateways_estimate():
    assert estimate_prompt(ChatRequest("m", [Message("user", PROMPT)])) == 100


@asynccontextmanager
async def gated_upstream() -> AsyncIterator[tuple[str, asyncio.Event, Counter]]:
    """An OpenAI-shaped upstream whose answers to "gpt-4o-mini" wait for `gate`, so every one of
    the 50 reservations is taken before any is settled, however slow the machine. "broken"
    answers 503; "flaky" answers 503 once, then normally."""
    gate = asyncio.Event()
    seen: Counter[str] = Counter()

    async def chat(request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        seen[model] += 1
        if model == "broken" or (model == "flaky" and seen[model] == 1):
            return web.json_response({"error": {"message": "overloaded", "type": "server_error", "param": None,
                                                "code": None}}, status=503)
        if model == "gpt-4o-mini":
            await gate.wait()
        return web.json_response({
            "id": "chatcmpl-c3", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * COMPLETION},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": COMPLETION, "total_tokens": 7 + COMPLETION}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", gate, seen
    finally:
        gate.set()
        await runner.cleanup()


async def test_50_concurrent_reservations_of_1000_admit_exactly_10(tmp_path, limiter_url):
    async with gated_upstream() as (base_url, gate, seen_models):
        cfg = config(tmp_path, providers=(provider("primary", base_url),), redis_url=limiter_url, tiers=TIERS)
        async with run_gateway(cfg) as gw:
            key = await gw.new_key("c3")
            client = TollgateClient.connect(gw.rt.grpc_target, api_key=key)
            try:
                async def all_decided(n: int, max_tokens: int = 900) -> list:
                    """n calls at once; the refused answer at once, the admitted wait upstream
                    until every one of the n has been decided, then all answer."""
                    gate.clear()
                    before = seen_models["gpt-4o-mini"]
                    calls = [asyncio.ensure_future(client.chat(chat_input(max_tokens=max_tokens))) for _ in range(n)]
                    while sum(c.done() for c in calls) + seen_models["gpt-4o-mini"] - before < n:
                        await asyncio.sleep(0.02)
                    gate.set()
                    return await asyncio.gather(*calls, return_exceptions=True)

                results = await all_decided(50)
                passed = [r for r in results if not isinstance(r, BaseException)]
                refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
                assert (len(passed), len(refused)) == (10, 40), [type(r).__name__ for r in results]
                for e in refused:
                    info = error_info(e)
                    assert info.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.reason == "RATE_LIMIT_EXCEEDED"
                    assert len(info.quota_violations) == 1 and "tpd limit 10000" in info.quota_violations[0][1]
                    assert info.retry_after_s and info.retry_after_s > 0
                assert seen_models["gpt-4o-mini"] == 10  # the refused never reached the upstream
                rows = await gw.ledger()
                key_id = rows[0].key_id
                assert Counter(r.status for r in rows) == {"ok": 10, "rate_limited": 40}
                for r in rows:
                    want = (7, COMPLETION) if r.status == "ok" else (0, 0)
                    assert (r.prompt_tokens, r.completion_tokens) == want
                    assert r.estimated is (r.status != "ok")  # the provider's own count where it answered

                # Settled: the counter holds what was used, exactly what the ledger says.
                spent = await ledger_sum(gw, key_id)
                assert spent == 10 * (7 + COMPLETION)
                assert await counter(gw, key_id) == spent

                # A failed request refunds its whole reservation.
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await client.chat(chat_input("broken"))
                assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
                assert await counter(gw, key_id) == spent == await ledger_sum(gw, key_id)

                # A request that took a retry is charged once, with the answering try's usage.
                resp = await client.chat(chat_input("flaky"))
                assert resp.usage.prompt_tokens + resp.usage.completion_tokens == 7 + COMPLETION
                assert seen_models["flaky"] == 2
                flaky = [r for r in await gw.ledger() if r.model == "flaky"]
                assert [(r.status, r.attempts) for r in flaky] == [("ok", 2)]
                assert await counter(gw, key_id) == spent + 7 + COMPLETION == await ledger_sum(gw, key_id)

                # What is left is what the counter says: 10,000 - spent, in 1,000-token reservations.
                left = 10_000 - await counter(gw, key_id)
                more = await all_decided(left // 1000 + 2)
                assert sum(not isinstance(r, BaseException) for r in more) == left // 1000
            finally:
                await client.close()


async def test_failover_to_another_provider_charges_once(tmp_path):
    async with run_scripted(err(503)) as a, run_scripted(ok(tokens=COMPLETION)) as b:
        cfg = config(tmp_path, strategy="priority", tiers=TIERS,
                     providers=(provider("a", a.base_url, keys=("sk-a",)), provider("b", b.base_url, keys=("sk-b",), priority=1)))
        async with run_gateway(cfg) as gw:
            key = await gw.new_key("c3")
            client = TollgateClient.connect(gw.rt.grpc_target, api_key=key)
            try:
                resp = await client.chat(chat_input())
            finally:
                await client.close()
            assert resp.route.provider == "b"
            assert len(a.calls) == 2 and len(b.calls) == 1  # a: try + same-route retry; then b
            [row] = await gw.ledger()
            assert (row.provider, row.status, row.attempts) == ("b", "ok", 3)
            assert (row.prompt_tokens, row.completion_tokens) == (7, COMPLETION)
            assert await counter(gw, row.key_id) == 7 + COMPLETION == await ledger_sum(gw, row.key_id)


async def test_the_next_request_sees_the_last_answer_settled(tmp_path, limiter_url):
    """An answer's settlement is queued behind the answer (pipeline._finish); a caller's next
    request must still find it done: 1,100 tokens/day fit a second 1,000-token reservation only
    once the first has been settled to its 27 tokens. Through the HTTP bridge, one by one."""
    tiers = DEFAULT_TIERS + (TierConfig("c3s", tpd=1_100),)
    async with run_scripted(ok(tokens=COMPLETION)) as up:
        cfg = config(tmp_path, providers=(provider("primary", up.base_url),), redis_url=limiter_url, tiers=tiers)
        async with run_gateway(cfg) as gw:
            key = await gw.new_key("c3s")
            body = {"model": "gpt-4o-mini", "max_tokens": 900, "messages": [{"role": "user", "content": PROMPT}]}
            statuses = []
            for _ in range(3):
                r = await gw.http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                statuses.append(r.status_code)
            # 27 + 27 + 1,000 still fits 1,100; each would have been refused with the last one unsettled.
            assert statuses == [200, 200, 200]
            rows = await gw.ledger()
            assert [r.status for r in rows] == ["ok"] * 3
            assert await ledger_sum(gw, rows[0].key_id) == 3 * (7 + COMPLETION)
            d = await gw.app.limiter.peek("ak:" + rows[0].key_id, gw.app.quotas.token_rules("c3s"))
            assert d.used == 3 * (7 + COMPLETION)
