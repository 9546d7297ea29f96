"""Issue 15 point 3 (RELIABILITY F3): an upstream whose errors echo secrets never gets them out.

The fake upstream below answers errors that quote the provider key it was sent and the prompt
(which here carries the caller's own API key and the admin key, as a careless client might).
Through every surface (OpenAI and Anthropic SDKs, seeds' /api/chat, /ws, gRPC with its status
details, the native pass-through's relayed error body) the answer must hold none of those
secrets, and must show that the echo came through scrubbed ([redacted]) rather than dropped.
"""

from __future__ import annotations

import anthropic
import grpc
import openai
import orjson
import pytest
from aiohttp import web

from services.core.scrub import Scrubber
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway
from tests.support.local_server import serve_app
from tollgate.client import TollgateClient
from tollgate.v1 import chat_pb2

KEY_ONE = "sk-h15-upstream-key-one-0123456789"
KEY_TWO = "sk-h15-upstream-key-two-9876543210"
REDACTED = "[redacted]"


def echo_upstream() -> web.Application:
    """OpenAI-shaped; the model picks the fault, each error quotes the key and the prompt."""

    def message(request: web.Request, body: dict) -> str:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        prompt = " ".join(str(m.get("content")) for m in body.get("messages", []))
        return f"Invalid request for key {key}; prompt was: {prompt}"

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body.get("model", "")
        text = message(request, body)
        if model == "echo-400":
            return web.json_response({"error": {"message": text, "type": "invalid_request_error", "param": None,
                                                "code": None}}, status=400)
        if model == "echo-503":
            return web.json_response({"error": {"message": text, "type": "server_error", "param": None,
                                                "code": None}}, status=503)
        # echo-stream: one token, then an in-band error event quoting the key (RELIABILITY A6's shape)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 1, "model": model}
        await resp.write(b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                   "content": "tok0 "}, "finish_reason": None}]}) + b"\n\n")
        await resp.write(b"data: " + orjson.dumps({"error": {"message": text, "type": "server_error"}}) + b"\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture
async def gw(tmp_path):
    async with serve_app(echo_upstream()) as origin:
        cfg = config(tmp_path, providers=(provider("p1", origin + "/v1", keys=(KEY_ONE,), priority=1),
                                          provider("p2", origin + "/v1", keys=(KEY_TWO,), priority=2)))
        async with run_gateway(cfg) as g:
            yield g


def prompt_with_secrets(api_key: str) -> str:
    return f"my key is {api_key} and the admin key is {ADMIN_KEY}"


def assert_clean(text: str, api_key: str) -> None:
    for secret in (KEY_ONE, KEY_TWO, api_key, ADMIN_KEY):
        assert secret not in text, (secret, text)
    assert REDACTED in text, text  # the upstream's message came through, scrubbed


async def test_openai_surface_400_503_and_stream(gw):
    key = await gw.new_key()
    msgs = [{"role": "user", "content": prompt_with_secrets(key)}]
    raw = await gw.http.post("/v1/chat/completions", json={"model": "echo-400", "messages": msgs},
                             headers={"Authorization": "Bearer " + key})
    assert raw.status_code == 400
    assert_clean(raw.text, key)
    # Both providers fail: "all upstreams failed; last: …" carries the second one's echo.
    raw = await gw.http.post("/v1/chat/completions", json={"model": "echo-503", "messages": msgs},
                             headers={"Authorization": "Bearer " + key})
    assert raw.status_code in (502, 503) and "all upstreams failed" in raw.text
    assert_clean(raw.text, key)
    raw = await gw.http.post("/v1/chat/completions", json={"model": "echo-stream", "stream": True, "messages": msgs},
                             headers={"Authorization": "Bearer " + key})
    assert raw.status_code == 200 and "tok0" in raw.text and '"error"' in raw.text  # the in-band error (A6)
    assert_clean(raw.text, key)

    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="echo-400", messages=msgs)
    assert_clean(str(caught.value) + orjson.dumps(caught.value.body).decode(), key)


