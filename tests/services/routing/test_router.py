"""The Router on its own, built as services/app.py builds it, on a FakeClock, against scripted
OpenAI-shaped upstreams on 127.0.0.1 (or the in-process `demo` kind where only the choice of
key matters): failover between keys and providers, the RouteLog, timeouts and deadlines,
streams before and after their first token, probes and slots given back on cancellation, the
strategies end to end, and one charge per request however many tries it took.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from services.clock import FakeClock
from services.core import errors as E
from services.routing.router import RouteLog
from tests.reliability.scripted import (
    SILENT, chat, cut, err, make_router, ok, request, router_config, run_scripted, stream,
)
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body

START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
UTC_MIDNIGHT = 1_700_006_400.0


def demo(name: str, keys: int = 1, **kw):
    return provider(name, "", kind="demo", keys=tuple(f"sk-{name}-{i}" for i in range(keys)), **kw)


# ---------------------------------------------------------------------------- failover and the RouteLog

async def test_503_on_the_first_key_fails_over_to_the_second_key_of_the_same_provider():
    async with run_scripted() as up:
        up.by_key["sk-a"] = err(503)
        cfg = router_config(provider("p", up.base_url, keys=("sk-a", "sk-b")), strategy="exhaust-first")
        async with make_router(cfg) as router:
            t0 = router.clock.monotonic()
            result, log = await chat(router)
            assert result.text == "tok0 tok1 tok2 tok3 "
            assert log.target.key_id == "p-k2"
            assert log.header() == "p/p-k1=server(503), p/p-k1=server(503), p/p-k2=ok(200)"
            assert log.tries == 3 and log.strategy == "exhaust-first"
            assert up.keys() == ["sk-a", "sk-a", "sk-b"]
            # One jittered pause (100 ms-1 s) before the same-route retry, on the injected clock.
            assert 0.1 <= router.clock.monotonic() - t0 <= 1.0
            assert router.stats.failovers == 1 and router.stats.per_key_requests == {"p-k2": 1}


async def test_503_on_the_first_provider_fails_over_to_the_second_provider():
    async with run_scripted(err(503)) as a, run_scripted() as b:
        async with make_router(router_config(provider("a", a.base_url), provider("b", b.base_url, priority=1))) as router:
            result, log = await chat(router)
            assert result.text == "tok0 tok1 tok2 tok3 "
            assert (log.target.provider, log.target.key_id) == ("b", "b-k1")
            assert [(x.provider, x.outcome, x.status) for x in log.attempts] == [
                ("a", "server", 503), ("a", "server", 503), ("b", "ok", 200)]
            assert len(a.calls) == 2 and len(b.calls) == 1
            assert router.in_flight == (0, 0)


async def test_route_log_names_every_skip_and_why():
    clock = FakeClock(START)
    async with run_scripted() as up, run_scripted() as spare:
        cfg = router_config(provider("p", up.base_url, keys=("k1", "k2", "k3", "k4"), rpm=1),
                            provider("spare", spare.base_url, priority=1), strategy="exhaust-first")
        async with make_router(cfg, clock) as router:
            for _ in range(5):
                router.breaker.record_failure("p-k1")  # open
            router.cooldowns.set("p-k2", 30.0)  # told to wait by a 429
            router.key_caps["p-k3"] = 1
            router._in_flight["p-k3"] = 1  # another request holds k3's only slot
            result, log = await chat(router)
            assert log.header() == "p/p-k1=breaker_open, p/p-k2=cooldown, p/p-k3=key_busy, p/p-k4=ok(200)"
            assert log.tries == 1
            result, log = await chat(router)  # k4 has used its 1 rpm
            assert log.header() == ("p/p-k1=breaker_open, p/p-k2=cooldown, p/p-k3=key_busy, "
                                    "p/p-k4=key_rate_limited, spare/spare-k1=ok(200)")
            assert up.keys() == ["k4"]


async def test_timeout_fails_over_without_a_same_route_retry():
    async with run_scripted(SILENT) as a, run_scripted() as b:
        cfg = router_config(provider("a", a.base_url, timeout_s=0.3), provider("b", b.base_url, priority=1))
        async with make_router(cfg) as router:
            result, log = await chat(router)
            assert log.header() == "a/a-k1=timeout, b/b-k1=ok(200)"
            assert len(a.calls) == 1


async def test_deadline_with_nowhere_to_go_is_deadline_exceeded_in_time():
    async with run_scripted(SILENT) as a:
        async with make_router(router_config(provider("a", a.base_url))) as router:
            t0 = time.monotonic()
            error, log = await chat(router, deadline_s=0.4)
            assert isinstance(error, E.DeadlineExceeded)
            assert time.monotonic() - t0 <= 0.4 + 0.5
            assert log.header() == "a/a-k1=timeout"


async def test_caller_errors_end_the_request_with_no_breaker_count():
    reply = err(400, code="context_length_exceeded", message="This model's maximum context length is 8 tokens.")
    async with run_scripted(reply) as a, run_scripted() as b:
        async with make_router(router_config(provider("a", a.base_url), provider("b", b.base_url, priority=1))) as router:
            error, log = await chat(router)
            assert isinstance(error, E.InvalidArgument) and error.reason == "CONTEXT_LENGTH_EXCEEDED"
            assert log.header() == "a/a-k1=context_length(400)" and b.calls == []
            assert router.breaker.snapshot() == {}


async def test_all_keys_rejected_stays_502_while_they_are_benched():
    async with run_scripted(err(401)) as a:
        async with make_router(router_config(provider("a", a.base_url, keys=("k1", "k2")))) as router:
            for _ in range(2):
                error, log = await chat(router)
                assert isinstance(error, E.UpstreamRejected)
                assert error.message == "provider rejected the gateway's key"
            assert len(a.calls) == 2  # the second request found both keys benched
            assert {x.outcome for x in log.attempts} == {"cooldown"}
            router.clock.advance(3601.0)  # an hour later they are tried again
            await chat(router)
            assert len(a.calls) == 4


# ---------------------------------------------------------------------------- streams

async def test_stream_fails_over_before_content_and_not_after():
    async with run_scripted(cut(0)) as a, run_scripted() as b:
        async with make_router(router_config(provider("a", a.base_url), provider("b", b.base_url, priority=1))) as router:
            text, error, log = await stream(router)
            assert (text, error) == ("tok0 tok1 tok2 tok3 ", None)
            assert log.target.key_id == "b-k1" and log.header().endswith("b/b-k1=ok(200)")
            a.default = cut(2)  # now the primary breaks after two tokens
            calls_b = len(b.calls)
            text, error, log = await stream(router)
            assert text == "tok0 tok1 "
            assert isinstance(error, E.Unavailable) and error.reason == "UPSTREAM_STREAM_BROKEN"
            assert len(b.calls) == calls_b  # RELIABILITY A6: no failover after the first token
            assert log.target.key_id == "a-k1"


async def test_stream_first_token_timeout_covers_the_wait_for_headers():
    async with run_scripted(SILENT) as a, run_scripted() as b:
        cfg = router_config(provider("a", a.base_url), provider("b", b.base_url, priority=1), first_token_timeout_s=0.3)
        async with make_router(cfg) as router:
            t0 = time.monotonic()
            text, error, log = await stream(router)
            assert error is None and text == "tok0 tok1 tok2 tok3 "
            assert time.monotonic() - t0 < 1.0
            assert log.header() == "a/a-k1=timeout, b/b-k1=ok(200)"


# ---------------------------------------------------------------------------- what a cancelled try gives back

async def test_a_cancelled_probe_is_given_back_and_so_are_the_slots():
    async with run_scripted(SILENT) as a, run_scripted() as b:
        cfg = router_config(provider("a", a.base_url), provider("b", b.base_url, priority=1))
        async with make_router(cfg) as router:
            router.key_caps["a-k1"] = 1
            for _ in range(5):
                router.breaker.record_failure("a-k1")
            router.clock.advance(30.0)
            assert router.breaker.state("a-k1") == "half_open"
            task = asyncio.create_task(router.chat(request(), router.clock.monotonic() + 30, RouteLog()))
            while not a.calls:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert router.in_flight == (0, 0) and router._in_flight == {}
            # The probe went back with the cancelled request: the next one may probe.
            a.default = ok()
            result, log = await chat(router)
            assert log.header() == "a/a-k1=ok(200)" and router.breaker.state("a-k1") == "closed"


# ---------------------------------------------------------------------------- strategies end to end

async def test_round_robin_spreads_1000_requests_evenly():
    async with make_router(router_config(demo("d", keys=3), strategy="round-robin")) as router:
        served = Counter()
        for _ in range(1000):
            result, log = await chat(router, model="demo")
            served[log.target.key_id] += 1
        for key in ("d-k1", "d-k2", "d-k3"):
            assert abs(served[key] / 1000 - 1 / 3) <= 0.03, served


async def test_weighted_spreads_1000_requests_by_provider_weight():
    cfg = router_config(demo("w5", weight=5.0), demo("w3", weight=3.0), demo("w2", weight=2.0), strategy="weighted")
    async with make_router(cfg) as router:
        served = Counter()
        for _ in range(1000):
            result, log = await chat(router, model="demo")
            served[log.target.provider] += 1
        for name, share in (("w5", 0.5), ("w3", 0.3), ("w2", 0.2)):
            assert abs(served[name] / 1000 - share) <= 0.03, served


async def test_weighted_against_real_upstreams_over_http():
    async with run_scripted() as a, run_scripted() as b:
        cfg = router_config(provider("a", a.base_url, weight=3.0), provider("b", b.base_url), strategy="weighted")
        async with make_router(cfg) as router:
            for _ in range(100):
                await chat(router)
            assert (len(a.calls), len(b.calls)) == (75, 25)


async def test_least_latency_measures_every_key_once_then_follows_the_tracker():
    # 40 keys: more than least_latency.SMALL, so the router's strategy keeps the list sorted from
    # the tracker's change log rather than sorting it per request.
    async with make_router(router_config(demo("d", keys=40), strategy="least-latency")) as router:
        first = [(await chat(router, model="demo"))[1].target.key_id for _ in range(40)]
        # Unmeasured keys go first, in declaration order; each success records a sample.
        assert first == [f"d-k{i}" for i in range(1, 41)]
        for i in range(1, 41):
            router.latency.observe(f"d-k{i}", 1000.0 + i)  # d-k1 fastest now (EWMA 0.3 of 1,001 ms)
        assert (await chat(router, model="demo"))[1].target.key_id == "d-k1"
        order = router.plan("demo", "", "least-latency")[1]  # handed out before the next samples
        for _ in range(5):
            router.latency.observe("d-k1", 5000.0)
        router.latency.observe("d-k7", 1.0)
        assert (await chat(router, model="demo"))[1].target.key_id == "d-k7"
        assert [v.target.key_id for v in order][:3] == ["d-k1", "d-k2", "d-k3"]  # the order of its time


async def test_exhaust_first_uses_a_key_until_its_daily_quota_is_gone_and_it_comes_back_after_midnight():
    clock = FakeClock(START)
    async with make_router(router_config(demo("d", keys=2, daily_quota=3), strategy="exhaust-first"), clock) as router:
        used = [(await chat(router, model="demo"))[1].target.key_id for _ in range(6)]
        assert used == ["d-k1"] * 3 + ["d-k2"] * 3
        error, log = await chat(router, model="demo")
        assert isinstance(error, E.ResourceExhausted) and error.reason == "UPSTREAM_RATE_LIMITED"
        assert error.retry_after_s == pytest.approx(UTC_MIDNIGHT - START)
        clock.advance(UTC_MIDNIGHT - START + 1.0)
        result, log = await chat(router, model="demo")
        assert log.target.key_id == "d-k1"


async def test_a_request_may_choose_its_strategy():
    async with make_router(router_config(demo("d", keys=3), strategy="exhaust-first")) as router:
        default = {(await chat(router, model="demo"))[1].target.key_id for _ in range(6)}
        assert default == {"d-k1"}
        rr = [(await chat(router, model="demo", strategy="round-robin"))[1] for _ in range(6)]
        assert {log.strategy for log in rr} == {"round-robin"}
        assert Counter(log.target.key_id for log in rr) == {"d-k1": 2, "d-k2": 2, "d-k3": 2}
        error, log = await chat(router, model="demo", strategy="fastest-please")
        assert isinstance(error, E.InvalidArgument) and error.reason == "UNKNOWN_STRATEGY"


async def test_candidates_carry_the_providers_weight_in_priority_order():
    cfg = router_config(demo("low", priority=2), demo("top", keys=2, weight=4.0), demo("mid", priority=1))
    async with make_router(cfg) as router:
        views = router.index.resolve("demo")
        assert [(v.target.key_id, v.priority, v.weight) for v in views] == [
            ("top-k1", 0, 4.0), ("top-k2", 0, 4.0), ("mid-k1", 1, 1.0), ("low-k1", 2, 1.0)]
        assert router.index.resolve("demo") is views  # cached


# ---------------------------------------------------------------------------- one charge per request

async def test_a_request_that_took_three_tries_is_charged_once(tmp_path):
    async with run_scripted(err(503)) as a, run_scripted() as b:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("a", a.base_url), provider("b", b.base_url, priority=1)))
        async with run_gateway(cfg) as gw:
            auth = bearer(await gw.new_key(tier="basic"))  # 60 rpm
            a.default = ok()
            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
            assert (r.status_code, r.headers["X-RateLimit-Used"], r.headers["X-RateLimit-Limit"]) == (200, "1", "60")
            a.default = err(503)
            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
            assert r.status_code == 200
            assert r.headers["X-Tollgate-Route"] == "a/a-k1=server(503), a/a-k1=server(503), b/b-k1=ok(200)"
            assert r.headers["X-RateLimit-Used"] == "2"  # three upstream tries, one request
            rows = await gw.ledger()
            assert sorted(x.attempts for x in rows) == [1, 3]
