"""Native pass-through (seed 003): /v1/{openai,anthropic,gemini}/* against each provider's fake.

What the caller gets must be byte-equal to what the fake sends for the same request (checked by
asking the fake directly afterwards, its id counters reset), streamed as it comes, with the
gateway's provider key upstream and never the caller's, and one ledger row per request with
the provider's own token counts."""

from __future__ import annotations

import asyncio
import itertools
import time

import anthropic
import httpx
import openai
import orjson
import pytest

from services.routing import passthrough
from tests.support.fakes import openai as fake_openai_module
from tests.support.fakes.anthropic import FAKE_ANTHROPIC_KEY, run_fake_anthropic
from tests.support.fakes.gemini import DEFAULT_KEY as GEMINI_KEY, run_fake_gemini
from tests.support.gateway import config, provider, run_gateway

UPSTREAM_OPENAI_KEY = "sk-test-upstream"
CHAT = {"model": "tokens-3", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "one two three"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "alpha beta gamma"}]}]}
GEN = "/v1/gemini/v1beta/models/gemini-2.5-flash:generateContent"
STREAM_GEN = "/v1/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


async def rows_when(gw, want: int, timeout: float = 2.0) -> list:
    end = time.monotonic() + timeout
    rows = await gw.ledger()
    while len(rows) < want and time.monotonic() < end:
        await asyncio.sleep(0.05)
        rows = await gw.ledger()
    return rows


def tokens(rows) -> list[tuple]:
    return [(r.surface, r.status, r.provider, r.model, r.prompt_tokens, r.completion_tokens, r.estimated) for r in rows]


@pytest.fixture
async def fake_anthropic():
    async with run_fake_anthropic(api_keys=(FAKE_ANTHROPIC_KEY, "sk-ant-second")) as fake:
        yield fake


@pytest.fixture
async def fake_gemini():
    async with run_fake_gemini() as fake:
        yield fake


@pytest.fixture
async def gw(tmp_path, fake_openai, fake_anthropic, fake_gemini):
    cfg = config(tmp_path, providers=(
        provider("primary", fake_openai.base_url),
        provider("claude", fake_anthropic.base_url, kind="anthropic", keys=(FAKE_ANTHROPIC_KEY, "sk-ant-second")),
        provider("gem", fake_gemini.base_url, kind="gemini", keys=(GEMINI_KEY,)),
    ))
    async with run_gateway(cfg) as g:
        yield g


@pytest.fixture
async def key(gw):
    return await gw.new_key()


def reset_openai_ids(monkeypatch) -> None:
    monkeypatch.setattr(fake_openai_module, "_ids", itertools.count(1))


# --- OpenAI ------------------------------------------------------------------------------------


async def test_openai_json_and_stream_are_relayed_byte_equal(gw, key, fake_openai, monkeypatch):
    direct = httpx.AsyncClient(base_url=fake_openai.base_url, headers={"Authorization": "Bearer " + UPSTREAM_OPENAI_KEY})
    for body in (CHAT, {**CHAT, "stream": True, "stream_options": {"include_usage": True}}):
        reset_openai_ids(monkeypatch)
        r = await gw.http.post("/v1/openai/chat/completions", json=body, headers={"Authorization": "Bearer " + key})
        assert r.status_code == 200
        assert r.headers["x-request-id"].startswith("req_") and r.headers["x-llm-provider"] == "primary"
        sent = fake_openai.requests[-1]
        assert sent.headers["Authorization"] == "Bearer " + UPSTREAM_OPENAI_KEY
        assert key not in str(sent.headers) and sent.body == body
        reset_openai_ids(monkeypatch)
        expected = await direct.post("/chat/completions", json=body)
        assert r.content == expected.content
        assert r.headers["content-type"] == expected.headers["content-type"]
    await direct.aclose()
    rows = await rows_when(gw, 2)
    assert tokens(rows) == [("passthrough_openai", "ok", "primary", "tokens-3", 7, 3, False)] * 2
    assert all(r.provider_key_id == "primary-k1" and r.attempts == 1 for r in rows)


