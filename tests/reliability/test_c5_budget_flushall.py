"""RELIABILITY C5 for $ budgets (issue 16): FLUSHALL mid-day → the budget counters are rebuilt from
the ledger's costs on the next request, so the budget still refuses at the same total.

Two users on one plan with a $ day budget: the first spends until refused with its counters
intact (the baseline); the second spends part of it, Redis loses everything (FLUSHALL on this
test's own redis-server, never the shared one), then spends on until refused. Without the
rebuild the second would get a whole fresh budget; with it, it gets exactly the baseline.
"""

from __future__ import annotations

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from services.store.records import UsageFilter
from tests.reliability.test_c5_flushall import flushall, private_redis  # noqa: F401  (fixture)
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)

ADMIN = {"X-Admin-Key": ADMIN_KEY}
PASSWORD = "correct horse battery"
BUDGET_USD = 0.0001  # gpt-4o-mini, 8 tokens out: a few micro-dollars a request, so about a dozen fit
PLAN = TierConfig("c5usd", rpm=10_000, budget_usd_day=BUDGET_USD, description="a tiny $ day budget")
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
BEFORE = 4  # requests before the counters vanish


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def user_token(gw, email: str) -> tuple[str, str]:
    r = await gw.http.post("/api/admin/users", headers=ADMIN, json={"email": email, "plan": PLAN.name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    uid = r.json()["user"]["id"]
    session = (await gw.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()["token"]
    r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "t"})
    assert r.status_code == 201, r.text
    return uid, r.json()["key"]


async def spend_until_refused(gw, key: str, most: int = 200) -> int:
    for n in range(most):
        r = await gw.http.post("/v1/chat/completions", headers=bearer(key), json=BODY)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "insufficient_quota", r.text  # OpenAI's code for a spending cap
            assert "budget" in r.text
            return n
        assert r.status_code == 200, r.text
    raise AssertionError(f"the $ budget never refused in {most} requests")


async def test_flushall_rebuilds_the_dollar_budget_from_the_ledger(tmp_path, fake_openai, private_redis):  # noqa: F811
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), redis_url=private_redis,
                 tiers=DEFAULT_TIERS + (PLAN,))
    async with run_gateway(cfg) as gw:
        uid_a, key_a = await user_token(gw, "ann@example.com")
        uid_b, key_b = await user_token(gw, "bob@example.com")
        baseline = await spend_until_refused(gw, key_a)
        assert baseline > BEFORE + 2, baseline  # room on both sides of the flush
        assert gw.app.budgets.rebuilds == 0  # nothing was lost: nothing rebuilt

        for _ in range(BEFORE):
            assert (await gw.http.post("/v1/chat/completions", headers=bearer(key_b), json=BODY)).status_code == 200
        await flushall(private_redis)  # mid-day: every counter gone, the $ ones too

        after = await spend_until_refused(gw, key_b)
        assert gw.app.budgets.rebuilds >= 1
        assert BEFORE + after == baseline, (BEFORE, after, baseline)  # not BEFORE + baseline
        await gw.app.ledger.flush()
        totals_a = await gw.app.store.usage_totals(UsageFilter(user_id=uid_a, status="ok"))
        totals_b = await gw.app.store.usage_totals(UsageFilter(user_id=uid_b, status="ok"))
        assert totals_b["requests"] == totals_a["requests"] == baseline
        assert totals_b["cost_usd"] <= BUDGET_USD


async def test_flushall_rebuild_reaches_a_tokens_own_budget(tmp_path, fake_openai, private_redis):  # noqa: F811
    """A token's own $ budget (keyed by the token, not the user) is rebuilt from that token's rows."""
    cfg = config(tmp_path, providers=(provider("primary", fake_openai.base_url),), redis_url=private_redis)
    async with run_gateway(cfg) as gw:
        r = await gw.http.post("/api/admin/users", headers=ADMIN, json={"email": "cy@example.com", "plan": "basic",
                                                                         "password": PASSWORD})
        assert r.status_code == 201, r.text
        session = (await gw.http.post("/api/auth/login", json={"email": "cy@example.com", "password": PASSWORD})).json()["token"]
        keys = []
        for _ in range(2):
            r = await gw.http.post("/api/tokens", headers=bearer(session), json={"name": "t", "budget_usd_day": BUDGET_USD})
            assert r.status_code == 201, r.text
            keys.append(r.json()["key"])
        baseline = await spend_until_refused(gw, keys[0])
        assert baseline > BEFORE + 2, baseline
        for _ in range(BEFORE):
            assert (await gw.http.post("/v1/chat/completions", headers=bearer(keys[1]), json=BODY)).status_code == 200
        await flushall(private_redis)
        after = await spend_until_refused(gw, keys[1])
        assert gw.app.budgets.rebuilds >= 1
        assert BEFORE + after == baseline, (BEFORE, after, baseline)
