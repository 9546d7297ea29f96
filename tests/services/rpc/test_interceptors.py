"""services/rpc/interceptors.py: the Guard every RPC runs through. Unit tests of the error table's
google.rpc.Status, the rate-limit metadata and the credential cutting; and the Guard itself on a
real port (a gRPC server of its own with two guarded methods, on a real gateway's parts): errors
become their status with the request id, secrets are cut from them, anything unexpected is
INTERNAL (never UNKNOWN), a draining gateway refuses new calls, a unary call gets its rate-limit
numbers in the initial metadata."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from services.core import errors as E
from services.core.scrub import Scrubber
from services.limits.base import Decision
from services.rpc.interceptors import DETAILS_KEY, MESSAGE_MAX, Guard, credentials, rate_limit_metadata, scrubbed, \
    status_for, stream, unary
from tests.services.rpc.conftest import bearer, refused, refused_stream
from tollgate.v1 import model_service_pb2 as mpb
from tollgate.v1 import model_service_pb2_grpc as mpb_grpc

UPSTREAM_SECRET = "sk-test-upstream"  # the gateway fixture's provider key: the scrubber knows it


def details(md: tuple) -> status_pb2.Status:
    return status_pb2.Status.FromString(dict(md)[DETAILS_KEY])


def test_status_for_packs_every_detail_the_error_has():
    e = E.ResourceExhausted("slow down", reason="RATE_LIMITED", metadata={"rule": "rpm"}, retry_after_s=2.5,
                            quota_violations=[E.QuotaViolation("api_key:k1", "60 per minute")],
                            field_violations=[E.FieldViolation("model", "x" * 1000)])
    code, message, md = status_for(e, "req_1")
    assert (code, message) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")
    assert dict(md)["x-request-id"] == "req_1" and dict(md)["retry-after"] == "3"
    st = details(md)
    assert st.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and st.message == "slow down"
    info, retry, quota, bad = (error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo(),
                               error_details_pb2.QuotaFailure(), error_details_pb2.BadRequest())
    for any_, msg in zip(st.details, (info, retry, quota, bad)):
        assert any_.Unpack(msg)
    assert (info.reason, info.domain, dict(info.metadata)) == ("RATE_LIMITED", "tollgate", {"rule": "rpm", "request_id": "req_1"})
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (2, 500_000_000)
    assert [(v.subject, v.description) for v in quota.violations] == [("api_key:k1", "60 per minute")]
    assert bad.field_violations[0].field == "model" and len(bad.field_violations[0].description) == 256  # capped


def test_status_for_caps_the_message_and_leaves_out_what_the_error_lacks():
    code, message, md = status_for(E.InvalidArgument("m" * 5000), "req_2")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(message) == MESSAGE_MAX and message.endswith("…")
    assert "retry-after" not in dict(md) and len(details(md).details) == 1  # the ErrorInfo alone


def test_rate_limit_metadata_never_shows_a_negative_remainder_and_rounds_the_reset_up():
    d = Decision(True, "rpm", limit=60, remaining=-3, used=63, reset_at=1_700_000_000.2)
    assert rate_limit_metadata(d) == (("x-ratelimit-limit", "60"), ("x-ratelimit-remaining", "0"),
                                      ("x-ratelimit-used", "63"), ("x-ratelimit-reset", "1700000001"))
    assert rate_limit_metadata(None) == ()


class _Context:
    """Just what credentials() reads of a grpc.aio context: the invocation metadata."""

    def __init__(self, md: tuple) -> None:
        self._md = md

    def invocation_metadata(self) -> tuple:
        return self._md


def test_credentials_are_the_callers_secrets_without_their_scheme():
    ctx = _Context((("authorization", "Bearer tg_abc"), ("x-admin-key", "adm-1"), ("user-agent", "x"),
                    ("x-api-key", "")))
    assert credentials(ctx) == ("tg_abc", "adm-1")


def test_scrubbed_cuts_known_and_the_callers_secrets_everywhere():
    s = Scrubber({"provider:k1": "sk-provider-0123456789"})
    e = E.InvalidArgument("bad sk-provider-0123456789 and tg_caller_0123456789", metadata={"echo": "tg_caller_0123456789"},
                          field_violations=[E.FieldViolation("key", "sk-provider-0123456789 is wrong")])
    out = scrubbed(e, s, ("tg_caller_0123456789",))
    text = out.message + str(out.metadata) + str(out.field_violations)
    assert "sk-provider" not in text and "tg_caller" not in text and "[redacted]" in out.message


class Probe:
    """Two guarded methods on a server of their own: what one raises is what the caller asks for."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    @unary()
    async def Unary(self, request: bytes, ctx) -> bytes:
        return _act(request, ctx)

    @stream()
    async def Stream(self, request: bytes, ctx):
        yield b"first"
        yield _act(request, ctx)


