"""RELIABILITY E1: limits answer early and in the surface's own shape.

A body declared over the limit is refused from its headers (413 in ≤ 100 ms, the body never
read); one sent chunked is refused once the limit is passed, while the client is still
sending; gRPC refuses a message over 16 MiB with RESOURCE_EXHAUSTED; 2,049 messages are 400 /
INVALID_ARGUMENT on every chat surface; a header line over aiohttp's 8 KiB limit is aiohttp's
own 400 and the gateway keeps serving; `max_tokens` over the model's maximum is clamped.
(test_bad_input.py already covers a 16 MiB Content-Length and 2,049 messages on the OpenAI surface.)
"""

from __future__ import annotations

import asyncio
import time

import grpc
import orjson
import pytest

from tests.support import error_shapes
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway
from tests.support.raw_http import exchange, host_port, read_answer, request_head
from tests.support.sse_read import CHAT, bearer, chat_body
from tollgate.client import TollgateClient, error_info
from tollgate.v1 import chat_pb2 as pb

LIMIT = 16 * 1024 * 1024  # RELIABILITY defaults: requests ≤ 16 MiB
DECLARED = 64 * 1024 * 1024
ONE_USER = {"role": "user", "content": "x"}


@pytest.fixture
async def gw(tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),))
    async with run_gateway(cfg) as g:
        yield g


@pytest.fixture
async def key(gw):
    return await gw.new_key(tier="unlimited")


# Every route that reads a body, with the shape its errors take and the credentials it wants.
BODY_ROUTES = [
    ("/v1/chat/completions", "openai", "user"),
    ("/v1/embeddings", "openai", "user"),
    ("/v1/messages", "anthropic", "user"),
    ("/v1/messages/count_tokens", "anthropic", "user"),
    ("/v1/openai/chat/completions", "openai", "user"),
    ("/api/chat", "api", "user"),
    ("/api/quick", "api", "user"),
    ("/api/v1/inference", "seed004", "user"),
    ("/api/v1/inference/stream", "seed004", "user"),
    ("/api/auth/register", "users", "none"),
    ("/api/admin/keys", "api", "admin"),
]


def _creds(kind: str, key: str) -> list[tuple[str, str]]:
    return {"user": [("Authorization", "Bearer " + key)], "admin": [("X-Admin-Key", ADMIN_KEY)], "none": []}[kind]


@pytest.mark.parametrize("path,shape,creds", BODY_ROUTES)
async def test_declared_body_over_the_limit_is_413_before_it_is_sent(gw, key, fake_openai, path, shape, creds):
    head = request_head("POST", path, [*_creds(creds, key), ("Content-Type", "application/json"),
                                       ("Content-Length", str(DECLARED))])
    took = 1.0
    for _ in range(2):  # the faster of two tries: a scheduling hiccup on a busy machine is not the gateway
        reader, writer = await asyncio.open_connection(*host_port(gw.url))
        try:
            t0 = time.monotonic()
            writer.write(head + b'{"model": "gpt-4o-mini", "messages": [' + b" " * 1024)
            await writer.drain()
            answer = await read_answer(reader, timeout_s=2.0)  # we send nothing more: the answer must not wait for it
            took = min(took, time.monotonic() - t0)
        finally:
            writer.close()
    assert answer.status == 413, answer
    assert took <= 0.1, took
    error_shapes.SHAPES[shape](answer.body, 413)
    assert b"x-request-id" in answer.head.lower()
    assert fake_openai.requests == []


@pytest.mark.parametrize("path,shape", [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"),
                                        ("/api/v1/inference", "seed004")])
async def test_chunked_body_over_the_limit_is_413_while_the_client_still_sends(gw, key, fake_openai, path, shape):
    head = request_head("POST", path, [("Authorization", "Bearer " + key), ("Content-Type", "application/json"),
                                       ("Transfer-Encoding", "chunked")])
    reader, writer = await asyncio.open_connection(*host_port(gw.url))
    piece = 1024 * 1024
    frame = b"%x\r\n" % piece + b"x" * piece + b"\r\n"
    sent = 0
    answer_task = asyncio.create_task(read_answer(reader, timeout_s=10.0))
    try:
        writer.write(head)
        while sent < DECLARED and not answer_task.done():
            writer.write(frame)
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                break  # the gateway answered and closed; what we sent so far is what it saw
            sent += piece
            await asyncio.sleep(0)
        answer = await answer_task
    finally:
        answer_task.cancel()
        writer.close()
    assert answer.status == 413, answer
    error_shapes.SHAPES[shape](answer.body, 413)
    # Socket buffers hold a few MiB; the point is that 64 MiB were never needed for the answer.
    assert sent <= LIMIT + 8 * 1024 * 1024, sent
    assert fake_openai.requests == []
    assert (await gw.http.get("/health")).status_code == 200