async def test_anthropic_surface(gw):
    key = await gw.new_key()
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0)
    msgs = [{"role": "user", "content": prompt_with_secrets(key)}]
    for model in ("echo-400", "echo-503"):
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model=model, max_tokens=50, messages=msgs)
        assert_clean(str(caught.value) + orjson.dumps(caught.value.body).decode(), key)
    raw = await gw.http.post("/v1/messages", json={"model": "echo-stream", "max_tokens": 50, "stream": True,
                                                   "messages": msgs}, headers={"x-api-key": key})
    assert "event: error" in raw.text
    assert_clean(raw.text, key)


async def test_seed_api_chat_and_ws(gw):
    key = await gw.new_key()
    msgs = [{"role": "user", "content": prompt_with_secrets(key)}]
    for model in ("echo-400", "echo-503"):
        raw = await gw.http.post("/api/chat", json={"model": model, "messages": msgs}, headers={"X-API-Key": key})
        assert raw.status_code >= 400
        assert_clean(raw.text, key)
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(gw.url + "/ws") as ws:
        await ws.send_json({"type": "authenticate", "apiKey": key})
        for model in ("echo-400", "echo-stream"):
            await ws.send_json({"type": "chat", "messages": msgs, "model": model})
            seen = []
            while True:
                m = await ws.receive_json(timeout=10)
                seen.append(m)
                if m.get("type") in ("error", "done"):
                    break
            assert seen[-1]["type"] == "error", seen
            assert_clean(orjson.dumps(seen).decode(), key)


async def test_grpc_status_and_details(gw):
    key = await gw.new_key()
    c = TollgateClient.connect(gw.rt.grpc_target, api_key=key)
    def inp(model: str) -> chat_pb2.ChatInput:
        return chat_pb2.ChatInput(model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER,
                                                                          text=prompt_with_secrets(key))])
    try:
        for model in ("echo-400", "echo-503"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await c.chat(inp(model), timeout=10)
            e = caught.value
            details = b"".join(v for k, v in (e.trailing_metadata() or ()) if k.endswith("-bin"))
            assert_clean(e.details() + details.decode("utf-8", "replace"), key)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in c.stream_chat(inp("echo-stream"), timeout=10):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert_clean(caught.value.details(), key)
    finally:
        await c.close()


async def test_passthrough_error_body(gw):
    key = await gw.new_key()
    msgs = [{"role": "user", "content": prompt_with_secrets(key)}]
    raw = await gw.http.post("/v1/openai/chat/completions", json={"model": "echo-400", "messages": msgs},
                             headers={"Authorization": "Bearer " + key})
    assert raw.status_code == 400
    assert_clean(raw.text, key)
    assert orjson.loads(raw.content)["error"]["type"] == "invalid_request_error"  # still the provider's JSON


async def test_stored_provider_keys_join_and_leave_the_scrubber(tmp_path):
    stored = "sk-h15-stored-provider-key-555"
    async with run_gateway(config(tmp_path)) as g:
        rec = await g.app.provider_secrets.add(user_id=None, provider_kind="openai", name="s", secret=stored)
        assert g.app.scrubber.scrub(f"key {stored}!") == f"key {REDACTED}!"
        assert ADMIN_KEY not in g.app.scrubber.scrub(ADMIN_KEY)
    async with run_gateway(config(tmp_path)) as g:  # a later start knows it from the store
        assert stored not in g.app.scrubber.scrub(stored)
        assert await g.app.provider_secrets.delete(rec.id, None)
        assert g.app.scrubber.scrub(stored) == stored  # removed keys are forgotten


def test_scrubber_unit():
    s = Scrubber({"a": "secret-aaaa-1111", "b": "secret-aaaa-1111-longer", "short": "abc"})
    assert s.scrub("x secret-aaaa-1111-longer y secret-aaaa-1111") == f"x {REDACTED} y {REDACTED}"
    assert s.scrub("abc") == "abc"  # too short to be a key
    assert s.scrub("tok tg_caller_token_1", extra=("tg_caller_token_1",)) == f"tok {REDACTED}"
    assert s.scrub_bytes(b"..secret-aaaa-1111..") == b".." + REDACTED.encode() + b".."
    s.drop("a")
    s.drop("b")
    assert s.scrub("secret-aaaa-1111") == "secret-aaaa-1111" and len(s) == 0