def _act(request: bytes, ctx) -> bytes:
    if request == b"leak":
        raise E.InvalidArgument(f"the upstream said no to {UPSTREAM_SECRET}", reason="LEAKY")
    if request == b"bug":
        raise ZeroDivisionError("a bug")
    return ctx.principal.kind.encode() + b" " + ctx.request_id.encode()


@pytest.fixture
async def probe(gateway):
    app = gateway.app
    p = Probe(Guard(app.auth, app.quotas, app.limiter, app.scrubber, app.open_gate, app.auth_throttle, app.tracing,
                    lambda: app.draining))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("probe.Probe", {
        "Unary": grpc.unary_unary_rpc_method_handler(p.Unary),  # bytes in, bytes out
        "Stream": grpc.unary_stream_rpc_method_handler(p.Stream),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch.unary_unary("/probe.Probe/Unary"), ch.unary_stream("/probe.Probe/Stream")
    finally:
        await server.stop(None)


async def test_the_guard_resolves_the_caller_and_gives_each_call_an_id(probe, api_key):
    call_unary, _ = probe
    call = call_unary(b"ok", metadata=bearer(api_key))
    kind, rid = (await call).decode().split()
    assert kind == "api_key" and rid.startswith("req_")
    md = dict(await call.initial_metadata())
    assert md["x-request-id"] == rid and int(md["x-ratelimit-limit"]) == 1000  # the enterprise tier's rpm
    err = await refused(call_unary(b"ok"))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and err.request_id.startswith("req_")


async def test_an_error_reaches_the_caller_without_any_secret(probe, api_key):
    call_unary, call_stream = probe
    err = await refused(call_unary(b"leak", metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "LEAKY"
    assert UPSTREAM_SECRET not in err.message and "[redacted]" in err.message
    got, err = await refused_stream(call_stream(b"leak", metadata=bearer(api_key)))
    assert got == [b"first"] and err.reason == "LEAKY" and UPSTREAM_SECRET not in err.message


async def test_an_unexpected_exception_is_internal_with_the_request_id_never_unknown(probe, api_key):
    call_unary, call_stream = probe
    for err in (await refused(call_unary(b"bug", metadata=bearer(api_key))),
                (await refused_stream(call_stream(b"bug", metadata=bearer(api_key))))[1]):
        assert err.code == grpc.StatusCode.INTERNAL and err.reason == "INTERNAL"
        assert "ZeroDivisionError" in err.message and "a bug" not in err.message
        assert err.request_id.startswith("req_")


async def test_a_draining_gateway_refuses_new_calls_with_a_retry(gateway, probe, api_key):
    call_unary, _ = probe
    gateway.app.draining = True
    try:
        err = await refused(call_unary(b"ok", metadata=bearer(api_key)))
    finally:
        gateway.app.draining = False
    assert err.code == grpc.StatusCode.UNAVAILABLE and err.reason == "SHUTTING_DOWN" and err.retry_after_s == 1.0


async def test_a_real_unary_method_sends_the_callers_limits_first(channel, api_key):
    call = mpb_grpc.ModelServiceStub(channel).ListVendors(mpb.ListVendorsRequest(), metadata=bearer(api_key))
    await call
    md = dict(await call.initial_metadata())
    assert md["x-ratelimit-limit"] == "1000" and int(md["x-ratelimit-remaining"]) <= 1000
    assert md["x-request-id"].startswith("req_")
