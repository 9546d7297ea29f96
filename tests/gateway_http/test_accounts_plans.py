"""Issue 16 point 4 / issue 17: plans created, edited and deleted at run time (REST, gRPC, two replicas)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from tests.gateway_http.test_accounts_users import ADMIN, bearer, chat, make_user, shared, token
from tests.support.gateway import config, run_gateway
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tollgate.client import TollgateClient
from tollgate.v1 import user_service_pb2 as upb


@pytest.fixture(params=["sqlite", "postgres+redis"])
async def gw(request, tmp_path):
    async with run_gateway(config(tmp_path, demo="on", **shared(request))) as g:
        yield g


async def plans(gw) -> dict[str, dict]:
    r = await gw.http.get("/api/admin/plans", headers=ADMIN)
    assert r.status_code == 200, r.text
    return {p["name"]: p for p in r.json()}


async def test_created_plan_limits_a_user_and_an_edit_applies_without_restart(gw) -> None:
    r = await gw.http.post("/api/admin/plans", headers=ADMIN, json={
        "name": "tight", "description": "two a minute", "rpm": 2, "rpd": None, "price_usd_month": 5,
        "budget_usd_month": 3.5})
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "tight", "description": "two a minute", "rpm": 2, "rpd": 0, "tpd": 0, "tpm_month": 0,
                        "price_usd_month": 5.0, "budget_usd_month": 3.5, "users": 0}
    assert (await plans(gw))["tight"]["rpm"] == 2
    user, session = await make_user(gw, "ann@example.com", plan="tight")
    key = await token(gw, session)
    assert [await chat(gw, key) for _ in range(3)] == [200, 200, 429]

    # Raise the limit: the next request passes, no restart.
    r = await gw.http.put("/api/admin/plans/tight", headers=ADMIN, json={
        "name": "tight", "description": "five a minute", "rpm": 5, "price_usd_month": None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rpm"] == 5 and body["price_usd_month"] is None and body["users"] == 1 and "budget_usd_month" not in body
    assert await chat(gw, key) == 200
    quota = (await gw.http.get("/api/quota", headers=bearer(key))).json()
    assert quota["plan"] == "tight"
    assert any(x["name"] == "requests_per_minute" and x["limit"] == 5 for x in quota["limits"]) or \
        any(x["limit"] == 5 for x in quota["limits"]), quota

    # In use: 409, nothing deleted; once the user moves away, 204.
    r = await gw.http.delete("/api/admin/plans/tight", headers=ADMIN)
    assert r.status_code == 409, r.text
    assert "tight" in await plans(gw)
    assert (await gw.http.patch(f"/api/admin/users/{user['id']}", headers=ADMIN, json={"plan": "basic"})).status_code == 200
    assert (await gw.http.delete("/api/admin/plans/tight", headers=ADMIN)).status_code == 204
    assert "tight" not in await plans(gw)
    assert (await gw.http.delete("/api/admin/plans/tight", headers=ADMIN)).status_code == 404
    assert (await gw.http.put("/api/admin/plans/tight", headers=ADMIN, json={"rpm": 1})).status_code == 404

    audit = (await gw.http.get("/api/admin/audit", headers=ADMIN, params={"limit": 500})).json()
    rows = [(a["action"], a["target"]) for a in audit if a["action"].startswith("plan.")]
    assert rows == [("plan.delete", "tight"), ("plan.update", "tight"), ("plan.create", "tight")]
    update = next(a for a in audit if a["action"] == "plan.update")
    assert update["before"]["rpm"] == 2 and update["after"]["rpm"] == 5


async def test_bad_input_names_the_field_and_changes_nothing(gw) -> None:
    before = await plans(gw)
    for body, field in (({"name": "x", "rpm": -1}, "rpm"), ({"name": "x", "tpd": 10 ** 13}, "tpd"),
                        ({"name": "x", "budget_usd_day": -5}, "budget_usd_day"),
                        ({"name": "x", "price_usd_month": 1e12}, "price_usd_month"),
                        ({"name": "bad name!"}, "name"), ({"name": ""}, "name"),
                        ({"name": "x", "rpm": "ten"}, "rpm"), ({"name": "x", "description": "d" * 501}, "description")):
        r = await gw.http.post("/api/admin/plans", headers=ADMIN, json=body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.text, (body, r.text)
    r = await gw.http.put("/api/admin/plans/basic", headers=ADMIN, json={"rpm": -3})
    assert r.status_code == 400 and "rpm" in r.text
    assert await plans(gw) == before
    # Duplicates: 409; a config-declared plan cannot be deleted (409), but can be edited.
    assert (await gw.http.post("/api/admin/plans", headers=ADMIN, json={"name": "basic"})).status_code == 409
    assert (await gw.http.delete("/api/admin/plans/pro", headers=ADMIN)).status_code == 409
    r = await gw.http.put("/api/admin/plans/pro", headers=ADMIN, json={"rpm": 7, "description": "edited"})
    assert r.status_code == 200 and r.json()["rpm"] == 7
    # A user (not an admin) is refused.
    _, session = await make_user(gw, "bob@example.com")
    for method, path in (("POST", "/api/admin/plans"), ("PUT", "/api/admin/plans/basic"),
                         ("DELETE", "/api/admin/plans/basic")):
        r = await gw.http.request(method, path, headers=bearer(session), json={"name": "zz", "rpm": 1})
        assert r.status_code == 403, (method, r.text)
    assert (await plans(gw))["basic"] == before["basic"] | {"users": 1}


async def test_grpc_stubs_create_update_delete(gw) -> None:
    from tests.support.gateway import ADMIN_KEY

    client = TollgateClient.connect(gw.rt.grpc_target, admin_key=ADMIN_KEY)
    md = client._admin_md
    try:
        r = await client.users.CreatePlan(upb.CreatePlanRequest(plan=upb.Plan(name="g1", rpm=3, tpm_month=100)),
                                          metadata=md)
        assert r.plan.name == "g1" and r.plan.rpm == 3 and not r.plan.HasField("price_usd_month")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.users.CreatePlan(upb.CreatePlanRequest(plan=upb.Plan(name="g1")), metadata=md)
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.users.UpdatePlan(upb.UpdatePlanRequest(plan=upb.Plan(name="nope")), metadata=md)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.users.UpdatePlan(upb.UpdatePlanRequest(plan=upb.Plan(name="g1", budget_usd_day=-1)), metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "budget_usd_day" in e.value.details()
        r = await client.users.UpdatePlan(upb.UpdatePlanRequest(plan=upb.Plan(name="g1", rpm=9, price_usd_month=0)),
                                          metadata=md)
        assert r.plan.rpm == 9 and r.plan.HasField("price_usd_month") and r.plan.tpm_month == 0
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.users.DeletePlan(upb.DeletePlanRequest(name="basic"), metadata=md)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await client.users.DeletePlan(upb.DeletePlanRequest(name="g1"), metadata=md)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.users.DeletePlan(upb.DeletePlanRequest(name="g1"), metadata=md)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await client.close()


async def test_an_edit_reaches_another_replica_and_survives_a_restart(tmp_path, postgres_url, redis_url) -> None:  # noqa: F811
    kw = {"database_url": postgres_url, "redis_url": redis_url, "demo": "on", "secret_key": "s" * 48}
    async with run_gateway(config(tmp_path / "a", **kw)) as a, run_gateway(config(tmp_path / "b", **kw)) as b:
        r = await a.http.put("/api/admin/plans/startup", headers=ADMIN, json={"rpm": 11, "price_usd_month": 31})
        assert r.status_code == 200, r.text
        assert (await a.http.post("/api/admin/plans", headers=ADMIN, json={"name": "team", "rpm": 4})).status_code == 201
        t0 = time.monotonic()
        while True:
            seen = await plans(b)
            if seen["startup"]["rpm"] == 11 and "team" in seen:
                break
            assert time.monotonic() - t0 < 5.0, seen["startup"]
            await asyncio.sleep(0.2)
        assert seen["startup"]["price_usd_month"] == 31.0
    # A restart keeps the stored edit over the config's startup plan (rpm 60).
    async with run_gateway(config(tmp_path / "c", **kw)) as c:
        seen = await plans(c)
        assert seen["startup"]["rpm"] == 11 and seen["team"]["rpm"] == 4


async def test_a_default_plan_the_config_left_out_can_be_created(tmp_path) -> None:
    from services.config.schema import TierConfig

    async with run_gateway(config(tmp_path, tiers=(TierConfig("basic", rpm=5),))) as gw:
        assert set(await plans(gw)) == {"basic"}  # the store's seeded defaults are not in force
        r = await gw.http.post("/api/admin/plans", headers=ADMIN, json={"name": "explorer", "rpm": 3})
        assert r.status_code == 201, r.text
        assert (await plans(gw))["explorer"]["rpm"] == 3
