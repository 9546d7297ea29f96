"""RELIABILITY A1: five failures in a row open a key's breaker for breaker_cooldown_s; traffic
goes to the fallback with no client error; after the cool-down one probe decides.

A whole gateway on a FakeClock (the 30 s cool-downs cost nothing), a scripted primary that
fails or answers as the test says, and a healthy fallback; strategy "priority", no jitter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager

import pytest

from services.clock import FakeClock
from tests.reliability.scripted import GARBAGE, RESET, SILENT, closed_port_url, err, ok, run_gateway_on, run_scripted
from tests.support.gateway import config, provider
from tests.support.sse_read import CHAT, bearer, chat_body

PRIMARY = "primary-k1"


@asynccontextmanager
async def setup(tmp_path, primary_reply=None, primary_url: str | None = None, **primary_kw):
    clock = FakeClock()
    async with run_scripted(primary_reply or err(503)) as primary, run_scripted() as fallback:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", primary_url or primary.base_url, keys=("sk-primary",), **primary_kw),
            provider("fallback", fallback.base_url, keys=("sk-fallback",), priority=1),
        ))
        async with run_gateway_on(cfg, clock) as gw:
            yield gw, bearer(await gw.new_key()), clock, primary, fallback


async def send(gw, auth, n: int = 1) -> list:
    return [await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(n)]


async def test_five_503s_in_a_row_open_the_breaker_and_the_fallback_serves(tmp_path):
    async with setup(tmp_path) as (gw, auth, clock, primary, fallback):
        breaker = gw.app.router.breaker
        answers = await send(gw, auth, 3)
        # One try and one same-route retry per request: 2 + 2 + 1 failures, the fifth opens it.
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert len(primary.calls) == 5
        assert breaker.state(PRIMARY) == "open"
        assert answers[2].headers["X-Tollgate-Route"] == "primary/primary-k1=server(503), fallback/fallback-k1=ok(200)"
        # Open: the primary gets nothing, callers see no error at all.
        answers = await send(gw, auth, 10)
        assert {r.status_code for r in answers} == {200}
        assert {r.headers["X-LLM-Key-ID"] for r in answers} == {"fallback-k1"}
        assert answers[0].headers["X-Tollgate-Route"] == "primary/primary-k1=breaker_open, fallback/fallback-k1=ok(200)"
        assert len(primary.calls) == 5
        # Open for breaker_cooldown_s (30 s), on the injected clock.
        clock.advance(29.0)
        await send(gw, auth)
        assert len(primary.calls) == 5 and breaker.state(PRIMARY) == "open"
        rows = await gw.ledger()
        assert len(rows) == 14 and {x.status for x in rows} == {"ok"}


async def test_after_the_cool_down_one_probe_200_closes_it(tmp_path):
    async with setup(tmp_path) as (gw, auth, clock, primary, fallback):
        breaker = gw.app.router.breaker
        await send(gw, auth, 3)
        assert breaker.state(PRIMARY) == "open"
        clock.advance(30.0)
        assert breaker.state(PRIMARY) == "half_open"
        # The primary has healed but answers slowly: while the probe runs, the others go elsewhere.
        primary.default = ok(delay_s=0.3)
        answers = await asyncio.gather(*(gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(6)))
        assert {r.status_code for r in answers} == {200}
        assert len(primary.calls) == 5 + 1  # exactly ONE probe
        assert sorted(r.headers["X-LLM-Key-ID"] for r in answers) == ["fallback-k1"] * 5 + [PRIMARY]
        assert breaker.state(PRIMARY) == "closed"
        # Closed again: the primary takes the traffic.
        primary.default = ok()
        r, = await send(gw, auth)
        assert r.headers["X-LLM-Key-ID"] == PRIMARY and r.headers["X-Tollgate-Route"] == "primary/primary-k1=ok(200)"


async def test_a_failed_probe_reopens_it_for_longer(tmp_path):
    async with setup(tmp_path) as (gw, auth, clock, primary, fallback):
        breaker = gw.app.router.breaker
        await send(gw, auth, 3)
        clock.advance(30.0)
        r, = await send(gw, auth)
        # The probe failed: no same-route retry on a re-opened key, the fallback answers.
        assert r.status_code == 200
        assert r.headers["X-Tollgate-Route"] == "primary/primary-k1=server(503), fallback/fallback-k1=ok(200)"
        assert len(primary.calls) == 6 and breaker.state(PRIMARY) == "open"
        # Second ejection: 2 × 30 s (Envoy-style growth).
        assert breaker.open_until(PRIMARY) - clock.monotonic() == pytest.approx(60.0)
        clock.advance(30.0)
        await send(gw, auth, 3)
        assert len(primary.calls) == 6
        clock.advance(30.0)
        primary.default = ok()
        r, = await send(gw, auth)
        assert r.headers["X-LLM-Key-ID"] == PRIMARY and breaker.state(PRIMARY) == "closed"
        assert len(primary.calls) == 7


async def test_failures_must_be_consecutive(tmp_path):
    async with setup(tmp_path) as (gw, auth, clock, primary, fallback):
        breaker = gw.app.router.breaker
        # 500, 200, then 4 × 500: never five in a row.
        primary.script = deque([err(500), ok(), err(500), err(500), err(500), err(500)])
        primary.default = ok()
        answers = await send(gw, auth, 3)
        assert [r.headers["X-LLM-Key-ID"] for r in answers] == [PRIMARY, "fallback-k1", "fallback-k1"]
        assert answers[0].headers["X-Tollgate-Route"] == "primary/primary-k1=server(500), primary/primary-k1=ok(200)"
        assert len(primary.calls) == 6
        assert breaker.state(PRIMARY) == "closed"
        r, = await send(gw, auth)
        assert r.headers["X-LLM-Key-ID"] == PRIMARY and breaker.state(PRIMARY) == "closed"


async def test_429s_do_not_count(tmp_path):
    async with setup(tmp_path, primary_reply=err(429)) as (gw, auth, clock, primary, fallback):
        for _ in range(8):
            r, = await send(gw, auth)
            assert r.status_code == 200 and r.headers["X-LLM-Key-ID"] == "fallback-k1"
            clock.advance(1.5)  # past the 1 s cool-down a 429 without Retry-After earns
        assert len(primary.calls) == 8
        assert gw.app.router.breaker.state(PRIMARY) == "closed"
        assert PRIMARY not in gw.app.router.breaker.snapshot()


@pytest.mark.parametrize("fault", ["reset", "garbage", "refused", "timeout"])
async def test_connect_errors_resets_garbage_and_timeouts_count(tmp_path, fault):
    reply = {"reset": RESET, "garbage": GARBAGE, "timeout": SILENT, "refused": ok()}[fault]
    url = closed_port_url() if fault == "refused" else None
    kw = {"timeout_s": 0.2} if fault == "timeout" else {}
    async with setup(tmp_path, primary_reply=reply, primary_url=url, **kw) as (gw, auth, clock, primary, fallback):
        answers = await send(gw, auth, 5)
        assert {r.status_code for r in answers} == {200}
        assert gw.app.router.breaker.state(PRIMARY) == "open"
        r, = await send(gw, auth)
        assert r.headers["X-Tollgate-Route"].startswith("primary/primary-k1=breaker_open")
