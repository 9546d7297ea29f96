"""GET /ws: seed 000's authenticate/chat/token protocol and seed 004's inference_request/
inference_response/heartbeat/error/close protocol on one socket, its bounds (RELIABILITY E8:
1009, 1008, binary and junk -> error), and cancellation when the client leaves (B2, D2)."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import aiohttp
import orjson
import pytest

from gateway_http.app import make_app
from gateway_http.seeds.ws import WS_LIMITS, WsLimits
from gateway_http.settings import BridgeSettings
from tests.support.gateway import config, provider, run_gateway
from tests.support.local_server import serve_app
from tollgate.client import TollgateClient

HI = [{"role": "user", "content": "Hello!"}]


def limits(gw) -> WsLimits:
    return gw.rt.bridge[WS_LIMITS]


async def recv(ws, timeout: float = 3.0) -> dict:
    """The next JSON message, skipping heartbeats."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        obj = orjson.loads(msg.data)
        if obj["type"] != "heartbeat":
            return obj


async def until(ws, pred, timeout: float = 3.0) -> list[dict]:
    out = []
    while True:
        out.append(await recv(ws, timeout))
        if pred(out[-1]):
            return out


def final(m: dict) -> bool:
    return m["type"] in ("done", "error") or (m["type"] == "inference_response" and "finish_reason" in m["data"])


async def rows_when(gw, want: int, timeout: float = 2.0) -> list:
    end = time.monotonic() + timeout
    rows = await gw.ledger()
    while len(rows) < want and time.monotonic() < end:
        await asyncio.sleep(0.05)
        rows = await gw.ledger()
    return rows


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_seed000_authenticate_then_chat_streams_tokens(gateway, session, fake_openai):
    key = await gateway.new_key()
    async with session.ws_connect(gateway.url + "/ws") as ws:
        await ws.send_json({"type": "authenticate", "apiKey": key})
        # Sent back to back, as the seed's example does.
        await ws.send_json({"type": "chat", "messages": HI, "model": "tokens-5", "maxTokens": 100, "temperature": 0.5})
        assert await recv(ws) == {"type": "authenticated", "success": True}
        msgs = await until(ws, final)
        tokens, done = msgs[:-1], msgs[-1]
        assert all(m["type"] == "token" and set(m) == {"type", "content"} for m in tokens)
        assert "".join(m["content"] for m in tokens) == "tok0 tok1 tok2 tok3 tok4 "
        assert done == {"type": "done", "model": "tokens-5", "provider": "primary", "finishReason": "stop",
                        "usage": {"promptTokens": 7, "completionTokens": 5, "totalTokens": 12}}
    sent = fake_openai.requests[-1].body
    assert (sent["max_tokens"], sent["temperature"]) == (100, 0.5)
    rows = await rows_when(gateway, 1)
    assert [(r.surface, r.status) for r in rows] == [("ws", "ok")]


