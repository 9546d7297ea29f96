"""RELIABILITY A5: an upstream that refuses, resets, talks garbage or says nothing is served
around; per-try timeouts fail over without a same-route retry; with nowhere left to go the
caller gets 504 / DEADLINE_EXCEEDED no later than the deadline + 0.5 s; a stream's first token
must arrive within first_token_timeout_s.

Real clock (the waits are real and short: per-try and deadlines of 1 s), bridge and gRPC on real
ports, scripted upstreams on 127.0.0.1, no retry jitter.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import grpc
import pytest

from tests.reliability.scripted import GARBAGE, RESET, SILENT, closed_port_url, ok, run_scripted
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body, error_events, read_events, stream_text
from tollgate.client import TollgateClient, error_info
from tollgate.v1 import chat_pb2


@asynccontextmanager
async def setup(tmp_path, primary_reply, primary_url: str | None = None, fallback: bool = True,
                primary_kw: dict | None = None, **cfg_kw):
    async with run_scripted(primary_reply) as primary, run_scripted() as fb:
        providers = [provider("primary", primary_url or primary.base_url, keys=("sk-primary",), **(primary_kw or {}))]
        if fallback:
            providers.append(provider("fallback", fb.base_url, keys=("sk-fallback",), priority=1))
        cfg = config(tmp_path, strategy="priority", providers=tuple(providers), **cfg_kw)
        async with run_gateway(cfg) as gw:
            yield gw, bearer(await gw.new_key()), primary, fb


@pytest.mark.parametrize("fault", ["refused", "reset", "garbage"])
async def test_refused_reset_and_garbage_are_served_by_the_fallback(tmp_path, fault):
    reply = {"refused": ok(), "reset": RESET, "garbage": GARBAGE}[fault]
    url = closed_port_url() if fault == "refused" else None
    async with setup(tmp_path, reply, primary_url=url) as (gw, auth, primary, fb):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200, r.text
        assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
        assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 "
        async with gw.http.stream("POST", CHAT, json=chat_body("gpt-4o-mini", stream=True), headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
            events = await read_events(r)
        assert stream_text(events) == "tok0 tok1 tok2 tok3 " and events[-1] == "[DONE]"
        assert error_events(events) == []
        rows = await gw.ledger()
        assert [(x.status, x.provider) for x in rows] == [("ok", "fallback")] * 2


async def test_silent_primary_times_out_per_try_and_the_fallback_serves_without_a_retry(tmp_path):
    async with setup(tmp_path, SILENT, primary_kw={"timeout_s": 1.0}) as (gw, auth, primary, fb):
        t0 = time.monotonic()
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        took = time.monotonic() - t0
        assert r.status_code == 200, r.text
        assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
        assert r.headers["X-Tollgate-Route"] == "primary/primary-k1=timeout, fallback/fallback-k1=ok(200)"
        assert 1.0 <= took < 1.8, took
        assert len(primary.calls) == 1  # no same-route retry after a timeout


async def test_silent_primary_and_no_fallback_is_504_by_the_deadline(tmp_path):
    # request_timeout_s is the deadline over HTTP; the provider's own timeout (60 s) is longer.
    async with setup(tmp_path, SILENT, fallback=False, request_timeout_s=1.0) as (gw, auth, primary, fb):
        t0 = time.monotonic()
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        took = time.monotonic() - t0
        assert r.status_code == 504, r.text
        assert r.json()["error"]["type"] == "timeout_error"
        assert took <= 1.0 + 0.5, took
        assert len(primary.calls) == 1
        rows = await gw.ledger()
        assert [x.status for x in rows] == ["deadline_exceeded"]


async def test_silent_primary_with_a_short_per_try_timeout_and_no_fallback_is_504_too(tmp_path):
    async with setup(tmp_path, SILENT, fallback=False, primary_kw={"timeout_s": 1.0}) as (gw, auth, primary, fb):
        t0 = time.monotonic()
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        took = time.monotonic() - t0
        assert r.status_code == 504, r.text  # a timeout everywhere is a gateway timeout, not an outage
        assert 1.0 <= took < 2.0, took
        assert len(primary.calls) == 1


async def test_grpc_deadline_bounds_the_request(tmp_path):
    async with setup(tmp_path, SILENT, fallback=False) as (gw, auth, primary, fb):
        client = TollgateClient.connect(gw.rt.grpc_target, api_key=auth["Authorization"].removeprefix("Bearer "))
        t0 = time.monotonic()
        try:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await client.chat(chat_pb2.ChatInput(model="gpt-4o-mini", messages=[
                    chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")]), timeout=1.0)
        finally:
            await client.close()
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error_info(e.value)
        assert time.monotonic() - t0 <= 1.0 + 0.5


async def test_stream_first_token_timeout_fails_over(tmp_path):
    # The primary sends headers at once and its first token 5 s later.
    async with run_fake_openai() as primary, run_scripted() as fb:
        cfg = config(tmp_path, strategy="priority", first_token_timeout_s=0.5, providers=(
            provider("primary", primary.base_url, keys=("sk-primary",)),
            provider("fallback", fb.base_url, keys=("sk-fallback",), priority=1)))
        async with run_gateway(cfg) as gw:
            auth = bearer(await gw.new_key())
            t0 = time.monotonic()
            async with gw.http.stream("POST", CHAT, json=chat_body("fault-slow-first-5", stream=True), headers=auth) as r:
                assert r.status_code == 200
                assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
                events = await read_events(r)
            assert time.monotonic() - t0 < 1.2
            assert stream_text(events) == "tok0 tok1 tok2 tok3 " and events[-1] == "[DONE]"
            # A stream's headers leave with its first token: the route so far, before the fallback's outcome.
            assert r.headers["X-Tollgate-Route"] == "primary/primary-k1=timeout"


async def test_stream_first_token_timeout_covers_a_primary_that_never_sends_headers(tmp_path):
    async with setup(tmp_path, SILENT, first_token_timeout_s=0.5) as (gw, auth, primary, fb):
        t0 = time.monotonic()
        async with gw.http.stream("POST", CHAT, json=chat_body("gpt-4o-mini", stream=True), headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
            events = await read_events(r)
        assert time.monotonic() - t0 < 1.2
        assert events[-1] == "[DONE]" and error_events(events) == []
        assert len(primary.calls) == 1
