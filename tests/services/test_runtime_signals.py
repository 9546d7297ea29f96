"""`python -m services` as an operator runs it: start-up, SIGTERM drain (RELIABILITY B6), a bad
config's one-line error, and the admin key printed on first start only."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.app import build_app
from services.config.schema import Config
from services.store.records import UsageFilter
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway
from tests.support.procs import base_env, free_port, run_module, wait_http_ok
from tests.support.sse_read import CHAT, bearer, chat_body, error_events, read_events, stream_text
from tollgate.client import TollgateClient, error_info
from tollgate.v1 import chat_pb2

ADMIN = "adm-signals-0123456789abcdef"


def server_env(tmp_path, fake_url: str | None = None, admin: str | None = ADMIN, **extra: str) -> tuple[dict, str, str]:
    http_addr, grpc_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = base_env(tmp_path, TOLLGATE_HTTP_ADDR=http_addr, TOLLGATE_GRPC_ADDR=grpc_addr,
                   TOLLGATE_DATA_DIR=str(tmp_path / "data"), **extra)
    if admin:
        env["TOLLGATE_ADMIN_KEY"] = admin
    if fake_url:
        env["ROUTER_SERVICES"] = json.dumps([{"name": "fake", "backend_type": "openai_compatible",
                                              "base_url": fake_url, "api_key": "sk-x"}])
    return env, "http://" + http_addr, grpc_addr


async def ledger_of(data_dir: str) -> list:
    """Reads the ledger the stopped process left in its SQLite file."""
    app = build_app(Config(data_dir=data_dir, grpc_addr="127.0.0.1:0", http_addr="127.0.0.1:0"))
    await app.store.start()
    try:
        return await app.store.list_usage(UsageFilter(), limit=100)
    finally:
        await app.store.close()


async def test_sigterm_drains_in_flight_stream_and_exits_0(tmp_path):
    async with run_fake_openai() as fake:
        env, url, grpc_addr = server_env(tmp_path, fake.base_url)
        async with run_module("services", env=env, cwd=tmp_path, name="server") as proc, \
                httpx.AsyncClient(base_url=url, timeout=15) as http:
            await wait_http_ok(url + "/health", proc)
            r = await http.post("/api/admin/keys", headers={"X-Admin-Key": ADMIN},
                                json={"name": "t", "email": "t@example.com", "tier": "enterprise"})
            assert r.status_code == 201, r.text
            auth = bearer(r.json()["key"])

            async def slow_stream():
                async with http.stream("POST", CHAT, json=chat_body("fault-slow-first-2", stream=True), headers=auth) as resp:
                    return resp.status_code, resp.headers.get("X-Request-Id", ""), await read_events(resp)

            stream = asyncio.ensure_future(slow_stream())
            end = time.monotonic() + 5
            while not fake.requests and time.monotonic() < end:
                await asyncio.sleep(0.02)
            assert fake.requests, "the stream never reached the upstream"

            t_sig = time.monotonic()
            proc.signal(signal.SIGTERM)
            # Draining: new work is refused at once with Retry-After, health says so.
            await asyncio.sleep(0.1)
            r = await http.post(CHAT, json=chat_body("tokens-2"), headers=auth)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"].isdigit()
            assert r.json()["error"]["message"]
            r = await http.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "draining"
            async with grpc.aio.insecure_channel(grpc_addr) as ch:
                h = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                assert h.status == health_pb2.HealthCheckResponse.NOT_SERVING

            status, request_id, events = await asyncio.wait_for(stream, 10)
            assert status == 200
            assert events[-1] == "[DONE]"
            assert stream_text(events) == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
            code = await proc.wait(8)
            assert code == 0, proc.stderr()[-2000:]
            assert time.monotonic() - t_sig < 8
        assert len(fake.requests) == 1  # the refused request never went upstream
    rows = await ledger_of(str(tmp_path / "data"))
    assert [(r.request_id, r.status, r.completion_tokens) for r in rows] == [(request_id, "ok", 8)]


async def test_bad_config_exits_non_zero_with_one_line(tmp_path):
    bad = tmp_path / "tollgate.toml"
    bad.write_text('[[providers]]\nname = "x"\nkind = "nope"\nbase_url = "http://127.0.0.1:9/v1"\n')
    env, _, _ = server_env(tmp_path, TOLLGATE_CONFIG=str(bad))
    async with run_module("services", env=env, cwd=tmp_path, name="bad") as proc:
        code = await proc.wait(20)
    assert code != 0
    lines = [line for line in proc.stderr().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr()
    line = lines[0]
    assert str(bad) in line and "providers[0].kind" in line and "nope" in line, line
    assert "Traceback" not in proc.stderr()


async def test_bad_env_value_exits_with_one_line_naming_the_variable(tmp_path):
    env, _, _ = server_env(tmp_path)
    env["TOLLGATE_GRPC_ADDR"] = "not-an-address"
    async with run_module("services", env=env, cwd=tmp_path, name="badenv") as proc:
        code = await proc.wait(20)
    assert code != 0
    lines = [line for line in proc.stderr().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr()  # issue 19: named as the user wrote it, the variable
    assert "TOLLGATE_GRPC_ADDR" in lines[0], lines[0]


async def test_admin_key_printed_on_first_start_only(tmp_path):
    outputs, keys = [], []
    for n in range(2):
        env, url, _ = server_env(tmp_path, admin=None)
        async with run_module("services", env=env, cwd=tmp_path, name=f"start{n}") as proc:
            await wait_http_ok(url + "/health", proc)
            if n == 0:
                m = re.search(r"admin key[^\n]*:\s*(\S+)\s*$", proc.stdout(), re.M)
                assert m, proc.stdout()
                keys.append(m.group(1))
            # The key printed on the first start works on both starts.
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                r = await http.post("/api/admin/keys", headers={"X-Admin-Key": keys[0]},
                                    json={"name": f"k{n}", "email": "k@example.com", "tier": "pro"})
                assert r.status_code == 201, r.text
            # SIGTERM the first time, SIGINT (Ctrl-C) the second: an idle server stops at once.
            t0 = time.monotonic()
            proc.signal(signal.SIGTERM if n == 0 else signal.SIGINT)
            assert await proc.wait(10) == 0, proc.stderr()[-2000:]
            assert time.monotonic() - t0 < 3
            outputs.append(proc.stdout())
    assert keys[0] in outputs[0]
    assert keys[0] not in outputs[1]
    assert not re.search(r"tga_\S+", outputs[1]), outputs[1]
    # Both starts say how to create an API key; the demo provider is labelled as such.
    for out in outputs:
        assert "/api/admin/keys" in out
        assert "demo" in out and "not a real LLM" in out


# --------------------------------------------------------------------------- the drain itself, in process
# Runtime.shutdown() is exactly what the SIGTERM handler awaits; driving it here shows the drain's
# edges (Watch updates, the grace limit) without a process start per case.

def _chat_input(model: str) -> chat_pb2.ChatInput:
    return chat_pb2.ChatInput(model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")])


async def test_drain_over_grpc_health_new_calls_and_the_grace_limit(tmp_path):
    async with run_fake_openai() as fake:
        cfg = config(tmp_path, providers=(provider("primary", fake.base_url),))
        async with run_gateway(cfg) as gw:
            client = TollgateClient.connect(gw.rt.grpc_target, api_key=await gw.new_key())
            ch = grpc.aio.insecure_channel(gw.rt.grpc_target)
            try:
                watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="tollgate.v1.InferenceService"))
                assert (await asyncio.wait_for(watch.read(), 1)).status == health_pb2.HealthCheckResponse.SERVING
                got: list = []

                async def stalled():
                    try:
                        async for m in client.stream_chat(_chat_input("fault-stall-after-3"), timeout=30):
                            got.append(m.WhichOneof("event"))
                    except grpc.aio.AioRpcError as e:
                        got.append(e.code())

                task = asyncio.ensure_future(stalled())
                end = time.monotonic() + 3
                while got.count("delta") < 1 and time.monotonic() < end:
                    await asyncio.sleep(0.02)
                t0 = time.monotonic()
                drain = asyncio.ensure_future(gw.rt.shutdown(grace_s=1.0))
                # B5/B6: Watch reports the change at once; Check agrees; new calls are refused with RetryInfo.
                changed = await asyncio.wait_for(watch.read(), 1)
                assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
                assert time.monotonic() - t0 < 0.1
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await client.chat(_chat_input("tokens-2"), timeout=2)
                info = error_info(e.value)
                assert (info.code, info.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")
                assert info.retry_after_s is not None and info.retry_after_s > 0
                # The stalled stream outlives the grace: it is ended with UNAVAILABLE, not left hanging.
                assert await asyncio.wait_for(drain, 5) == 1
                await asyncio.wait_for(task, 2)
                assert got[-1] == grpc.StatusCode.UNAVAILABLE
                assert "end" not in got
                await asyncio.wait_for(fake.disconnected.wait(), 1)
            finally:
                await client.close()
                await ch.close()
    rows = await ledger_of(cfg.data_dir)
    assert [(r.status, r.surface) for r in rows] == [("shutdown", "grpc")]


async def test_grace_limit_cuts_an_http_stream_and_meters_it_as_shutdown(tmp_path):
    async with run_fake_openai() as fake:
        cfg = config(tmp_path, providers=(provider("primary", fake.base_url),))
        async with run_gateway(cfg) as gw:
            auth = bearer(await gw.new_key())
            events: list[str] = []

            async def stalled():
                try:
                    async with gw.http.stream("POST", CHAT, json=chat_body("fault-stall-after-3", stream=True), headers=auth) as r:
                        events.extend(await read_events(r))
                except httpx.TransportError:
                    events.append("<connection cut>")

            task = asyncio.ensure_future(stalled())
            end = time.monotonic() + 3
            while fake.tokens_sent < 3 and time.monotonic() < end:
                await asyncio.sleep(0.02)
            t0 = time.monotonic()
            assert await gw.rt.shutdown(grace_s=0.5) == 1
            assert time.monotonic() - t0 < 2.5
            await asyncio.wait_for(task, 2)
    assert "[DONE]" not in events
    rows = await ledger_of(cfg.data_dir)
    assert [(r.status, r.estimated) for r in rows] == [("shutdown", True)]
    assert rows[0].completion_tokens >= 3


async def test_grace_limit_ends_an_http_stream_with_an_in_band_error(tmp_path):
    async with run_fake_openai() as fake:
        cfg = config(tmp_path, providers=(provider("primary", fake.base_url),))
        async with run_gateway(cfg) as gw:
            auth = bearer(await gw.new_key())

            async def stalled():
                async with gw.http.stream("POST", CHAT, json=chat_body("fault-stall-after-3", stream=True), headers=auth) as r:
                    return await read_events(r)

            task = asyncio.ensure_future(stalled())
            end = time.monotonic() + 3
            while fake.tokens_sent < 3 and time.monotonic() < end:
                await asyncio.sleep(0.02)
            await gw.rt.shutdown(grace_s=0.5)
            events = await asyncio.wait_for(task, 2)
    assert stream_text(events) == "tok0 tok1 tok2 "
    assert "[DONE]" not in events
    errors = error_events(events)
    assert len(errors) == 1 and errors[0]["type"] == "api_error"