async def test_seed004_inference_request_and_responses(gateway, session):
    key = await gateway.new_key()
    async with session.ws_connect(gateway.url + "/ws", headers={"X-API-Key": key}) as ws:
        await ws.send_json({"type": "inference_request", "id": "req-123", "data": {
            "model": "tokens-3", "messages": HI, "temperature": 0.7, "max_tokens": 100}})
        msgs = await until(ws, final)
        assert all(m["type"] == "inference_response" and m["id"] == "req-123" for m in msgs)
        assert "".join(m["data"].get("content", "") for m in msgs) == "tok0 tok1 tok2 "
        last = msgs[-1]["data"]
        assert (last["finish_reason"], last["model"]) == ("stop", "tokens-3")
        assert last["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        assert abs(last["created"] - time.time()) < 60


async def test_both_protocols_and_parallel_ids_on_one_socket(gateway, session):
    key = await gateway.new_key()
    async with session.ws_connect(gateway.url + "/ws") as ws:
        await ws.send_json({"type": "inference_request", "id": "a", "apiKey": key,
                            "data": {"model": "tokens-2", "messages": HI}})
        await ws.send_json({"type": "inference_request", "id": "b", "data": {"model": "tokens-4", "messages": HI}})
        await ws.send_json({"type": "chat", "messages": HI, "model": "tokens-1"})
        seen: dict = {}
        while len(seen) < 3:
            m = await recv(ws)
            if final(m):
                seen[m.get("id")] = m
        assert seen["a"]["data"]["usage"]["completion_tokens"] == 2
        assert seen["b"]["data"]["usage"]["completion_tokens"] == 4
        assert seen[None]["type"] == "done" and seen[None]["usage"]["completionTokens"] == 1


async def test_key_in_the_data_of_a_request(gateway, session):
    key = await gateway.new_key()
    async with session.ws_connect(gateway.url + "/ws") as ws:
        await ws.send_json({"type": "inference_request", "id": "x", "data": {"model": "tokens-1", "messages": HI, "apiKey": key}})
        assert (await until(ws, final))[-1]["data"]["finish_reason"] == "stop"


async def test_chat_without_key_is_an_error_and_socket_stays(gateway, session):
    key = await gateway.new_key()
    async with session.ws_connect(gateway.url + "/ws") as ws:
        await ws.send_json({"type": "chat", "messages": HI, "model": "tokens-1"})
        err = await recv(ws)
        assert err == {"type": "error", "id": None, "error": {
            "code": 401, "message": "Provide API key via Authorization: Bearer <key> or X-API-Key header",
            "type": "authentication", "details": {"reason": "API_KEY_REQUIRED"}}}
        await ws.send_json({"type": "authenticate", "apiKey": "tg_wrong-key"})
        err = await recv(ws)
        assert err["type"] == "error" and err["error"]["code"] == 401 and err["error"]["type"] == "authentication"
        await ws.send_json({"type": "authenticate", "apiKey": key})
        assert (await recv(ws))["type"] == "authenticated"
        await ws.send_json({"type": "chat", "messages": HI, "model": "tokens-1"})
        assert (await until(ws, final))[-1]["type"] == "done"


async def test_bad_key_on_upgrade_is_refused_with_401(gateway, session):
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        async with session.ws_connect(gateway.url + "/ws", headers={"Authorization": "Bearer tg_wrong"}):
            pass
    assert e.value.status == 401


async def test_seed004_errors(gateway, session):
    key = await gateway.new_key()
    async with session.ws_connect(gateway.url + "/ws", headers={"Authorization": "Bearer " + key}) as ws:
        await ws.send_json({"type": "inference_request", "id": "r1", "data": {"model": "tokens-1"}})
        err = await recv(ws)
        assert err["id"] == "r1" and err["error"]["code"] == 400 and err["error"]["type"] == "validation"
        assert err["error"]["details"]["field"] == "messages"
        await ws.send_json({"type": "inference_request", "id": "r2", "data": {"model": "fault-404", "messages": HI}})
        err = await recv(ws)
        assert (err["type"], err["id"], err["error"]["code"], err["error"]["type"]) == ("error", "r2", 404, "not_found")
        await ws.send_json({"type": "inference_request", "id": "r3", "data": "not an object"})
        assert (await recv(ws))["error"]["type"] == "validation"
        await ws.send_json({"type": "teleport", "id": "r4"})
        err = await recv(ws)
        assert err["id"] == "r4" and err["error"]["code"] == 400
        # Upstream cut mid-answer: an error after the content, never a finish.
        await ws.send_json({"type": "inference_request", "id": "r5", "data": {"model": "fault-cut-after-2", "messages": HI}})
        msgs = await until(ws, final)
        assert msgs[-1]["type"] == "error" and msgs[-1]["error"]["type"] == "upstream"
        assert all("finish_reason" not in m.get("data", {}) for m in msgs[:-1])


async def test_binary_and_malformed_frames_get_errors_and_socket_stays(gateway, session):
    key = await gateway.new_key()
    async with session.ws_connect(gateway.url + "/ws", headers={"X-API-Key": key}) as ws:
        await ws.send_bytes(b"\x00\x01binary")
        err = await recv(ws)
        assert err["type"] == "error" and err["error"]["type"] == "validation" and "Binary" in err["error"]["message"]
        for junk in ("{not json", "[1,2]", '"a string"', '{"type": "chat", "id": {"x": 1}}'):
            await ws.send_str(junk)
            assert (await recv(ws))["error"]["code"] == 400
        await ws.send_str('{"type":"chat","messages":[{"role":"user","content":"\\ud800"}],"model":"tokens-1"}')
        m = await recv(ws)
        assert m["type"] in ("token", "error")
        await ws.send_json({"type": "ping"})
        while (m := await recv(ws))["type"] != "pong":
            pass
        assert not ws.closed


async def test_frame_over_1mib_closes_1009(gateway, session):
    key = await gateway.new_key()
    assert WsLimits().max_frame_bytes == 1024 * 1024
    async with session.ws_connect(gateway.url + "/ws", headers={"X-API-Key": key}, max_msg_size=0) as ws:
        await ws.send_str('{"type":"chat","messages":[{"role":"user","content":"' + "x" * (1024 * 1024) + '"}]}')
        msg = await asyncio.wait_for(ws.receive(), 3)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG == 1009


async def test_no_auth_in_time_closes_1008(gateway, session):
    assert WsLimits().auth_timeout_s == 5.0  # the contract's number; shortened below to keep the suite fast
    limits(gateway).auth_timeout_s = 0.4
    t0 = time.monotonic()
    async with session.ws_connect(gateway.url + "/ws") as ws:
        await ws.send_json({"type": "authenticate", "apiKey": "tg_wrong-key"})  # a refused key does not count
        assert (await recv(ws))["type"] == "error"
        close = await recv(ws)
        assert close == {"type": "close", "reason": "Authentication required: no API key accepted in time", "code": 1008}
        msg = await asyncio.wait_for(ws.receive(), 3)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION == 1008
    assert 0.35 < time.monotonic() - t0 < 2.0


async def test_authenticated_socket_outlives_the_auth_timeout(gateway, session):
    limits(gateway).auth_timeout_s = 0.3
    key = await gateway.new_key()
    async with session.ws_connect(gateway.url + "/ws") as ws:
        await ws.send_json({"type": "authenticate", "apiKey": key})
        assert (await recv(ws))["type"] == "authenticated"
        await asyncio.sleep(0.6)
        await ws.send_json({"type": "chat", "messages": HI, "model": "tokens-1"})
        assert (await until(ws, final))[-1]["type"] == "done"


async def test_auth_disabled_needs_no_key(tmp_path, fake_openai, session):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), enable_auth=False)
    async with run_gateway(cfg) as g:
        g.rt.bridge[WS_LIMITS].auth_timeout_s = 0.2
        async with session.ws_connect(g.url + "/ws") as ws:
            await asyncio.sleep(0.4)
            await ws.send_json({"type": "chat", "messages": HI, "model": "tokens-1"})
            assert (await until(ws, final))[-1]["type"] == "done"


