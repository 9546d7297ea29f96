"""Traces (issue 15 point 7): the spans of one request, their GenAI attributes, W3C context from
the caller to the provider, content capture off by default, and nothing at all when tracing is off.

A whole gateway on 127.0.0.1 with the SDK's InMemorySpanExporter handed to its App; requests
through real HTTP with the openai-shaped fakes upstream.
"""

from __future__ import annotations

import dataclasses
import random
from contextlib import asynccontextmanager

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.app import build_app
from services.runtime import Runtime
from tests.reliability.scripted import err, ok, run_scripted
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import ADMIN_KEY, config, provider
from tollgate.tracing import make_tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
PROMPT = "the secret plan is xyzzy-42"


@asynccontextmanager
async def traced_gateway(cfg, exporter):
    tracing = make_tracing("", exporter=exporter, capture_content=cfg.trace_content) if exporter is not None else None
    rt = Runtime(cfg, app=build_app(cfg, rng=random.Random(7), tracing=tracing))
    rt.app.router.retry_jitter_s = (0.0, 0.0)
    await rt.start()
    async with httpx.AsyncClient(base_url=rt.http_url, timeout=30) as http:
        r = await http.post("/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY},
                            json={"name": "t", "email": "t@example.com", "tier": "unlimited"})
        key = r.json()["key"]
        try:
            yield rt, http, {"Authorization": "Bearer " + key}
        finally:
            await rt.shutdown(grace_s=1.0)


def by_name(spans):
    out = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def all_attribute_text(spans) -> str:
    return "\n".join(f"{k}={v}" for s in spans for k, v in (s.attributes or {}).items()) + \
        "\n".join(f"{k}={v}" for s in spans for e in s.events for k, v in (e.attributes or {}).items())


