"""RELIABILITY A7: when every candidate fails, the gateway must not multiply the load.

Retries (same-route and failover alike) in flight stay within 20% of the requests in flight
(floor 3), so N concurrent requests against a dead primary and a dead fallback cost at most
1.2 × N + 3 upstream attempts; once every breaker is open the caller gets 503 + Retry-After
with no upstream call at all; and every such answer says `x-should-retry: false`, because our
own retries are already spent.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from tests.reliability.scripted import Reply, chat, err, make_router, router_config, run_scripted
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body

N = 100


@asynccontextmanager
async def all_failing(tmp_path, delay_s: float = 0.0):
    overloaded = Reply(status=503, delay_s=delay_s, message="The server is overloaded.")
    async with run_scripted(overloaded) as a, run_scripted(overloaded) as b:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("a", a.base_url, keys=("sk-a",)), provider("b", b.base_url, keys=("sk-b",), priority=1)))
        async with run_gateway(cfg) as gw:
            yield gw, bearer(await gw.new_key()), a, b


async def test_concurrent_requests_against_all_503_stay_within_the_retry_budget(tmp_path):
    # Slow failures, so the N requests really are in flight together: the budget's worst case.
    async with all_failing(tmp_path, delay_s=0.5) as (gw, auth, a, b):
        answers = await asyncio.gather(*(gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(N)))
        attempts = len(a.calls) + len(b.calls)
        assert attempts <= 1.2 * N + 3, (len(a.calls), len(b.calls))
        # (Fewer than N when later arrivals found both circuits already open: no call at all.)
        assert {r.status_code for r in answers} == {503}
        assert {r.headers.get("x-should-retry") for r in answers} == {"false"}
        assert all(r.headers.get("Retry-After") for r in answers)
        router = gw.app.router
        assert router.in_flight == (0, 0)  # every request and retry slot given back
        rows = await gw.ledger()
        assert len(rows) == N and {x.status for x in rows} == {"upstream_error"}
        assert sum(x.attempts for x in rows) == attempts


async def test_once_every_breaker_is_open_there_is_no_upstream_call(tmp_path):
    async with all_failing(tmp_path) as (gw, auth, a, b):
        for _ in range(6):  # serially: 2 tries on a then b per request, both open after a few
            await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        breaker = gw.app.router.breaker
        assert (breaker.state("a-k1"), breaker.state("b-k1")) == ("open", "open")
        before = len(a.calls) + len(b.calls)
        answers = await asyncio.gather(*(gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth) for _ in range(20)))
        assert len(a.calls) + len(b.calls) == before
        for r in answers:
            assert r.status_code == 503
            assert r.headers["x-should-retry"] == "false"
            assert 1 <= int(r.headers["Retry-After"]) <= 30  # when the first circuit half-opens
            assert r.json()["error"]["type"] == "api_error"


async def test_a_lone_failing_request_still_gets_its_retries():
    # The budget's floor (3) leaves a quiet gateway's single request its full max_attempts.
    async with run_scripted(err(503)) as a, run_scripted(err(503)) as b, run_scripted(err(503)) as c:
        cfg = router_config(provider("a", a.base_url), provider("b", b.base_url, priority=1),
                            provider("c", c.base_url, priority=2))
        async with make_router(cfg) as router:
            error, log = await chat(router)
            assert type(error).__name__ == "Unavailable"
            assert log.tries == 4 == router.cfg.max_attempts
            assert log.header() == "a/a-k1=server(503), a/a-k1=server(503), b/b-k1=server(503), b/b-k1=server(503)"
            assert router.in_flight == (0, 0)


async def test_a_retry_refused_by_the_budget_ends_the_request_and_says_so():
    async with run_scripted(err(503)) as a, run_scripted() as b:
        cfg = router_config(provider("a", a.base_url), provider("b", b.base_url, priority=1))
        async with make_router(cfg) as router:
            router.retry_budget_min, router.retry_budget_ratio = 0, 0.0  # no retries at all
            error, log = await chat(router)
            assert type(error).__name__ == "Unavailable"
            # No same-route retry either: the refusal is recorded against the candidate it would have tried.
            assert log.header() == "a/a-k1=server(503), b/b-k1=retry_budget"
            assert len(a.calls) == 1 and b.calls == []
