"""Issue 16 points 4-5: statements equal the ledger to the cent (JSON, CSV, CLI), quota and usage summary."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway

PASSWORD = "correct horse battery"
ADMIN = {"X-Admin-Key": ADMIN_KEY}
BUDGETED = TierConfig("budgeted", rpm=100, tpm_month=1_000_000, price_usd_month=12.5, budget_usd_month=5.0)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def shared(request) -> dict:
    """Each test runs on SQLite with the in-process limiter, and on PostgreSQL + Redis."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url"), "redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture(params=["sqlite", "postgres+redis"])
async def gw(request, tmp_path, fake_openai):
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), tiers=DEFAULT_TIERS + (BUDGETED,),
                 **shared(request))
    async with run_gateway(cfg) as g:
        yield g


async def make_user(gw, email: str, plan: str) -> tuple[str, str, str]:
    r = await gw.http.post("/api/admin/users", headers=ADMIN, json={"email": email, "plan": plan, "password": PASSWORD})
    uid = r.json()["user"]["id"]
    session = (await gw.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()["token"]
    key = (await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "t"})).json()["key"]
    return uid, session, key


async def test_statement_equals_the_ledger_to_the_cent(gw) -> None:
    uid, session, key = await make_user(gw, "ann@example.com", "budgeted")
    other, _, other_key = await make_user(gw, "bob@example.com", "startup")
    for model, n, k in (("gpt-4o-mini", 5, key), ("gpt-4o", 3, key), ("tokens-3", 2, key), ("gpt-4o", 2, other_key)):
        for _ in range(n):
            r = await gw.http.post("/v1/chat/completions", headers=bearer(k),
                                   json={"model": model, "messages": [{"role": "user", "content": "hello there"}]})
            assert r.status_code == 200, r.text
    month = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m")
    rows = [r for r in await gw.ledger() if r.user_id == uid]
    ledger_cost = sum(r.cost_usd for r in rows)
    assert ledger_cost > 0

    st = (await gw.http.get("/api/statements", headers=bearer(session), params={"month": month})).json()
    assert st["user_id"] == uid and st["month"] == month and st["plan"] == "budgeted" and st["plan_price_usd"] == 12.5
    assert round(st["usage_cost_usd"], 2) == round(ledger_cost, 2) and abs(st["usage_cost_usd"] - ledger_cost) < 1e-6
    assert round(st["total_usd"], 2) == round(12.5 + ledger_cost, 2)
    assert st["requests"] == len(rows) == 10
    by_model = {x["model"]: x for x in st["lines"]}
    for model in ("gpt-4o-mini", "gpt-4o", "tokens-3"):
        mine = [r for r in rows if r.model == model]
        assert by_model[model]["requests"] == len(mine)
        assert by_model[model]["prompt_tokens"] == sum(r.prompt_tokens for r in mine)
        assert abs(by_model[model]["cost_usd"] - sum(r.cost_usd for r in mine)) < 1e-6

    # CSV: the same numbers.
    r = await gw.http.get("/api/statements", headers=bearer(session), params={"month": month, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    total = next(x for x in table if x["line"] == "total")
    assert round(float(total["cost_usd"]), 2) == round(12.5 + ledger_cost, 2)
    assert sum(float(x["cost_usd"]) for x in table if x["line"].startswith("model:")) == pytest.approx(ledger_cost, abs=1e-5)
    r = await gw.http.get("/api/statements", headers={**bearer(session), "Accept": "text/csv"}, params={"month": month})
    assert r.headers["content-type"].startswith("text/csv")

    # The admin sees every user's; startup's price is seed 003's $29.
    all_st = (await gw.http.get("/api/admin/statements", headers=ADMIN, params={"month": month})).json()
    by_user = {s["user_id"]: s for s in all_st}
    assert by_user[uid]["usage_cost_usd"] == st["usage_cost_usd"] and by_user[other]["plan_price_usd"] == 29.0
    one = (await gw.http.get("/api/admin/statements", headers=ADMIN, params={"month": month, "user": other})).json()
    assert one["user_id"] == other and one["requests"] == 2

    # An empty past month, bad months, a user asking for the admin view.
    past = (await gw.http.get("/api/statements", headers=bearer(session), params={"month": "2020-01"})).json()
    assert past["requests"] == 0 and past["usage_cost_usd"] == 0 and past["total_usd"] == 12.5
    for bad in ("2026-13", "26-11", "november", "2026-1"):
        r = await gw.http.get("/api/statements", headers=bearer(session), params={"month": bad})
        assert r.status_code == 400, bad
    assert (await gw.http.get("/api/statements", headers=bearer(session), params={"format": "xml"})).status_code == 400
    assert (await gw.http.get("/api/admin/statements", headers=bearer(session))).status_code == 403


async def test_quota_summary_and_plans(gw) -> None:
    uid, session, key = await make_user(gw, "ann@example.com", "budgeted")
    for _ in range(3):
        assert (await gw.http.post("/v1/chat/completions", headers=bearer(key), json={
            "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})).status_code == 200
    q = (await gw.http.get("/api/quota", headers=bearer(key))).json()
    limits = {x["name"]: x for x in q["limits"]}
    assert q["plan"] == "budgeted" and set(limits) == {"requests_per_minute", "tokens_per_month", "budget_usd_month"}
    assert limits["requests_per_minute"]["used"] == 3 and limits["requests_per_minute"]["limit"] == 100
    rows = await gw.ledger()
    assert limits["tokens_per_month"]["used"] == sum(r.prompt_tokens + r.completion_tokens for r in rows)
    assert limits["budget_usd_month"]["used"] == pytest.approx(sum(r.cost_usd for r in rows), abs=2e-6)
    assert limits["budget_usd_month"]["limit"] == 5.0

    s = (await gw.http.get("/api/usage/summary", headers=bearer(session))).json()
    assert s["requests"] == 3 and s["by_model"][0]["model"] == "gpt-4o" and len(s["by_day"]) == 1
    assert s["by_day"][0]["date"] == dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert s["cost_usd"] == pytest.approx(sum(r.cost_usd for r in rows), abs=1e-6)
    assert (await gw.http.get("/api/usage/summary", headers=bearer(session), params={"since": "x"})).status_code == 400

    plans = {p["name"]: p for p in (await gw.http.get("/api/admin/plans", headers=ADMIN)).json()}
    assert plans["explorer"]["price_usd_month"] == 0 and plans["startup"]["price_usd_month"] == 29
    assert plans["growth"]["price_usd_month"] == 99 and plans["enterprise"]["price_usd_month"] is None
    assert plans["budgeted"]["users"] == 1 and plans["budgeted"]["budget_usd_month"] == 5.0
    assert (await gw.http.get("/api/admin/plans", headers=bearer(session))).status_code == 403