async def test_grpc_message_over_the_limit_is_resource_exhausted(gw, key, fake_openai):
    client = TollgateClient.connect(gw.rt.grpc_target, api_key=key)
    try:
        big = pb.ChatInput(model="tokens-2", messages=[pb.Message(role=pb.ROLE_USER, text="x" * (LIMIT + 1024))])
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.chat(big, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert fake_openai.requests == []
        # The server stays up and serves the next call on the same channel.
        resp = await client.chat(pb.ChatInput(model="tokens-2", messages=[pb.Message(role=pb.ROLE_USER, text="hi")]), timeout=10)
        assert resp.text == "tok0 tok1 "
    finally:
        await client.close()


async def test_2049_messages_is_invalid_argument_over_grpc(gw, key, fake_openai):
    client = TollgateClient.connect(gw.rt.grpc_target, api_key=key)
    msgs = [pb.Message(role=pb.ROLE_USER, text="x")] * 2049
    try:
        for call in ("chat", "stream"):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                if call == "chat":
                    await client.chat(pb.ChatInput(model="tokens-2", messages=msgs), timeout=10)
                else:
                    async for _ in client.stream_chat(pb.ChatInput(model="tokens-2", messages=msgs), timeout=10):
                        pass
            info = error_info(e.value)
            assert info.code == grpc.StatusCode.INVALID_ARGUMENT, (call, info)
            assert info.reason == "TOO_MANY_MESSAGES" and [f for f, _ in info.field_violations] == ["messages"]
            assert "2048" in info.message
        assert fake_openai.requests == []
        resp = await client.chat(pb.ChatInput(model="tokens-2", messages=msgs[:2048]), timeout=10)
        assert resp.text == "tok0 tok1 "
    finally:
        await client.close()


@pytest.mark.parametrize("path,shape,extra", [
    ("/v1/messages", "anthropic", {"max_tokens": 5}),
    ("/api/chat", "api", {}),
    ("/api/v1/inference", "seed004", {}),
    ("/api/v1/inference/stream", "seed004", {}),
])
async def test_2049_messages_is_400_on_every_chat_surface(gw, key, fake_openai, path, shape, extra):
    body = {"model": "tokens-2", "messages": [ONE_USER] * 2049, **extra}
    r = await gw.http.post(path, json=body, headers=bearer(key))
    assert r.status_code == 400, r.text
    err = error_shapes.SHAPES[shape](r.content, 400)
    assert "2048" in orjson.dumps(err).decode()
    assert fake_openai.requests == []
    body["messages"] = [ONE_USER] * 2048
    r = await gw.http.post(path, json=body, headers=bearer(key))
    assert r.status_code == 200, r.text


async def test_header_line_over_8_kib_is_refused_and_the_gateway_keeps_serving(gw, key):
    """aiohttp's limit is 8,190 bytes per header value (and per request line): 400 from aiohttp itself."""
    ok = request_head("GET", "/v1/models", [("Authorization", "Bearer " + key), ("X-Pad", "p" * 8000)])
    assert (await exchange(gw.url, ok)).status == 200
    for head in (
        request_head("GET", "/v1/models", [("Authorization", "Bearer " + key), ("X-Pad", "p" * 8192)]),
        request_head("GET", "/v1/models", [("Authorization", "Bearer " + key + "k" * 8192)]),
        request_head("POST", CHAT, [("X-API-Key", "k" * 9000), ("Content-Length", "2")]) + b"{}",
        request_head("GET", "/v1/models?" + "q" * 9000, [("Authorization", "Bearer " + key)]),
    ):
        t0 = time.monotonic()
        answer = await exchange(gw.url, head)
        assert answer.status in (400, 414, 431), answer
        assert time.monotonic() - t0 < 0.5
    r = await gw.http.post(CHAT, json=chat_body("tokens-2"), headers=bearer(key))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "tok0 tok1 "


async def test_max_tokens_over_the_models_maximum_is_clamped(gw, key, fake_openai):
    cap = 16_384  # services/catalog/models.json: gpt-4o-mini max_completion_tokens
    r = await gw.http.post(CHAT, json={**chat_body("gpt-4o-mini"), "max_tokens": 10**9}, headers=bearer(key))
    assert r.status_code == 200, r.text
    assert fake_openai.requests[-1].body["max_tokens"] <= cap
    r = await gw.http.post("/v1/messages", json={"model": "gpt-4o-mini", "max_tokens": 10**9, "messages": [ONE_USER]},
                           headers=bearer(key))
    assert r.status_code == 200, r.text
    assert fake_openai.requests[-1].body["max_tokens"] <= cap
    basic = await gw.new_key(tier="basic")  # 100k tokens a day: a clamped request fits, an unclamped one does not
    r = await gw.http.post(CHAT, json={**chat_body("gpt-4o-mini"), "max_tokens": 10**9}, headers=bearer(basic))
    assert r.status_code == 200, r.text
