"""RELIABILITY A4: what each kind of upstream failure does.

- the caller's own 4xx (and content policy): one attempt, no failover, no breaker count;
- context length: never retried on the same model elsewhere;
- the provider's 401/403 on the gateway's key: the key is benched, failover, the caller never
  sees it (502 "provider rejected the gateway's key" when no candidate is left);
- 408/409/429/5xx/refused/reset: retried or failed over, the caller gets the fallback's answer.
Through the bridge on real ports, real clock, no retry jitter.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest

from tests.reliability.scripted import RESET, closed_port_url, err, ok, run_scripted
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body

PRIMARY_SECRET = "sk-primary-SECRET-0001"
FALLBACK_SECRET = "sk-fallback-SECRET-0002"


@asynccontextmanager
async def setup(tmp_path, primary_reply, fallback_reply=None, primary_url: str | None = None):
    async with run_scripted(primary_reply) as primary, run_scripted(fallback_reply or ok()) as fallback:
        cfg = config(tmp_path, strategy="priority", providers=(
            provider("primary", primary_url or primary.base_url, keys=(PRIMARY_SECRET,)),
            provider("fallback", fallback.base_url, keys=(FALLBACK_SECRET,), priority=1),
        ))
        async with run_gateway(cfg) as gw:
            yield gw, bearer(await gw.new_key()), primary, fallback


async def test_caller_400_is_one_attempt_with_no_failover_and_no_breaker_count(tmp_path):
    async with setup(tmp_path, err(400, message="Invalid value for 'temperature'.")) as (gw, auth, primary, fallback):
        for _ in range(6):  # more than the breaker threshold
            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
            assert r.status_code == 400
            assert r.json()["error"]["message"] == "Invalid value for 'temperature'."
        assert len(primary.calls) == 6 and fallback.calls == []
        assert gw.app.router.breaker.snapshot() == {}
        rows = await gw.ledger()
        assert {(x.status, x.attempts) for x in rows} == {("bad_request", 1)}


async def test_content_policy_is_the_callers_error(tmp_path):
    reply = err(400, code="content_policy_violation", message="Your request was rejected by our content policy.")
    async with setup(tmp_path, reply) as (gw, auth, primary, fallback):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "content_filter"
        assert len(primary.calls) == 1 and fallback.calls == []


async def test_context_length_is_not_failed_over_to_the_same_model(tmp_path):
    reply = err(400, code="context_length_exceeded", message="This model's maximum context length is 8 tokens.")
    async with setup(tmp_path, reply) as (gw, auth, primary, fallback):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"
        assert len(primary.calls) == 1
        assert fallback.calls == []  # same model, same window: it would fail the same way
        assert gw.app.router.breaker.snapshot() == {}


@pytest.mark.parametrize("status", [401, 403])
async def test_provider_auth_failure_benches_the_key_fails_over_and_is_hidden(tmp_path, status):
    async with setup(tmp_path, err(status, message="Incorrect API key provided: " + PRIMARY_SECRET)) as \
            (gw, auth, primary, fallback):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200, r.text
        assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
        assert r.headers["X-Tollgate-Route"] == f"primary/primary-k1=auth({status}), fallback/fallback-k1=ok(200)"
        assert PRIMARY_SECRET not in r.text and PRIMARY_SECRET not in str(r.headers)
        # Benched for about an hour, not retried by the next callers.
        assert gw.app.router.cooldowns.remaining("primary-k1") == pytest.approx(3600.0, abs=5.0)
        for _ in range(3):
            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
            assert r.status_code == 200
        assert len(primary.calls) == 1
        assert gw.app.router.breaker.snapshot() == {}


async def test_provider_auth_failure_with_no_candidate_left_is_502_and_never_shows_a_key(tmp_path):
    async with setup(tmp_path, err(401, message="Incorrect API key provided: " + PRIMARY_SECRET),
                     err(403, message="Key " + FALLBACK_SECRET + " is not allowed")) as (gw, auth, primary, fallback):
        for _ in range(2):  # the second request finds both keys benched: same answer, no upstream call
            r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
            assert r.status_code == 502, r.text
            assert r.json()["error"]["message"] == "provider rejected the gateway's key"
            for secret in (PRIMARY_SECRET, FALLBACK_SECRET, "SECRET"):
                assert secret not in r.text and secret not in str(r.headers)
        assert (len(primary.calls), len(fallback.calls)) == (1, 1)
        rows = await gw.ledger()
        assert [x.status for x in rows] == ["upstream_error", "upstream_error"]


@pytest.mark.parametrize("fault", ["408", "409", "429", "500", "502", "503", "504", "refused", "reset"])
async def test_transient_failures_are_retried_or_failed_over(tmp_path, fault):
    reply = RESET if fault == "reset" else ok() if fault == "refused" else err(int(fault))
    url = closed_port_url() if fault == "refused" else None
    async with setup(tmp_path, reply, primary_url=url) as (gw, auth, primary, fallback):
        r = await gw.http.post(CHAT, json=chat_body("gpt-4o-mini"), headers=auth)
        assert r.status_code == 200, r.text
        assert r.headers["X-LLM-Key-ID"] == "fallback-k1"
        assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 "
        route = r.headers["X-Tollgate-Route"]
        assert route.startswith("primary/primary-k1=") and route.endswith("fallback/fallback-k1=ok(200)")
        # 5xx, 409, refused and reset get one same-route retry; 408 (a timeout) and 429 do not.
        retried = fault not in ("408", "429")
        assert route.count("primary/primary-k1=") == (2 if retried else 1), route
        rows = await gw.ledger()
        assert [(x.status, x.provider) for x in rows] == [("ok", "fallback")]
