"""RELIABILITY A3: a 429's Retry-After decides between waiting (≤ 5 s: the same key again, no
sooner than asked) and failing over at once (the key idles for as long as it was told); when
every candidate says 429, so does the gateway, with the least Retry-After (HTTP 429 +
Retry-After, gRPC RESOURCE_EXHAUSTED + RetryInfo).

A whole gateway on a FakeClock: the router's wait is a FakeClock sleep, so "≥ 2 s later" is
read off the clock, and a 30 s cool-down is skipped by advancing it.
"""

from __future__ import annotations

import email.utils
import time
from collections import deque
from contextlib import asynccontextmanager

import grpc
import pytest

from services.clock import FakeClock
from tests.reliability.scripted import err, ok, run_gateway_on, run_scripted
from tests.support.gateway import config, provider
from tests.support.sse_read import CHAT, bearer, chat_body
from tollgate.client import TollgateClient, error_info
from tollgate.v1 import chat_pb2

PRIMARY = "primary-k1"


@asynccontextmanager
async def setup(tmp_path, primary_reply, fallback_reply=None):
    clock = FakeClock()
    async with run_scripted(primary_reply) as primary, run_scripted(fallback_reply or ok()) as fallback:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", primary.base_url, keys=("sk-primary",)),
            provider("fallback", fallback.base_url, keys=("sk-fallback",), priority=1),
        ))
        async with run_gateway_on(cfg, clock) as gw:
            yield gw, bearer(await gw.new_key()), clock, primary, fallback


@pytest.mark.parametrize("header", [
    {"Retry-After": "2"},
    {"retry-after-ms": "2000"},
    {"Retry-After": "garbage-then-ms", "retry-after-ms": "2500"},
])
async def test_short_retry_after_is_waited_out_on_the_same_key(tmp_path, header):
    async with setup(tmp_path, ok()) as (gw, auth, clock, primary, fallback):
        primary.script = deque([err(429, header)])
        t0 = clock.monotonic()
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200, r.text
        assert r.headers["X-LLM-Key-ID"] == PRIMARY
        assert r.headers["X-Tollgate-Route"] == "primary/primary-k1=rate_limited(429), primary/primary-k1=ok(200)"
        assert clock.monotonic() - t0 >= 2.0
        assert len(primary.calls) == 2 and fallback.calls == []


async def test_short_retry_after_as_an_http_date(tmp_path):
    async with setup(tmp_path, ok()) as (gw, auth, clock, primary, fallback):
        # Adapters read HTTP-dates against the wall clock; 3 s ahead at 1 s resolution is 2-3 s.
        when = email.utils.formatdate(time.time() + 3.0, usegmt=True)
        primary.script = deque([err(429, {"Retry-After": when})])
        t0 = clock.monotonic()
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200 and r.headers["X-LLM-Key-ID"] == PRIMARY
        assert 1.0 <= clock.monotonic() - t0 <= 3.0


async def test_a_key_that_still_says_429_after_the_wait_cools_down_and_the_fallback_serves(tmp_path):
    async with setup(tmp_path, err(429, {"Retry-After": "2"})) as (gw, auth, clock, primary, fallback):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200 and r.headers["X-LLM-Key-ID"] == "fallback-k1"
        assert len(primary.calls) == 2  # waited once, then moved on
        assert gw.app.router.cooldowns.remaining(PRIMARY) == pytest.approx(2.0)


async def test_long_retry_after_fails_over_at_once_and_idles_the_key_for_that_long(tmp_path):
    async with setup(tmp_path, err(429, {"Retry-After": "30"})) as (gw, auth, clock, primary, fallback):
        t0 = clock.monotonic()
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200 and r.headers["X-LLM-Key-ID"] == "fallback-k1"
        assert clock.monotonic() == t0  # no wait at all
        assert len(primary.calls) == 1
        primary.default = ok()
        clock.advance(29.0)
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
        assert r.headers["X-Tollgate-Route"] == "primary/primary-k1=cooldown, fallback/fallback-k1=ok(200)"
        assert len(primary.calls) == 1
        clock.advance(1.5)  # 30 ± 1 s after the 429
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.headers["X-LLM-Key-ID"] == PRIMARY and len(primary.calls) == 2
        # A 429 is "busy", not "broken": the breaker never heard of it.
        assert gw.app.router.breaker.snapshot() == {}


async def test_all_candidates_429_is_a_429_with_the_least_retry_after(tmp_path):
    async with setup(tmp_path, err(429, {"Retry-After": "30"}), err(429, {"Retry-After": "20"})) as \
            (gw, auth, clock, primary, fallback):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "20"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert (len(primary.calls), len(fallback.calls)) == (1, 1)
        # Both keys idle now: the next caller is told the same without an upstream call.
        clock.advance(5.0)
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 429 and r.headers["Retry-After"] == "15"
        assert (len(primary.calls), len(fallback.calls)) == (1, 1)
        rows = await gw.ledger()
        assert [x.status for x in rows] == ["upstream_error", "upstream_error"]


async def test_all_candidates_429_over_grpc_is_resource_exhausted_with_retry_info(tmp_path):
    async with setup(tmp_path, err(429, {"Retry-After": "30"}), err(429, {"retry-after-ms": "12500"})) as \
            (gw, auth, clock, primary, fallback):
        client = TollgateClient.connect(gw.rt.grpc_target, api_key=auth["Authorization"].removeprefix("Bearer "))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await client.chat(chat_pb2.ChatInput(model="gpt-4o-mini", messages=[
                    chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")]), timeout=10)
        finally:
            await client.close()
        info = error_info(e.value)
        assert info.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.reason == "UPSTREAM_RATE_LIMITED"
        assert info.retry_after_s == pytest.approx(12.5)
