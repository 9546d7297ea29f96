"""RELIABILITY E6: fuzzed requests on every RPC of the four services, over the real gRPC port.

Requests are built from each method's input descriptor (tests/support/proto_fuzz.py: edge
integers, NaN and infinities, awkward strings, out-of-range enums, long repeated fields, Structs)
and sent as raw bytes through `channel.unary_unary(path)` / `unary_stream(path)` — so the
encoding is ours: unknown fields, varints padded to their maximum length, merged messages,
reversed field order — under every kind of caller (none, a bad key, a user key, a session, a
user's token, the admin key). Every answer must carry a code the product declares (never
UNKNOWN, never INTERNAL) and, when it is an error, the ErrorInfo reason our Guard attaches.
Bytes that do not parse at all must be INVALID_ARGUMENT, and must never take the server down.

Two former bugs are tested on their own and kept out of the fuzzer's way, so they cannot hide
whatever else it finds: model names that metadata cannot carry (routed RPCs get printable ASCII
names up to 200 characters here), and long caller values echoed into error metadata (strings are at
most 1,024 characters here; test_long_values_echoed_in_errors_still_reach_the_caller sends 10,000).

Scaled for `make test`: 60 messages per RPC (15 for Register and Login, whose argon2 work costs
~0.1-0.3 s each), 10 garbage payloads per RPC; RELIABILITY E6 asks 200, which is N_PER_RPC below.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from google.protobuf import message_factory

from tests.support.fakes.hostile import TEXT, run_hostile
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway
from tests.support.proto_fuzz import ProtoFuzzer
from tollgate.client import error_info
from tollgate.v1 import admin_service_pb2, chat_pb2, inference_service_pb2, key_service_pb2, model_service_pb2

pytestmark = pytest.mark.asyncio(loop_scope="module")

N_PER_RPC = 60
N_SLOW = 15  # Register, Login
N_GARBAGE = 10
SLOW = {"Register", "Login"}
SERVICES = [m.DESCRIPTOR.services_by_name[name] for m, name in (
    (inference_service_pb2, "InferenceService"), (model_service_pb2, "ModelService"),
    (key_service_pb2, "KeyService"), (admin_service_pb2, "AdminService"))]
METHODS = [(s, m) for s in SERVICES for m in s.methods]
C = grpc.StatusCode
DECLARED = {C.OK, C.INVALID_ARGUMENT, C.UNAUTHENTICATED, C.PERMISSION_DENIED, C.NOT_FOUND, C.ALREADY_EXISTS,
            C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED, C.UNAVAILABLE, C.DEADLINE_EXCEEDED}
IP_URLS = ["", "http://127.0.0.1:1/v1", "http://[::1]/v1", "http://169.254.169.254/latest", "https://10.0.0.1/v1",
           "http://2130706433/", "not a url", "ftp://8.8.8.8/", "https://1.1.1.1:99999/", "http://[::ffff:127.0.0.1]/"]


def _overrides() -> dict:
    emails = ["fuzz@example.com", "a@b.co", "", "x", "@", "a@b", "FUZZ@EXAMPLE.COM ", "a" * 300 + "@example.com"]
    return {
        # Never a name to resolve: the SSRF check would ask DNS, which is not the point here.
        "base_url": lambda r: r.choice(IP_URLS),
        "email": lambda r: r.choice(emails) if r.random() < 0.7 else "",
        "password": lambda r: r.choice(["", "short", "long enough pw", "p" * 2000]),
        "provider": lambda r: r.choice(["openai", "anthropic", "gemini", "ollama", "primary", "demo", "", "nope", "../x"]),
        "method": lambda r: r.choice(["GET", "POST", "DELETE", "get", "", "CONNECT", "TRACE", "P O S T"]),
        "page_token": lambda r: r.choice(["", "bzox", "bzo5OTk5OTk5OTk5OTk5OTk5", "!!", "o:1"]),
    }


def _safe_model(r: random.Random) -> str:
    return r.choice(["tokens-2", "gpt-4o-mini", "demo", "", "x" * 200, "a/b:c@d", "-1", "NaN", "' OR 1=1 --"]) \
        if r.random() < 0.7 else "".join(r.choice("abcXYZ019-_./:@ ") for _ in range(r.randint(0, 60)))


ROUTED = {"Chat", "StreamChat", "Embed"}
_HI = chat_pb2.ChatInput(model="tokens-2", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")])
# Valid requests that half of each RPC's messages start from (one to three fields then fuzzed).
BASES = {
    "Chat": inference_service_pb2.ChatRequest(input=_HI),
    "StreamChat": inference_service_pb2.StreamChatRequest(input=_HI, include_usage=True),
    "Embed": inference_service_pb2.EmbedRequest(model="tokens-2", inputs=["hi", "there"]),
    "Forward": inference_service_pb2.ForwardRequest(
        provider="openai", method="POST", path="chat/completions",
        body=b'{"model": "tokens-2", "messages": [{"role": "user", "content": "hi"}]}',
        headers=[inference_service_pb2.Header(name="content-type", value="application/json")]),
    "ListModels": model_service_pb2.ListModelsRequest(page_size=10),
    "GetModel": model_service_pb2.GetModelRequest(id="gpt-4o-mini"),
    "CreateApiKey": admin_service_pb2.CreateApiKeyRequest(name="fuzz", email="f@example.com", tier="basic"),
    "ListUsage": admin_service_pb2.ListUsageRequest(page_size=10),
    "CreateProviderKey": key_service_pb2.CreateProviderKeyRequest(provider="openai", key="sk-fuzz",
                                                                  base_url="https://1.1.1.1/v1", models=["m"]),
    "CreateToken": key_service_pb2.CreateTokenRequest(name="fuzz", ttl_seconds=60),
    "GetUsage": key_service_pb2.GetUsageRequest(page_size=10),
}


def _method_class(method) -> type:
    return message_factory.GetMessageClass(method.input_type)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory):
    # The hostile fake answers any model and any `dimensions` with something small (the OpenAI fake would
    # build a 2**31-float embedding on the test's own loop).
    async with run_hostile() as fake:
        # The fuzz sends hundreds of refused credentials from one address: the per-address 429 after
        # 100 a minute (test_f6_credential_stuffing.py) would answer for them, so it is off here.
        cfg = config(tmp_path_factory.mktemp("e6"), providers=(provider("primary", fake.base_url),),
                     auth_failures_per_minute=0)
        async with run_gateway(cfg) as gw:
            key = await gw.new_key(tier="unlimited")
            channel = grpc.aio.insecure_channel(gw.rt.grpc_target, options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
            reg = await channel.unary_unary("/tollgate.v1.KeyService/Register",
                                            response_deserializer=key_service_pb2.RegisterResponse.FromString)(
                key_service_pb2.RegisterRequest(email="owner@example.com", password="correct horse battery").SerializeToString(),
                timeout=10)
            session = reg.session_token
            tok = await channel.unary_unary("/tollgate.v1.KeyService/CreateToken",
                                            response_deserializer=key_service_pb2.CreateTokenResponse.FromString)(
                key_service_pb2.CreateTokenRequest(name="fuzz").SerializeToString(),
                metadata=(("authorization", "Bearer " + session),), timeout=10)
            creds = [(), (("x-admin-key", ADMIN_KEY),), (("authorization", "Bearer " + key),),
                     (("authorization", "Bearer " + session),), (("x-api-key", tok.secret),),
                     (("authorization", "Bearer tg_not_a_key"),), (("x-admin-key", "wrong"),)]
            try:
                yield gw, channel, creds
            finally:
                await channel.close()


async def _call(channel, service, method, payload: bytes, md) -> tuple[grpc.StatusCode, str, str]:
    """(code, ErrorInfo reason, details) of one raw call."""
    path = f"/{service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            call = channel.unary_stream(path)(payload, metadata=md, timeout=15)
            async for _ in call:
                pass
        else:
            await channel.unary_unary(path)(payload, metadata=md, timeout=15)
        return C.OK, "", ""
    except grpc.aio.AioRpcError as e:
        info = error_info(e)
        return e.code(), info.reason, (e.details() or "")[:160]


async def _still_serving(gw, channel, creds) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == health_pb2.HealthCheckResponse.SERVING
    ok = inference_service_pb2.ChatRequest(input=chat_pb2.ChatInput(
        model="tokens-2", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")]))
    resp = await channel.unary_unary("/tollgate.v1.InferenceService/Chat",
                                     response_deserializer=inference_service_pb2.ChatResponse.FromString)(
        ok.SerializeToString(), metadata=creds[2], timeout=10)
    assert resp.text == TEXT
    assert (await gw.http.get("/health")).status_code == 200


@pytest.mark.parametrize("service,method", METHODS, ids=[f"{s.name}.{m.name}" for s, m in METHODS])
async def test_fuzzed_requests_get_declared_codes(shared, service, method):
    gw, channel, creds = shared
    cls = _method_class(method)
    overrides = {**_overrides(), "model": _safe_model} if method.name in ROUTED else _overrides()
    fuzzer = ProtoFuzzer(random.Random(f"e6:{method.full_name}"), overrides=overrides)
    n = N_SLOW if method.name in SLOW else N_PER_RPC
    base = BASES.get(method.name)
    payloads = [fuzzer.encode(fuzzer.mutate(base) if base is not None and i % 2 else fuzzer.build(cls)) for i in range(n)]
    for p in payloads:
        cls.FromString(p)  # each is a valid encoding: the codes below are about meaning, not parsing
    limit = asyncio.Semaphore(1 if method.name in SLOW else 8)

    async def one(i: int, payload: bytes):
        async with limit:
            return await _call(channel, service, method, payload, creds[i % len(creds)])

    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(payloads)))
    allowed = DECLARED
    bad = [(i, code.name, reason, details) for i, (code, reason, details) in enumerate(results)
           if code not in allowed or (code != C.OK and not reason)]
    assert bad == [], f"{method.full_name}: undeclared codes or errors without an ErrorInfo: {bad[:5]}"
    await _still_serving(gw, channel, creds)


async def test_garbage_bytes_never_take_the_server_down(shared):
    gw, channel, creds = shared
    fuzzer = ProtoFuzzer(random.Random("e6:garbage"))
    seen = Counter()
    for service, method in METHODS:
        cls = _method_class(method)
        for i in range(N_GARBAGE):
            code, _, _ = await _call(channel, service, method, fuzzer.garbage(cls), creds[1 + i % 3])
            seen[code.name] += 1
    assert "OK" not in seen, seen
    await _still_serving(gw, channel, creds)


async def test_garbage_bytes_are_invalid_argument(shared):
    gw, channel, creds = shared
    fuzzer = ProtoFuzzer(random.Random("e6:garbage-codes"))
    bad = []
    for service, method in METHODS:
        cls = _method_class(method)
        for i in range(3):
            code, reason, details = await _call(channel, service, method, fuzzer.garbage(cls), creds[1])
            if code != C.INVALID_ARGUMENT or reason != "MALFORMED_REQUEST":
                bad.append((method.full_name, code.name, reason, details[:80]))
    assert bad == []


async def test_model_names_that_cannot_travel_in_metadata_get_declared_codes(shared):
    gw, channel, creds = shared
    bad = []
    for model in ("a\u2028b", "mod\u00e8le", "a\x01b", "m" * 20000):
        inp = chat_pb2.ChatInput(model=model, messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")])
        for name, msg in (("Chat", inference_service_pb2.ChatRequest(input=inp)),
                          ("StreamChat", inference_service_pb2.StreamChatRequest(input=inp)),
                          ("Embed", inference_service_pb2.EmbedRequest(model=model, inputs=["hi"]))):
            method = SERVICES[0].methods_by_name[name]
            code, reason, details = await _call(channel, SERVICES[0], method, msg.SerializeToString(), creds[2])
            if code not in DECLARED or (code != C.OK and not reason):
                bad.append((name, model[:12], code.name, details[:60]))
    assert bad == []


async def test_long_values_echoed_in_errors_still_reach_the_caller(shared):
    gw, channel, creds = shared
    long = "v" * 10_000
    hi = [chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")]
    cases = [
        ("ModelService", "GetModel", model_service_pb2.GetModelRequest(id=long), creds[2], C.NOT_FOUND),
        ("InferenceService", "Chat", inference_service_pb2.ChatRequest(input=chat_pb2.ChatInput(
            model="tokens-2", messages=hi, route=chat_pb2.RouteHints(strategy=long))), creds[2], C.INVALID_ARGUMENT),
        ("InferenceService", "Chat", inference_service_pb2.ChatRequest(input=chat_pb2.ChatInput(
            model="tokens-2", messages=hi, route=chat_pb2.RouteHints(provider=long))), creds[2], C.NOT_FOUND),
        ("AdminService", "RevokeApiKey", admin_service_pb2.RevokeApiKeyRequest(id=long), creds[1], C.NOT_FOUND),
    ]
    bad = []
    for sname, mname, msg, md, want in cases:
        service = next(s for s in SERVICES if s.name == sname)
        code, reason, details = await _call(channel, service, service.methods_by_name[mname], msg.SerializeToString(), md)
        if code != want or not reason:
            bad.append((mname, code.name, reason, details[:80]))
    assert bad == []