async def test_heartbeat(gateway, session):
    assert WsLimits().heartbeat_s == 30.0
    limits(gateway).heartbeat_s = 0.1
    async with session.ws_connect(gateway.url + "/ws", headers={"X-API-Key": await gateway.new_key()}) as ws:
        beats = []
        while len(beats) < 2:
            msg = orjson.loads((await asyncio.wait_for(ws.receive(), 2)).data)
            assert msg["type"] == "heartbeat"
            beats.append(msg)
        assert all(isinstance(b["timestamp"], int) and abs(b["timestamp"] / 1000 - time.time()) < 60 for b in beats)


async def test_client_close_message(gateway, session):
    async with session.ws_connect(gateway.url + "/ws", headers={"X-API-Key": await gateway.new_key()}) as ws:
        await ws.send_json({"type": "close"})
        assert await recv(ws) == {"type": "close", "reason": "Client requested close", "code": 1000}
        msg = await asyncio.wait_for(ws.receive(), 3)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1000


async def test_flood_is_capped_per_socket_and_duplicate_ids_refused(gateway, session, fake_openai):
    key = await gateway.new_key()
    cap = limits(gateway).max_inflight
    async with session.ws_connect(gateway.url + "/ws", headers={"X-API-Key": key}) as ws:
        await ws.send_json({"type": "inference_request", "id": "dup", "data": {"model": "fault-stall-after-1", "messages": HI}})
        await ws.send_json({"type": "inference_request", "id": "dup", "data": {"model": "tokens-1", "messages": HI}})
        for i in range(20):
            await ws.send_json({"type": "inference_request", "id": f"f{i}", "data": {"model": "fault-stall-after-1", "messages": HI}})
        errors = []
        while len(errors) < 1 + 20 - (cap - 1):
            m = await recv(ws)
            if m["type"] == "error":
                errors.append(m)
        assert errors[0]["id"] == "dup" and errors[0]["error"]["code"] == 409
        assert all(e["error"]["code"] == 429 and e["error"]["type"] == "rate_limit" for e in errors[1:])
        await asyncio.sleep(0.2)
    # The socket went away with `cap` answers in flight: each upstream call is cancelled and metered once.
    rows = await rows_when(gateway, cap)
    assert sorted(r.status for r in rows) == ["client_cancelled"] * cap
    assert gateway.app.pipeline.active == 0