async def test_openai_sdk_through_the_passthrough(gw, key):
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1/openai", api_key=key, max_retries=0)
    resp = await client.chat.completions.create(**CHAT)
    assert resp.choices[0].message.content == "tok0 tok1 tok2 "
    stream = await client.chat.completions.create(**CHAT, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "tok0 tok1 tok2 "
    # A caller path with its own v1/ reaches the same endpoint (the base URL already ends in /v1).
    r = await gw.http.post("/v1/openai/v1/chat/completions", json=CHAT, headers={"X-API-Key": key})
    assert r.status_code == 200
    rows = await rows_when(gw, 3)
    # No usage in a stream the caller did not ask it for: estimated from the relayed text.
    got = sorted((r.estimated, r.completion_tokens) for r in rows)
    assert got[:2] == [(False, 3), (False, 3)] and got[2][0] and 3 <= got[2][1] <= 4  # truth: 3


async def test_upstream_400_is_relayed_unchanged(gw, key, fake_openai, monkeypatch):
    body = {**CHAT, "model": "fault-400"}
    r = await gw.http.post("/v1/openai/chat/completions", json=body, headers={"Authorization": "Bearer " + key})
    expected = await httpx.AsyncClient(base_url=fake_openai.base_url).post(
        "/chat/completions", json=body, headers={"Authorization": "Bearer " + UPSTREAM_OPENAI_KEY})
    assert r.status_code == 400 and r.content == expected.content
    rows = await rows_when(gw, 1)
    assert [(x.status, x.error, x.prompt_tokens, x.completion_tokens) for x in rows] == [("upstream_error", "400", 0, 0)]


async def test_client_disconnect_is_one_row_and_closes_the_upstream(gw, key, fake_openai):
    body = {**CHAT, "model": "fault-stall-after-2", "stream": True}
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        async with http.stream("POST", "/v1/openai/chat/completions", json=body,
                               headers={"Authorization": "Bearer " + key}) as r:
            assert r.status_code == 200
            got = b""
            async for piece in r.aiter_raw():
                got += piece
                if got.count(b'"content":"tok') == 2:
                    break  # the fake is stalled now: these bytes came before it finished
        t0 = time.monotonic()
    await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
    assert time.monotonic() - t0 < 1.0
    rows = await rows_when(gw, 1)
    assert [(x.surface, x.status, x.estimated) for x in rows] == [("passthrough_openai", "client_cancelled", True)]
    assert rows[0].completion_tokens >= 2
    assert gw.app.pipeline.active == 0


async def test_provider_refusing_the_gateway_key_is_502_without_its_message(gw, key, fake_openai):
    fake_openai.accepted_keys = {"sk-some-other-key"}
    r = await gw.http.post("/v1/openai/chat/completions", json=CHAT, headers={"Authorization": "Bearer " + key})
    assert r.status_code == 502
    assert "Incorrect API key" not in r.text and UPSTREAM_OPENAI_KEY not in r.text
    assert r.json()["error"]["type"] == "api_error"


async def test_caller_without_a_key_never_reaches_the_upstream(gw, fake_openai):
    r = await gw.http.post("/v1/openai/chat/completions", json=CHAT)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await gw.http.post("/v1/openai/chat/completions", json=CHAT, headers={"Authorization": "Bearer tg_wrong"})
    assert r.status_code == 401
    assert fake_openai.requests == []


async def test_upstream_body_over_the_limit_ends_the_relay(gw, key, monkeypatch):
    monkeypatch.setattr(passthrough, "MAX_RELAY_BYTES", 20_000)
    big = {**CHAT, "model": "tokens-6000"}  # ~40 kB
    # Known length over the limit: refused before anything is relayed.
    r = await gw.http.post("/v1/openai/chat/completions", json=big, headers={"Authorization": "Bearer " + key})
    assert r.status_code == 502 and r.json()["error"]["type"] == "api_error"
    # A stream that grows past it: cut, so the caller sees a truncated body, never a clean end.
    with pytest.raises(httpx.RemoteProtocolError):
        await gw.http.post("/v1/openai/chat/completions", json={**big, "stream": True},
                           headers={"Authorization": "Bearer " + key})
    rows = await rows_when(gw, 2)
    assert sorted(x.status for x in rows) == ["upstream_error", "upstream_error"]


# --- Anthropic ---------------------------------------------------------------------------------


async def test_anthropic_json_and_stream_are_relayed_byte_equal(gw, key, fake_anthropic):
    direct = httpx.AsyncClient(base_url=fake_anthropic.base_url,
                               headers={"x-api-key": FAKE_ANTHROPIC_KEY, "anthropic-version": "2023-06-01"})
    for path, body in (("/v1/anthropic/messages", CLAUDE), ("/v1/anthropic/v1/messages", {**CLAUDE, "stream": True})):
        fake_anthropic.reset()
        r = await gw.http.post(path, json=body, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        sent = fake_anthropic.requests[-1]
        assert sent.path == "/v1/messages"
        assert sent.headers["x-api-key"] == FAKE_ANTHROPIC_KEY and sent.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in sent.headers and key not in str(sent.headers)
        fake_anthropic.reset()
        expected = await direct.post("/v1/messages", json=body)
        assert r.content == expected.content
        assert r.headers["request-id"] == expected.headers["request-id"]
    await direct.aclose()
    rows = await rows_when(gw, 2)
    # JSON: usage in the body; stream: input from message_start, output from message_delta.
    assert tokens(rows) == [("passthrough_anthropic", "ok", "claude", "claude-haiku-4-5", 3, 3, False)] * 2


async def test_anthropic_sdk_through_the_passthrough_keeps_its_version(gw, key, fake_anthropic):
    client = anthropic.AsyncAnthropic(base_url=gw.url + "/v1/anthropic", api_key=key, max_retries=0)
    async with client.messages.stream(**CLAUDE) as s:
        final = await s.get_final_message()
    assert final.content[0].text == "one two three" and final.usage.output_tokens == 3
    sent = fake_anthropic.requests[-1]
    assert sent.headers["anthropic-version"] != "2023-06-01"  # the SDK's own, passed along
    assert sent.headers["x-api-key"] == FAKE_ANTHROPIC_KEY and "authorization" not in sent.headers


async def test_first_chunk_arrives_before_the_upstream_finishes(gw, key, fake_anthropic, fake_gemini):
    fake_anthropic.stream_pause_s = 0.15
    fake_gemini.token_delay_s = 0.3
    async with httpx.AsyncClient(base_url=gw.url, timeout=10, headers={"X-API-Key": key}) as http:
        async with http.stream("POST", "/v1/anthropic/v1/messages", json={**CLAUDE, "stream": True}) as r:
            pieces = r.aiter_raw()
            first = await pieces.__anext__()
            assert b"message_start" in first
            assert fake_anthropic.open_streams == 1 and fake_anthropic.streams_completed == 0
            rest = b"".join([p async for p in pieces])
        assert b"message_stop" in rest and fake_anthropic.streams_completed == 1
        async with http.stream("POST", STREAM_GEN, json=GEMINI) as r:
            pieces = r.aiter_raw()
            first = await pieces.__anext__()
            assert b"alpha" in first and fake_gemini.completed_streams == 0
            rest = b"".join([p async for p in pieces])
        assert b"gamma" in rest and fake_gemini.completed_streams == 1


async def test_second_key_is_tried_after_a_5xx_before_any_byte(gw, key, fake_anthropic):
    r = await gw.http.post("/v1/anthropic/messages", json={**CLAUDE, "model": "fault-503-x1"}, headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "one two three"
    assert [x.headers["x-api-key"] for x in fake_anthropic.requests] == [FAKE_ANTHROPIC_KEY, "sk-ant-second"]
    assert r.headers["x-llm-key-id"] == "claude-k2"
    assert "claude-k1=server(503)" in r.headers["x-tollgate-route"]
    rows = await rows_when(gw, 1)
    assert [(x.status, x.attempts, x.provider_key_id) for x in rows] == [("ok", 2, "claude-k2")]


async def test_upstream_5xx_on_the_last_key_is_relayed(gw, key, fake_anthropic):
    r = await gw.http.post("/v1/anthropic/messages", json={**CLAUDE, "model": "fault-529"}, headers={"X-API-Key": key})
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
    rows = await rows_when(gw, 1)
    assert [(x.status, x.error, x.attempts) for x in rows] == [("upstream_error", "529", 2)]


# --- Gemini ------------------------------------------------------------------------------------


async def test_gemini_json_and_sse_are_relayed_byte_equal(gw, key, fake_gemini):
    direct = httpx.AsyncClient(base_url=fake_gemini.base_url, headers={"x-goog-api-key": GEMINI_KEY})
    for path in (GEN, STREAM_GEN, "/v1/gemini/models/gemini-2.5-flash:generateContent"):
        r = await gw.http.post(path, json=GEMINI, headers={"x-goog-api-key": key})  # what Google's SDKs send
        assert r.status_code == 200, r.text
        sent = fake_gemini.last
        assert sent.headers["x-goog-api-key"] == GEMINI_KEY and "key" not in sent.query
        assert key not in str(sent.headers)
        expected = await direct.post(path.removeprefix("/v1/gemini").replace("/models/", "/v1beta/models/", 1)
                                     if not path.startswith("/v1/gemini/v1beta") else path.removeprefix("/v1/gemini"),
                                     json=GEMINI)
        assert r.content == expected.content
    await direct.aclose()
    rows = await rows_when(gw, 3)
    assert tokens(rows) == [("passthrough_gemini", "ok", "gem", "gemini-2.5-flash", 3, 3, False)] * 3


async def test_credentials_and_hop_by_hop_headers_are_not_forwarded(gw, key, fake_gemini):
    r = await gw.http.post(
        STREAM_GEN + "&key=caller-secret&api_key=other", json=GEMINI,
        headers={"Authorization": "Bearer " + key, "Cookie": "session=abc", "Proxy-Authorization": "Basic eA==",
                 "Connection": "keep-alive, X-Custom", "X-Custom": "1", "Keep-Alive": "timeout=5", "TE": "trailers",
                 "X-Forwarded-For": "10.0.0.1", "Accept": "text/event-stream"})
    assert r.status_code == 200
    sent = fake_gemini.last
    assert sent.query == {"alt": "sse"}
    for name in ("authorization", "cookie", "proxy-authorization", "x-custom", "keep-alive", "te", "x-forwarded-for", "x-api-key"):
        assert name not in sent.headers, name
    assert sent.headers["accept"] == "text/event-stream"
    assert key not in str(sent.headers) and "caller-secret" not in str(sent.headers)


# --- routing errors ----------------------------------------------------------------------------


async def test_no_configured_provider_is_404(tmp_path, fake_openai):
    async with run_gateway(config(tmp_path, providers=(provider("primary", fake_openai.base_url),))) as g:
        k = await g.new_key()
        r = await g.http.post(GEN, json=GEMINI, headers={"X-API-Key": k})
        assert r.status_code == 404
        err = r.json()["error"]
        assert set(err) >= {"message", "type", "param", "code"} and "gemini" in err["message"]
        rows = await rows_when(g, 1)
        assert [(x.surface, x.status, x.prompt_tokens) for x in rows] == [("passthrough_gemini", "not_found", 0)]


async def test_paths_that_escape_the_api_root_are_refused(gw, key, fake_openai):
    for path in ("/v1/openai/%2e%2e/admin", "/v1/openai/a/%2E%2E/%2e%2e/x"):
        r = await gw.http.get(path, headers={"X-API-Key": key})
        assert r.status_code == 400, path
    assert fake_openai.requests == []


def test_request_cleaning():
    req = passthrough.native_request("Gemini", "post", "/v1beta/models/gemini-2.5-pro:generateContent",
                                     "alt=sse&key=abc&KEY=x&api_key=y&x=1",
                                     [("Authorization", "Bearer k"), ("Content-Type", "application/json"), ("Cookie", "c")],
                                     orjson.dumps({"contents": [{"parts": [{"text": "hello world " * 10}]}],
                                                   "generationConfig": {"maxOutputTokens": 77}}))
    assert (req.provider, req.method, req.query, req.headers) == ("gemini", "POST", "alt=sse&x=1", [("content-type", "application/json")])
    assert (req.model, req.max_tokens, req.surface) == ("gemini-2.5-pro", 77, "passthrough_gemini")
    assert 30 <= req.prompt_estimate <= 45
    assert passthrough.upstream_url("openai", "http://h/v1", "v1/chat/completions", "") == "http://h/v1/chat/completions"
    assert passthrough.upstream_url("openai", "http://h/api/v1/", "models", "a=1") == "http://h/api/v1/models?a=1"
    assert passthrough.upstream_url("anthropic", "http://h", "messages", "") == "http://h/v1/messages"
    assert passthrough.upstream_url("gemini", "http://h", "models/m:generateContent", "") == "http://h/v1beta/models/m:generateContent"
    for bad in (dict(path="../x"), dict(path="a/%2e%2e/b"), dict(method="CONNECT"), dict(query="a=1\r\nX: y"),
                dict(provider="bad provider")):
        args = dict(provider="openai", method="GET", path="models", query="", headers=[], body=b"") | bad
        with pytest.raises(Exception) as e:
            passthrough.native_request(**args)
        assert type(e.value).__name__ == "InvalidArgument"


async def test_relay_over_a_real_grpc_hop(gw, key, fake_anthropic):
    """The bridge alone against the gateway's gRPC port relays the same bytes as in-process."""
    from tests.gateway_http.test_bridge_remote import remote_bridge

    async with remote_bridge(gw.rt.grpc_target) as remote:
        for body in (CLAUDE, {**CLAUDE, "stream": True}):
            fake_anthropic.reset()
            a = await gw.http.post("/v1/anthropic/messages", json=body, headers={"X-API-Key": key})
            fake_anthropic.reset()
            b = await remote.post("/v1/anthropic/messages", json=body, headers={"X-API-Key": key})
            assert (a.status_code, b.status_code) == (200, 200)
            assert a.content == b.content and b.headers["x-llm-key-id"] == "claude-k1"
        r = await remote.post(GEN, json=GEMINI)  # no key: refused before any row or upstream call
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    rows = await rows_when(gw, 4)
    assert [x.status for x in rows] == ["ok"] * 4
