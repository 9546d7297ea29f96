"""Failover as a caller sees it through the bridge (RELIABILITY A1, A3, A4, A6): a failing primary
and a healthy fallback on real ports, strategy "priority", the answer's headers and ledger row."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import pytest

from tests.support.fakes.openai import run_fake_openai
from tests.support.fault_upstream import run_fault_upstream
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body, error_events, read_events, stream_text

PRIMARY_KEY = "sk-primary-SECRET-0001"
FALLBACK_KEY = "sk-fallback-SECRET-0002"


@asynccontextmanager
async def two_providers(tmp_path, primary_url: str, fallback_url: str):
    cfg = config(tmp_path, strategy="priority", providers=(
        provider("primary", primary_url, keys=(PRIMARY_KEY,), priority=0),
        provider("fallback", fallback_url, keys=(FALLBACK_KEY,), priority=1),
    ))
    async with run_gateway(cfg) as gw:
        yield gw, bearer(await gw.new_key())


@pytest.fixture
async def fallback():
    async with run_fake_openai() as fake:
        yield fake


async def test_503_primary_fails_over_to_fallback(tmp_path, fallback):
    async with run_fault_upstream(503, "The server is overloaded.") as primary, \
            two_providers(tmp_path, primary.base_url, fallback.base_url) as (gw, auth):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
        assert r.headers["X-LLM-Provider"] == "fallback"
        assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
        route = r.headers["X-Tollgate-Route"]
        assert route.startswith("primary/primary-k1=server(503)") and route.endswith("fallback/fallback-k1=ok(200)"), route
        assert primary.calls >= 1 and len(fallback.requests) == 1
        assert fallback.requests[0].headers["Authorization"] == "Bearer " + FALLBACK_KEY
        rows = await gw.ledger()
        assert len(rows) == 1
        row = rows[0]
        assert (row.status, row.provider, row.provider_key_id) == ("ok", "fallback", "fallback-k1")
        assert row.attempts >= 2 and row.attempts == primary.calls + 1
        assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (fallback.prompt_tokens, 8, False)


async def test_503_primary_before_first_token_fails_over_a_stream_silently(tmp_path, fallback):
    async with run_fault_upstream(503, "The server is overloaded.") as primary, \
            two_providers(tmp_path, primary.base_url, fallback.base_url) as (gw, auth):
        async with gw.http.stream("POST", CHAT, json=chat_body("tokens-4", stream=True), headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["X-LLM-Provider"] == "fallback"
            events = await read_events(r)
        assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
        assert error_events(events) == []
        assert stream_text(events) == "tok0 tok1 tok2 tok3 "
        rows = await gw.ledger()
        assert [(x.status, x.provider) for x in rows] == [("ok", "fallback")]
        assert rows[0].attempts >= 2


async def test_400_from_primary_is_not_failed_over(tmp_path):
    async with run_fake_openai() as primary, run_fake_openai() as fb, \
            two_providers(tmp_path, primary.base_url, fb.base_url) as (gw, auth):
        r = await gw.http.post(CHAT, json=chat_body("fault-400"), headers=auth)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["message"] == "Invalid value for 'temperature'."
        assert err["type"] == "invalid_request_error"
        assert len(primary.requests) == 1  # no same-route retry either
        assert fb.requests == []
        rows = await gw.ledger()
        assert [(x.status, x.provider, x.attempts) for x in rows] == [("bad_request", "primary", 1)]


async def test_provider_401_with_no_fallback_left_is_502_and_hides_keys(tmp_path):
    async with run_fault_upstream(401, "Incorrect API key provided: " + PRIMARY_KEY, etype="invalid_request_error",
                                  code="invalid_api_key") as primary, \
            run_fault_upstream(401, "Incorrect API key provided: " + FALLBACK_KEY, etype="invalid_request_error",
                               code="invalid_api_key") as fb, \
            two_providers(tmp_path, primary.base_url, fb.base_url) as (gw, auth):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 502, r.text
        assert r.json()["error"]["message"] == "provider rejected the gateway's key"
        for secret in (PRIMARY_KEY, FALLBACK_KEY, "SECRET"):
            assert secret not in r.text
            assert secret not in str(r.headers)
        # Both keys were tried once each (auth failures are not retried on the same key).
        assert (primary.calls, fb.calls) == (1, 1)
        rows = await gw.ledger()
        assert [(x.status, x.attempts) for x in rows] == [("upstream_error", 2)]


async def test_provider_401_fails_over_hidden_and_the_key_is_benched(tmp_path, fallback):
    async with run_fault_upstream(401, "Incorrect API key provided.", etype="invalid_request_error",
                                  code="invalid_api_key") as primary, \
            two_providers(tmp_path, primary.base_url, fallback.base_url) as (gw, auth):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200, r.text
        assert r.headers["X-LLM-Provider"] == "fallback"
        # The rejected key sits out: the next request does not try it again.
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200
        assert primary.calls == 1
        assert "primary/primary-k1=cooldown" in r.headers["X-Tollgate-Route"]


async def test_429_with_long_retry_after_fails_over_at_once(tmp_path, fallback):
    async with run_fault_upstream(429, "Rate limit reached for requests.", headers={"Retry-After": "30"},
                                  etype="requests", code="rate_limit_exceeded") as primary, \
            two_providers(tmp_path, primary.base_url, fallback.base_url) as (gw, auth):
        t0 = time.monotonic()
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        took = time.monotonic() - t0
        assert r.status_code == 200, r.text
        assert took < 1.0, took
        assert r.headers["X-LLM-Provider"] == "fallback"
        assert primary.calls == 1  # not retried on the same key
        # The primary key cools down for Retry-After: the next request goes straight to the fallback.
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200 and primary.calls == 1
        rows = await gw.ledger()
        assert sorted(x.provider for x in rows) == ["fallback", "fallback"]


async def test_stream_cut_after_first_tokens_is_not_retried(tmp_path):
    async with run_fake_openai() as primary, run_fake_openai() as fb, \
            two_providers(tmp_path, primary.base_url, fb.base_url) as (gw, auth):
        async with gw.http.stream("POST", CHAT, json=chat_body("fault-cut-after-3", stream=True), headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["X-LLM-Provider"] == "primary"
            events = await read_events(r)
        assert "[DONE]" not in events
        text = stream_text(events)  # all three, but see test_grpc_server's xfail on the lost tail
        assert text.startswith("tok0 ") and "tok0 tok1 tok2 ".startswith(text), text
        errors = error_events(events)
        assert len(errors) == 1 and errors[0] is not None
        assert errors[0]["message"]
        # No stop chunk either: a cut stream never looks finished (A6).
        assert '"finish_reason":"stop"' not in "".join(events)
        assert fb.requests == []
        rows = await gw.ledger()
        assert len(rows) == 1
        assert (rows[0].status, rows[0].provider) == ("upstream_error", "primary")
        assert rows[0].completion_tokens >= 1 and rows[0].estimated


# --------------------------------------------------------------------------- deadlines (A5, B3)

@pytest.fixture
async def short_deadline(tmp_path, fallback):
    """One provider, a 1 s request deadline: a slow upstream has nowhere to fail over to.
    (A high breaker threshold keeps several timeouts in one test from opening the circuit.)"""
    cfg = config(tmp_path, request_timeout_s=1.0, breaker_threshold=100,
                 providers=(provider("primary", fallback.base_url),))
    async with run_gateway(cfg) as gw:
        yield gw, bearer(await gw.new_key())


async def test_deadline_with_no_fallback_is_504_in_time(short_deadline):
    gw, auth = short_deadline
    t0 = time.monotonic()
    r = await gw.http.post(CHAT, json=chat_body("fault-slow-first-5"), headers=auth)
    took = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert took < 1.5, took
    assert r.json()["error"]["type"] == "timeout_error"
    rows = await gw.ledger()
    assert len(rows) == 1 and rows[0].completion_tokens == 0


async def test_stream_deadline_before_first_token_is_504_in_time(short_deadline, fallback):
    gw, auth = short_deadline
    t0 = time.monotonic()
    async with gw.http.stream("POST", CHAT, json=chat_body("fault-slow-first-5", stream=True), headers=auth) as r:
        await r.aread()
    took = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert took < 1.5, took
    assert r.json()["error"]["type"] == "timeout_error"
    # B3: the upstream call is closed too.
    await asyncio.wait_for(fallback.disconnected.wait(), 0.5)
    rows = await gw.ledger()
    assert len(rows) == 1


async def test_deadline_is_metered_as_deadline_exceeded(short_deadline):
    gw, auth = short_deadline

    async def one(stream: bool):
        r = await gw.http.post(CHAT, json=chat_body("fault-slow-first-5", stream=stream), headers=auth)
        return r.status_code, r.json()["error"]["code"]

    answers = await asyncio.gather(*(one(stream) for stream in (False, True) * 4))
    assert answers == [(504, "deadline_exceeded")] * 8
    rows = await gw.ledger()
    assert [x.status for x in rows] == ["deadline_exceeded"] * 8


async def test_stream_stalled_past_the_deadline_is_metered_as_deadline_exceeded(short_deadline):
    gw, auth = short_deadline
    async with gw.http.stream("POST", CHAT, json=chat_body("fault-stall-after-3", stream=True), headers=auth) as r:
        events = await read_events(r)
    assert r.status_code == 200
    assert stream_text(events) == "tok0 tok1 tok2 " and "[DONE]" not in events
    assert error_events(events)[0]["type"] == "timeout_error"
    rows = await gw.ledger()
    assert [(x.status, x.estimated) for x in rows] == [("deadline_exceeded", True)]