async def test_a_streamed_chat_with_failover_is_one_trace_from_the_caller_to_the_provider(tmp_path):
    mem = InMemorySpanExporter()
    async with run_scripted() as up:
        up.by_key = {"sk-primary": err(503), "sk-fallback": ok(5)}
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", up.base_url, keys=("sk-primary",), priority=0),
            provider("fallback", up.base_url, keys=("sk-fallback",), priority=1)))
        async with traced_gateway(cfg, mem) as (rt, http, auth):
            mem.clear()  # the key's creation
            r = await http.post("/v1/chat/completions", headers={**auth, "traceparent": CALLER}, json={
                "model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": PROMPT}]})
            assert r.status_code == 200 and "[DONE]" in r.text
            await rt.app.ledger.flush()
    spans = mem.get_finished_spans()
    names = by_name(spans)
    bridge = names["POST /v1/chat/completions"][0]
    request = names["chat gpt-4o-mini"]
    pipeline = next(s for s in request if s.kind == SpanKind.SERVER)
    attempts = sorted((s for s in request if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time)
    assert {s.context.trace_id for s in spans} == {int(TRACE_ID, 16)}, "one trace, the caller's"
    assert bridge.parent.span_id == int(CALLER_SPAN, 16) and bridge.kind == SpanKind.SERVER
    assert bridge.attributes["http.response.status_code"] == 200 and bridge.attributes["http.route"] == "/v1/chat/completions"
    assert pipeline.parent.span_id == bridge.context.span_id
    a = pipeline.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini" and a["gen_ai.provider.name"] == "openai" == a["gen_ai.system"]
    assert a["gen_ai.usage.input_tokens"] == 7 and a["gen_ai.usage.output_tokens"] == 5
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert a["tollgate.provider"] == "fallback" and a["tollgate.status"] == "ok" and a["tollgate.attempts"] == len(attempts)
    # each upstream attempt, with the route decision, under the request's span
    assert len(attempts) >= 2 and all(s.parent.span_id == pipeline.context.span_id for s in attempts)
    assert attempts[0].attributes["tollgate.route.provider"] == "primary"
    assert attempts[0].attributes["tollgate.route.outcome"] == "server"
    assert attempts[0].attributes["http.response.status_code"] == 503
    assert attempts[-1].attributes["tollgate.route.provider"] == "fallback"
    assert attempts[-1].attributes["tollgate.route.outcome"] == "ok"
    assert attempts[-1].attributes["tollgate.route.strategy"] == "priority"
    assert [s.attributes["tollgate.route.try"] for s in attempts] == list(range(1, len(attempts) + 1))
    for n in ("tollgate.quota.admit", "tollgate.ledger.record"):
        assert names[n][0].parent.span_id == pipeline.context.span_id, n
    # no prompt, completion or key in any attribute unless content capture is on
    text = all_attribute_text(spans)
    assert "xyzzy" not in text and "tok0" not in text and "sk-primary" not in text and "sk-fallback" not in text


async def test_each_websocket_message_is_its_own_span_under_the_connection(tmp_path):
    """/ws: the socket's `GET /ws` span lasts the connection; every message under it gets a span of its
    own with the bridge's attributes, and each answer's core spans hang under its message."""
    import aiohttp
    import orjson

    mem = InMemorySpanExporter()
    async with run_fake_openai() as fake:
        cfg = config(tmp_path, providers=(provider("primary", fake.base_url),))
        async with traced_gateway(cfg, mem) as (rt, http, auth):
            mem.clear()
            key = auth["Authorization"].removeprefix("Bearer ")
            async with aiohttp.ClientSession() as s, s.ws_connect(rt.http_url + "/ws", headers={"traceparent": CALLER}) as ws:
                await ws.send_json({"type": "authenticate", "apiKey": key})
                await ws.send_str("{not json")
                for rid in ("a", "b"):
                    await ws.send_json({"type": "inference_request", "id": rid, "data": {
                        "model": "tokens-3", "messages": [{"role": "user", "content": "hi"}]}})
                await ws.send_json({"type": "inference_request", "id": "c", "data": {
                    "model": "fault-503", "messages": [{"role": "user", "content": "hi"}]}})
                ends: dict[str, dict] = {}
                while len(ends) < 3:
                    m = orjson.loads((await ws.receive(timeout=10)).data)
                    if m["type"] == "error" and m["id"] in ("a", "b", "c") or "finish_reason" in (m.get("data") or {}):
                        ends[m["id"]] = m
            assert "finish_reason" in ends["a"]["data"] and "finish_reason" in ends["b"]["data"]
            assert ends["c"]["type"] == "error" and ends["c"]["error"]["code"] >= 500
            await rt.app.ledger.flush()
    spans = mem.get_finished_spans()
    names = by_name(spans)
    conn = names["GET /ws"][0]
    assert conn.parent.span_id == int(CALLER_SPAN, 16)
    msgs = [s for s in spans if s.name.startswith("WS /ws")]
    assert sorted(s.name for s in msgs) == ["WS /ws", "WS /ws authenticate"] + ["WS /ws inference_request"] * 3
    assert {s.context.trace_id for s in spans} == {int(TRACE_ID, 16)}
    for m in msgs:
        assert m.parent.span_id == conn.context.span_id and m.kind == SpanKind.SERVER, m.name
        assert m.attributes["http.route"] == "/ws" and m.attributes["url.scheme"] == "http"
        assert m.attributes["server.port"] == int(rt.http_url.rsplit(":", 1)[1])
    by_status = sorted((m.name, m.attributes["http.response.status_code"]) for m in msgs)
    assert by_status[:2] == [("WS /ws", 400), ("WS /ws authenticate", 200)]
    answers = [m for m in msgs if m.name == "WS /ws inference_request"]
    assert sorted(m.attributes["http.response.status_code"] for m in answers)[:2] == [200, 200]
    failed = max(answers, key=lambda m: m.attributes["http.response.status_code"])
    assert failed.attributes["http.response.status_code"] >= 500 and failed.attributes["error.type"]
    assert failed.status.status_code.name == "ERROR"
    # each answer's pipeline span is a child of its own message span, never of the connection's
    pipelines = [s for s in spans if s.kind == SpanKind.SERVER and s.name in ("chat tokens-3", "chat fault-503")]
    assert sorted(p.parent.span_id for p in pipelines) == sorted(m.context.span_id for m in answers)


async def test_the_provider_request_carries_the_attempt_span_as_its_parent(tmp_path):
    mem = InMemorySpanExporter()
    async with run_fake_openai() as fake:
        cfg = config(tmp_path, providers=(provider("primary", fake.base_url),))
        async with traced_gateway(cfg, mem) as (rt, http, auth):
            r = await http.post("/v1/chat/completions", headers={**auth, "traceparent": CALLER},
                                json={"model": "tokens-3", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            await rt.app.ledger.flush()
        sent = fake.requests[-1].headers.get("traceparent", "")
    attempt = next(s for s in mem.get_finished_spans() if s.kind == SpanKind.CLIENT)
    assert sent == f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"


async def test_a_pass_through_request_carries_its_attempt_span_to_the_provider(tmp_path):
    """The native pass-through relays the caller's headers, but the provider sees the gateway's own
    attempt span as its parent, in the caller's trace (not the caller's span id, passed on blind)."""
    mem = InMemorySpanExporter()
    async with run_fake_openai() as fake:
        cfg = config(tmp_path, providers=(provider("primary", fake.base_url),))
        async with traced_gateway(cfg, mem) as (rt, http, auth):
            r = await http.post("/v1/openai/chat/completions", headers={**auth, "traceparent": CALLER},
                                json={"model": "tokens-3", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            await rt.app.ledger.flush()
        sent = [v for k, v in fake.requests[-1].headers.items() if k.lower() == "traceparent"]
    attempts = [s for s in mem.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert len(attempts) == 1 and attempts[0].attributes["tollgate.route.outcome"] == "ok"
    assert attempts[0].context.trace_id == int(TRACE_ID, 16)
    assert sent == [f"00-{TRACE_ID}-{attempts[0].context.span_id:016x}-01"]


async def test_grpc_metadata_traceparent_is_the_parent_and_content_capture_is_opt_in(tmp_path):
    import grpc

    from tollgate.v1 import chat_pb2, inference_service_pb2 as ipb, inference_service_pb2_grpc as ipb_grpc

    mem = InMemorySpanExporter()
    async with run_fake_openai() as fake:
        cfg = dataclasses.replace(config(tmp_path, providers=(provider("primary", fake.base_url),)), trace_content=True)
        async with traced_gateway(cfg, mem) as (rt, http, auth):
            async with grpc.aio.insecure_channel(rt.grpc_target) as ch:
                resp = await ipb_grpc.InferenceServiceStub(ch).Chat(ipb.ChatRequest(input=chat_pb2.ChatInput(
                    model="tokens-3", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=PROMPT)])),
                    metadata=(("authorization", auth["Authorization"]), ("traceparent", CALLER)))
            assert resp.text.startswith("tok0")
            await rt.app.ledger.flush()
    pipeline = next(s for s in mem.get_finished_spans() if s.name == "chat tokens-3" and s.kind == SpanKind.SERVER)
    assert pipeline.context.trace_id == int(TRACE_ID, 16) and pipeline.parent.span_id == int(CALLER_SPAN, 16)
    assert PROMPT in pipeline.attributes["gen_ai.input.messages"]
    assert "tok0" in pipeline.attributes["gen_ai.output.messages"]


async def test_tracing_off_makes_no_span_and_sends_no_traceparent(tmp_path):
    async with run_fake_openai() as fake:
        cfg = config(tmp_path, providers=(provider("primary", fake.base_url),))
        assert cfg.otlp_endpoint == ""
        async with traced_gateway(cfg, None) as (rt, http, auth):
            assert rt.app.tracing is None and rt.app.pipeline.tracing is None and rt.app.router.tracing is None
            # the fast path: no tracing middleware, no trace hook on the upstream sessions
            assert all(getattr(m, "__qualname__", "").split(".")[0] != "traced" for m in rt.bridge.middlewares)
            r = await http.post("/v1/chat/completions", headers={**auth, "traceparent": CALLER},
                                json={"model": "tokens-3", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            assert all(not s.trace_configs for s in rt.app.upstreams._sessions.values())
        assert "traceparent" not in {k.lower() for k in fake.requests[-1].headers}


def test_no_endpoint_no_tracing_and_the_endpoint_gets_v1_traces():
    assert make_tracing("") is None
    t = make_tracing("http://127.0.0.1:4318")
    try:
        exporter = t.provider._active_span_processor._span_processors[0].span_exporter
        assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    finally:
        t.shutdown()


@pytest.mark.parametrize("bad", ["", "00-zz-00-01", "garbage", f"00-{'0' * 32}-{CALLER_SPAN}-01"])
def test_a_bad_traceparent_starts_a_new_trace(bad):
    from tollgate.tracing import Tracing

    assert Tracing.extract(bad) is None


async def test_a_gateway_process_exports_its_spans_over_otlp_http(tmp_path):
    """`python -m services` with OTEL_EXPORTER_OTLP_ENDPOINT set: the spans of one request reach a real
    OTLP/HTTP receiver, decoded from the protobuf export request."""
    from tests.reliability.replicas import replica, write_config
    from tests.support.otlp_receiver import run_otlp_receiver

    async with run_fake_openai() as fake, run_otlp_receiver() as otlp:
        cfg = write_config(tmp_path / "tollgate.toml", fake.base_url, {"t": {}})
        async with replica(tmp_path / "gw", cfg, "gw", OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url) as gw:
            async with httpx.AsyncClient(timeout=30) as http:
                r = await http.post(gw.url + "/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY},
                                    json={"name": "t", "email": "t@example.com", "tier": "t"})
                key = r.json()["key"]
                r = await http.post(gw.url + "/v1/chat/completions", headers={"Authorization": "Bearer " + key,
                                                                              "traceparent": CALLER},
                                    json={"model": "tokens-3", "messages": [{"role": "user", "content": PROMPT}]})
                assert r.status_code == 200
            got = await otlp.wait_for(lambda s: s.name == "chat tokens-3" and s.kind == 2, 15.0)  # 2 = SERVER
            pipeline = got[0]
            assert pipeline.trace_id == TRACE_ID and pipeline.service == "tollgate"
            assert pipeline.attributes["gen_ai.usage.output_tokens"] == 3
            assert pipeline.attributes["gen_ai.provider.name"] == "openai"
            await otlp.wait_for(lambda s: s.trace_id == TRACE_ID and s.kind == 3)  # 3 = CLIENT: the attempt
            bridge = await otlp.wait_for(lambda s: s.name == "POST /v1/chat/completions")
            assert bridge[0].parent_span_id == CALLER_SPAN and pipeline.parent_span_id == bridge[0].span_id
            assert "xyzzy" not in repr([s.attributes for s in otlp.spans])
        assert fake.requests[-1].headers["traceparent"].startswith(f"00-{TRACE_ID}-")


@pytest.mark.parametrize("var,value,field", [("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317", "otlp_endpoint"),
                                             ("TOLLGATE_TRACE_SAMPLE_RATIO", "1.5", "trace_sample_ratio")])
def test_a_bad_trace_setting_is_one_config_error_naming_it(var, value, field):
    from services.config.load import load_config
    from services.config.schema import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(None, env={var: value})
    assert field in str(e.value) or var in str(e.value)


def test_the_endpoint_and_content_switch_come_from_the_environment():
    from services.config.load import load_config

    cfg = load_config(None, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "TOLLGATE_TRACE_CONTENT": "true"})
    assert cfg.otlp_endpoint == "http://127.0.0.1:4318" and cfg.trace_content is True
    assert load_config(None, env={}).trace_content is False
