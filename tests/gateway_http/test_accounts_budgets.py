"""Issue 16: $ budgets per plan, user and token: refused before any provider call, exact under races."""

from __future__ import annotations

import asyncio
import dataclasses

import openai
import pytest

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway

PASSWORD = "correct horse battery"
ADMIN = {"X-Admin-Key": ADMIN_KEY}
MAX_TOKENS = 10_000  # the worst case is dominated by max_tokens: 10,000 x $0.6/Mtok = $0.006 per request
PER_REQUEST = 0.006
CAPPED = TierConfig("capped", rpm=10_000, budget_usd_day=PER_REQUEST * 10.5, description="fits 10 worst cases a day")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def shared(request) -> dict:
    """Each test runs on SQLite with the in-process limiter, and on PostgreSQL + Redis."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url"), "redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture(params=["sqlite", "postgres+redis"])
async def gw(request, tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), tiers=DEFAULT_TIERS + (CAPPED,),
                 **shared(request))
    async with run_gateway(cfg) as g:
        yield g


async def user_token(gw, email: str, plan: str, **token_fields) -> tuple[dict, str]:
    r = await gw.http.post("/api/admin/users", headers=ADMIN, json={"email": email, "plan": plan, "password": PASSWORD})
    assert r.status_code == 201, r.text
    session = (await gw.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()["token"]
    r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "t", **token_fields})
    assert r.status_code == 201, r.text
    return r.json() | {"user": r.json()}, r.json()["key"]


def body(model: str = "gpt-4o-mini", max_tokens: int = MAX_TOKENS) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}


async def test_fifty_racing_requests_against_a_budget_that_fits_ten(gw, fake_openai) -> None:
    _, key = await user_token(gw, "ann@example.com", "capped")
    fake_openai.hold = asyncio.Event()
    tasks = [asyncio.create_task(gw.http.post("/v1/chat/completions", headers=bearer(key), json=body()))
             for _ in range(50)]
    try:
        for _ in range(200):  # every request is decided while the admitted ones are still held upstream
            refused = sum(1 for t in tasks if t.done())
            if refused == 40 and len(fake_openai.requests) == 10:
                break
            await asyncio.sleep(0.05)
        refusals = [t.result() for t in tasks if t.done()]
        assert len(refusals) == 40 and len(fake_openai.requests) == 10
    finally:
        fake_openai.hold.set()
    answers = await asyncio.gather(*tasks)
    codes = [r.status_code for r in answers]
    assert codes.count(200) == 10 and codes.count(429) == 40, codes
    err = refusals[0].json()["error"]
    assert err["code"] == "insufficient_quota" and "daily plan budget of $" in err["message"]
    assert len(fake_openai.requests) == 10  # refused before any provider was called
    rows = await gw.ledger()
    assert sorted(r.status for r in rows).count("budget_exceeded") == 40
    # The ledger explorer: a status filter, and the same rows as CSV.
    r = await gw.http.get("/api/admin/usage", headers=ADMIN, params={"status": "budget_exceeded", "limit": 100})
    assert r.json()["pagination"]["total"] == 40 and {x["status"] for x in r.json()["data"]} == {"budget_exceeded"}
    r = await gw.http.get("/api/admin/usage", headers=ADMIN, params={"status": "ok", "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().split("\n")
    assert lines[0].startswith("request_id,") and len(lines) == 11 and all(",ok," in x for x in lines[1:])
    # Settled with the real cost: the budget now has room again for the next worst case.
    assert (await gw.http.post("/v1/chat/completions", headers=bearer(key), json=body())).status_code == 200


async def test_user_and_token_budgets_and_their_errors(gw, fake_openai) -> None:
    tok, key = await user_token(gw, "ann@example.com", "basic", budget_usd_month=PER_REQUEST * 2.5)
    assert tok["budget_usd_month"] == PER_REQUEST * 2.5
    codes = [(await gw.http.post("/v1/chat/completions", headers=bearer(key), json=body())).status_code for _ in range(2)]
    assert codes == [200, 200]  # settled at the real, tiny cost: room stays
    fake_openai.hold = asyncio.Event()
    first = [asyncio.create_task(gw.http.post("/v1/chat/completions", headers=bearer(key), json=body())) for _ in range(2)]
    while len(fake_openai.requests) < 4:
        await asyncio.sleep(0.02)
    oa = openai.AsyncOpenAI(api_key=key, base_url=gw.url + "/v1", max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        await oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=MAX_TOKENS)
    assert "monthly token budget" in str(e.value.body)
    r = await gw.http.post("/api/chat", headers=bearer(key), json={"model": "gpt-4o-mini", "maxTokens": MAX_TOKENS,
                                                                   "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 429 and "budget" in r.json()["message"]
    fake_openai.hold.set()
    assert [t.status_code for t in await asyncio.gather(*first)] == [200, 200]


async def test_user_budget_set_by_the_admin(gw, fake_openai) -> None:
    tok, key = await user_token(gw, "ann@example.com", "basic")
    users = (await gw.http.get("/api/admin/users", headers=ADMIN)).json()["items"]
    uid = users[0]["id"]
    r = await gw.http.patch(f"/api/admin/users/{uid}", headers=ADMIN, json={"budget_usd_day": PER_REQUEST * 0.5})
    assert r.status_code == 200 and r.json()["budget_usd_day"] == PER_REQUEST * 0.5
    await asyncio.sleep(1.05)  # the token's cached principal picks the budget up within a second
    r = await gw.http.post("/v1/chat/completions", headers=bearer(key), json=body())
    assert r.status_code == 429 and "daily user budget" in r.json()["error"]["message"]
    assert (await gw.http.post("/v1/chat/completions", headers=bearer(key), json=body(max_tokens=10))).status_code == 200
    assert len(fake_openai.requests) == 1


async def test_unpriced_models_count_as_zero_or_are_refused(tmp_path, fake_openai) -> None:
    for mode, want in (("free", 200), ("refuse", 400)):
        cfg = config(tmp_path / mode, providers=(provider("primary", fake_openai.base_url),),
                     tiers=DEFAULT_TIERS + (CAPPED,), unpriced_models=mode)
        async with run_gateway(cfg) as gw:
            _, key = await user_token(gw, "ann@example.com", "capped")
            r = await gw.http.post("/v1/chat/completions", headers=bearer(key), json=body(model="my-unpriced-model"))
            assert r.status_code == want, (mode, r.text)
