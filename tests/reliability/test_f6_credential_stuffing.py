"""RELIABILITY F6 / issue 15 point 5: 429 after 100 failed authentications a minute from one address.

Counted in the shared limiter: in-process without Redis, in Redis (real) with it, so two gateways
add up one address's failures. A client from another address (a real second loopback address,
127.0.0.2, as the HTTP source) keeps working, and so do its own wrong keys (401, not 429). Over
gRPC the peer's address counts. /metrics counts the failures by surface, with no key, key prefix
or address in a label.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.support.gateway import config, provider, run_gateway
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tests.support.sse_read import CHAT, bearer, chat_body
from tollgate.client import TollgateClient
from tollgate.v1 import chat_pb2

OTHER_ADDRESS = "127.0.0.2"  # loopback too: the gateway still only listens on 127.0.0.1


def bad_key(i: int) -> str:
    return f"tg_stuffed{uuid.uuid4().hex}{i:03d}"


def from_address(gw, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.url, timeout=30, transport=httpx.AsyncHTTPTransport(local_address=address))


async def statuses(http: httpx.AsyncClient, keys: list[str]) -> list[int]:
    async def one(k: str) -> int:
        return (await http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(k))).status_code
    return list(await asyncio.gather(*(one(k) for k in keys)))


def auth_lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith("tollgate_auth_failures_by_surface_total{")]


def counted(text: str, surface: str, outcome: str) -> float:
    for line in auth_lines(text):
        if f'surface="{surface}"' in line and f'outcome="{outcome}"' in line:
            return float(line.split()[-1])
    return 0.0


async def test_http_in_process_limiter_429_after_100_and_other_addresses_unaffected(tmp_path, fake_openai):
    async with run_gateway(config(tmp_path, providers=(provider("primary", fake_openai.base_url),))) as gw:
        good = await gw.new_key()
        attacker = gw.http  # 127.0.0.1
        codes = await statuses(attacker, [bad_key(i) for i in range(150)])
        assert codes.count(401) == 100 and codes.count(429) == 50, {c: codes.count(c) for c in set(codes)}
        r = await attacker.post(CHAT, json=chat_body("tokens-1"), headers=bearer(bad_key(0)))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["type"] in ("rate_limit_error", "requests", "rate_limit_exceeded"), r.json()
        # The attacker's address is refused whatever it sends now: a correct guess must not show.
        assert (await attacker.post(CHAT, json=chat_body("tokens-1"), headers=bearer(good))).status_code == 429

        async with from_address(gw, OTHER_ADDRESS) as other:
            r = await other.post(CHAT, json=chat_body("tokens-1"), headers=bearer(good))
            assert r.status_code == 200, r.text
            assert (await other.post(CHAT, json=chat_body("tokens-1"), headers=bearer(bad_key(1)))).status_code == 401
            r = await other.post("/api/chat", json={"model": "tokens-1", "messages": [{"role": "user", "content": "hi"}]},
                                 headers=bearer(good))
            assert r.status_code == 200

        text = (await gw.http.get("/metrics")).text
        assert counted(text, "http", "unauthenticated") == 101  # 100 + the other address's one
        assert counted(text, "http", "throttled") >= 52
        for line in auth_lines(text):  # labels: surface and outcome, nothing else
            assert "tg_" not in line and "127.0.0" not in line and good[:12] not in line, line


async def test_grpc_peer_address_is_counted_and_answered_resource_exhausted(tmp_path, fake_openai):
    async with run_gateway(config(tmp_path, providers=(provider("primary", fake_openai.base_url),))) as gw:
        good = await gw.new_key()
        inp = chat_pb2.ChatInput(model="tokens-1", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")])
        codes = []
        for i in range(101):
            c = TollgateClient.connect(gw.rt.grpc_target, api_key=bad_key(i))
            try:
                await c.chat(inp, timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as e:
                codes.append(e.code())
                last = e
            finally:
                await c.close()
        assert codes[:100] == [grpc.StatusCode.UNAUTHENTICATED] * 100, set(codes[:100])
        assert codes[100] == grpc.StatusCode.RESOURCE_EXHAUSTED
        st = status_pb2.Status.FromString(dict(last.trailing_metadata())["grpc-status-details-bin"])
        infos = [d for d in st.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert infos, st
        # The same good key over gRPC from the blocked address is refused too...
        c = TollgateClient.connect(gw.rt.grpc_target, api_key=good)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await c.chat(inp, timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await c.close()
        # ...while a client from another address is served.
        async with from_address(gw, OTHER_ADDRESS) as other:
            assert (await other.post(CHAT, json=chat_body("tokens-1"), headers=bearer(good))).status_code == 200
        text = (await gw.http.get("/metrics")).text
        assert counted(text, "grpc", "unauthenticated") == 100 and counted(text, "grpc", "throttled") == 2


async def test_redis_two_gateways_count_one_address_together(tmp_path, fake_openai, redis_url):  # noqa: F811
    # The failures are counted per deployment (replicas share the server secret): a fresh secret
    # keeps this test's count apart from anyone else's on the shared Redis.
    secret = "h15-stuffing-" + uuid.uuid4().hex
    common = dict(providers=(provider("primary", fake_openai.base_url),), redis_url=redis_url, secret_key=secret)
    async with run_gateway(config(tmp_path / "a", **common)) as a, run_gateway(config(tmp_path / "b", **common)) as b:
        good = await a.new_key()
        codes = await statuses(a.http, [bad_key(i) for i in range(60)])
        codes += await statuses(b.http, [bad_key(i) for i in range(40)])
        assert codes == [401] * 100, {c: codes.count(c) for c in set(codes)}
        assert a.app.limiter.backend_up and b.app.limiter.backend_up  # counted in Redis, not locally
        # Over the limit on either: the 101st on b, and a's next failure finds the shared window full.
        assert (await b.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(bad_key(100)))).status_code == 429
        assert (await a.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(bad_key(101)))).status_code == 429
        assert (await a.http.post(CHAT, json=chat_body("tokens-1"), headers=bearer(good))).status_code == 429
        async with from_address(a, OTHER_ADDRESS) as other:
            assert (await other.post(CHAT, json=chat_body("tokens-1"), headers=bearer(good))).status_code == 200


async def test_throttle_block_ends_with_the_window_and_counts_nothing_when_off():
    from services.auth.throttle import AuthThrottle
    from services.clock import FakeClock
    from services.core.errors import ResourceExhausted
    from services.limits.memory import MemoryLimiter

    clock = FakeClock()
    seen: list[tuple[str, bool]] = []
    t = AuthThrottle(MemoryLimiter(clock), clock, "ns", lambda peer, md: md["ip"], limit=3, window_s=60.0,
                     on_failure=lambda surface, over: seen.append((surface, over)))
    addr, surface = t.address("inprocess", {"ip": "192.0.2.7"})
    assert (addr, surface) == ("192.0.2.7", "http") and not t.blocking
    for _ in range(3):
        await t.failed(addr, surface)
    with pytest.raises(ResourceExhausted) as caught:
        await t.failed(addr, surface)
    assert caught.value.retry_after_s and 1.0 <= caught.value.retry_after_s <= 60.0
    assert t.blocking
    with pytest.raises(ResourceExhausted):
        t.check(addr, surface)
    t.check("192.0.2.8", surface)  # another address: untouched
    clock.advance(61.0)
    t.check(addr, surface)  # the window freed up: served again, and forgotten
    assert not t.blocking
    await t.failed(addr, surface)
    assert seen == [("http", False)] * 3 + [("http", True)] * 2 + [("http", False)]
    off = AuthThrottle(MemoryLimiter(clock), clock, "ns", lambda peer, md: "x", limit=0)
    for _ in range(500):
        await off.failed("x", "grpc")
    assert not off.blocking
