"""RELIABILITY A6: a stream fails over silently until its first token; after that, a broken
upstream is an in-band error (an OpenAI `error` chunk), never a `stop` or `[DONE]`, with no
failover, and the ledger row says `upstream_error` with the streamed tokens, estimated.

The primary is the fake OpenAI (faults by model name: fault-cut-after-3, fault-stall-after-3,
fault-error-chunk) or a scripted upstream; the fallback is scripted and answers any model.
Bridge on real ports, real clock (the stall waits idle_timeout_s = 0.5 s).

A clean end of body before the provider's finish signal is a cut too, also when a malformed
event (skipped, RELIABILITY E3) came before it: checked for the Anthropic, Gemini and Ollama
adapters against their fakes, with a fallback of the same kind that must never be asked.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import pytest

from tests.reliability.scripted import RESET, cut, err, run_scripted
from tests.support.fakes.native import NATIVE_FAKES
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body, error_events, read_events, stream_text


@asynccontextmanager
async def with_fake_primary(tmp_path, **cfg_kw):
    async with run_fake_openai() as primary, run_scripted() as fb:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", primary.base_url, keys=("sk-primary",)),
            provider("fallback", fb.base_url, keys=("sk-fallback",), priority=1)), **cfg_kw)
        async with run_gateway(cfg) as gw:
            yield gw, bearer(await gw.new_key()), primary, fb


@pytest.mark.parametrize("reply", [err(503), RESET, cut(0)], ids=["503", "reset", "cut-before-content"])
async def test_error_before_content_fails_over_silently(tmp_path, reply):
    async with run_scripted(reply) as primary, run_scripted() as fb:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", primary.base_url, keys=("sk-primary",)),
            provider("fallback", fb.base_url, keys=("sk-fallback",), priority=1)))
        async with run_gateway(cfg) as gw:
            auth = bearer(await gw.new_key())
            async with gw.http.stream("POST", CHAT, json=chat_body("gpt-4o-mini", stream=True), headers=auth) as r:
                assert r.status_code == 200
                assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
                events = await read_events(r)
            assert stream_text(events) == "tok0 tok1 tok2 tok3 "
            assert error_events(events) == [] and events.count("[DONE]") == 1 and events[-1] == "[DONE]"
            rows = await gw.ledger()
            assert [(x.status, x.provider) for x in rows] == [("ok", "fallback")]
            assert rows[0].attempts == len(primary.calls) + 1


async def test_cut_after_three_tokens_is_an_in_band_error_with_no_failover(tmp_path):
    async with with_fake_primary(tmp_path) as (gw, auth, primary, fb):
        async with gw.http.stream("POST", CHAT, json=chat_body("fault-cut-after-3", stream=True), headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["X-LLM-Key-ID"] == "primary-k1"
            events = await read_events(r)
        assert stream_text(events) == "tok0 tok1 tok2 "
        assert "[DONE]" not in events
        assert '"finish_reason":"stop"' not in "".join(events)
        errors = error_events(events)
        assert len(errors) == 1 and errors[0]["message"]
        assert "error" in events[-1]  # the error is the last thing sent
        assert fb.calls == []  # no failover after the first token
        rows = await gw.ledger()
        assert len(rows) == 1
        row = rows[0]
        assert (row.status, row.provider, row.provider_key_id) == ("upstream_error", "primary", "primary-k1")
        assert row.completion_tokens >= 3 and row.estimated


async def test_error_chunk_mid_stream_is_an_in_band_error(tmp_path):
    async with with_fake_primary(tmp_path) as (gw, auth, primary, fb):
        async with gw.http.stream("POST", CHAT, json=chat_body("fault-error-chunk", stream=True), headers=auth) as r:
            events = await read_events(r)
        assert stream_text(events) == "tok0 tok1 "
        assert "[DONE]" not in events and len(error_events(events)) == 1
        assert fb.calls == []
        rows = await gw.ledger()
        assert [(x.status, x.provider) for x in rows] == [("upstream_error", "primary")]


async def test_stall_after_three_tokens_errors_within_the_idle_timeout(tmp_path):
    idle = 0.5
    async with with_fake_primary(tmp_path, idle_timeout_s=idle) as (gw, auth, primary, fb):
        async with gw.http.stream("POST", CHAT, json=chat_body("fault-stall-after-3", stream=True), headers=auth) as r:
            assert r.status_code == 200
            events, buf, third_at, ended_at = [], "", None, None
            async for piece in r.aiter_text():
                buf += piece
                while "\n\n" in buf:
                    block, buf = buf.split("\n\n", 1)
                    events.append(block.removeprefix("data: "))
                    if third_at is None and "tok2" in block:
                        third_at = time.monotonic()
            ended_at = time.monotonic()
        assert stream_text(events) == "tok0 tok1 tok2 "
        assert "[DONE]" not in events and len(error_events(events)) == 1
        assert third_at is not None and abs((ended_at - third_at) - idle) <= 1.0, ended_at - third_at
        assert fb.calls == []
        rows = await gw.ledger()
        assert rows[0].status == "upstream_error" and rows[0].completion_tokens >= 3 and rows[0].estimated


ENDS_BEFORE_FINISH = [  # three tokens, then a clean end of body with no finish signal
    ("anthropic", "fault-eof-after-3"),  # no message_delta stop_reason, no message_stop
    ("anthropic", "fault-bad-json-after-3"),  # ... after a truncated event
    ("gemini", "fault-badjson-after-3"),  # a truncated event, no candidate with finishReason
    ("ollama", "fault-badjson-after-3"),  # a truncated line, no "done": true line
]


@pytest.mark.parametrize("kind,model", ENDS_BEFORE_FINISH, ids=[f"{k}-{m}" for k, m in ENDS_BEFORE_FINISH])
async def test_a_clean_end_before_the_finish_signal_is_an_in_band_error(tmp_path, kind, model):
    run, key = NATIVE_FAKES[kind]
    async with run() as primary, run() as fallback:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", primary.base_url, kind=kind, keys=(key,), models=(model,)),
            provider("fallback", fallback.base_url, kind=kind, keys=(key,), models=(model,), priority=1)))
        async with run_gateway(cfg) as gw:
            auth = bearer(await gw.new_key())
            body = chat_body(model, stream=True, text="one two three four five")
            async with gw.http.stream("POST", CHAT, json=body, headers=auth) as r:
                assert r.status_code == 200
                events = await read_events(r)
            assert stream_text(events).strip() == "one two three"
            assert "[DONE]" not in events and '"finish_reason":"stop"' not in "".join(events)
            assert len(error_events(events)) == 1 and "error" in events[-1]
            assert [x for x in fallback.requests if x.method == "POST"] == []  # no failover after the first token
            rows = await gw.ledger()
            assert [(x.status, x.provider) for x in rows] == [("upstream_error", "primary")]
            assert rows[0].completion_tokens >= 3 and rows[0].estimated