async def test_client_leaving_mid_answer_cancels_upstream_and_meters_once(gateway, session, fake_openai):
    key = await gateway.new_key()
    ws = await session.ws_connect(gateway.url + "/ws")
    await ws.send_json({"type": "authenticate", "apiKey": key})
    await ws.send_json({"type": "chat", "messages": HI, "model": "fault-stall-after-3"})
    text = ""
    while "tok2" not in text:
        m = await recv(ws)
        text += m.get("content", "")
    t0 = time.monotonic()
    await ws.close()
    await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
    assert time.monotonic() - t0 < 1.0
    assert fake_openai.disconnects == 1
    rows = await rows_when(gateway, 1)
    await asyncio.sleep(0.2)
    rows = await gateway.ledger()
    assert len(rows) == 1
    row = rows[0]
    assert (row.status, row.surface, row.provider) == ("client_cancelled", "ws", "primary")
    assert row.completion_tokens > 0 and row.estimated
    assert gateway.app.pipeline.active == 0


@asynccontextmanager
async def remote_bridge(grpc_target: str):
    """The bridge alone over a real gRPC channel (python -m gateway_http's deployment)."""
    client = TollgateClient.connect(grpc_target)
    try:
        async with serve_app(make_app(BridgeSettings(grpc_target=grpc_target), client), handler_cancellation=True) as url:
            yield url
    finally:
        await client.close()


async def test_over_a_real_grpc_channel_leaving_cancels_upstream(gateway, session, fake_openai):
    key = await gateway.new_key()
    async with remote_bridge(gateway.rt.grpc_target) as url:
        async with session.ws_connect(url + "/ws", headers={"X-API-Key": key}) as ws:
            await ws.send_json({"type": "inference_request", "id": "ok", "data": {"model": "tokens-2", "messages": HI}})
            assert (await until(ws, final))[-1]["data"]["usage"]["completion_tokens"] == 2
            await ws.send_json({"type": "inference_request", "id": "cut", "data": {"model": "fault-stall-after-3", "messages": HI}})
            text = ""
            while "tok2" not in text:
                text += (await recv(ws))["data"].get("content", "")
        await asyncio.wait_for(fake_openai.disconnected.wait(), 1.0)
        rows = await rows_when(gateway, 2)
        assert sorted((r.status, r.surface) for r in rows) == [("client_cancelled", "ws"), ("ok", "ws")]


async def test_a_frame_with_too_many_keys_is_refused_unparsed(gateway, session):
    """RELIABILITY E2 on /ws: a frame under 1 MiB can still hold 60k keys (a parse of tens of ms on
    the loop); it gets an `error` naming the bound, and the socket keeps serving."""
    key = await gateway.new_key()
    async with session.ws_connect(gateway.url + "/ws", headers={"X-API-Key": key}) as ws:
        frame = '{"type": "ping", ' + ", ".join(f'"k{i}": 0' for i in range(60_000)) + "}"
        assert len(frame) < WsLimits().max_frame_bytes
        await ws.send_str(frame)
        err = await recv(ws)
        assert err["type"] == "error" and err["error"]["code"] == 400 and "too many keys" in err["error"]["message"]
        await ws.send_json({"type": "ping"})
        while (m := await recv(ws))["type"] != "pong":
            pass
        assert not ws.closed
