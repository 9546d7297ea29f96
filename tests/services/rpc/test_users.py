"""services/rpc/users.py: UserService (the operator's back office) over a real port: users created,
invited, suspended and deleted; plans created and guarded; gateway keys; every change in the
audit log; admin only."""

from __future__ import annotations

import asyncio
import time

import grpc
import orjson

from tests.services.rpc.conftest import ADMIN, bearer, refused
from tollgate.v1 import key_service_pb2 as kpb
from tollgate.v1 import key_service_pb2_grpc as kpb_grpc
from tollgate.v1 import user_service_pb2 as upb
from tollgate.v1 import user_service_pb2_grpc as upb_grpc


async def test_an_invited_user_signs_in_with_the_invite_and_shows_in_the_back_office(channel):
    users, keys = upb_grpc.UserServiceStub(channel), kpb_grpc.KeyServiceStub(channel)
    made = await users.CreateUser(upb.CreateUserRequest(email="cat@example.com", plan="pro"), metadata=ADMIN)
    assert made.invite_token and (made.user.email, made.user.tier, made.user.role) == ("cat@example.com", "pro", "user")
    signed = await keys.AcceptInvite(kpb.AcceptInviteRequest(invite_token=made.invite_token, password="cats like naps"))
    assert signed.user.id == made.user.id and signed.session_token
    got = await users.GetUser(upb.GetUserRequest(id=made.user.id), metadata=ADMIN)
    assert got.user.email == "cat@example.com" and got.sessions == 1 and got.usage.requests == 0
    listed = await users.ListUsers(upb.ListUsersRequest(query="cat@"), metadata=ADMIN)
    assert [u.user.id for u in listed.users] == [made.user.id] and listed.total_size == 1
    audit = await users.ListAudit(upb.ListAuditRequest(action="user.create"), metadata=ADMIN)
    entry = [e for e in audit.entries if e.target == made.user.id][0]
    assert entry.actor and orjson.loads(entry.after)["invited"] is True


async def test_list_users_names_every_bad_filter(channel):
    err = await refused(upb_grpc.UserServiceStub(channel).ListUsers(
        upb.ListUsersRequest(role="owner", state="asleep", plan="platinum"), metadata=ADMIN))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.field_violations] == ["role", "state", "plan"]


async def test_a_suspended_user_is_told_so_only_with_the_right_password_then_deleted(channel):
    users, keys = upb_grpc.UserServiceStub(channel), kpb_grpc.KeyServiceStub(channel)
    made = await users.CreateUser(upb.CreateUserRequest(email="dan@example.com", plan="basic", password="dan's password"),
                                  metadata=ADMIN)
    assert made.invite_token == ""
    updated = await users.UpdateUser(upb.UpdateUserRequest(id=made.user.id, state="suspended"), metadata=ADMIN)
    assert updated.user.state == "suspended"
    err = await refused(keys.Login(kpb.LoginRequest(email="dan@example.com", password="dan's password")))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.reason == "ACCOUNT_SUSPENDED"
    err = await refused(keys.Login(kpb.LoginRequest(email="dan@example.com", password="a wrong password")))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and err.reason == "INVALID_CREDENTIALS"
    audit = await users.ListAudit(upb.ListAuditRequest(action="user.update"), metadata=ADMIN)
    entry = [e for e in audit.entries if e.target == made.user.id][0]
    assert (orjson.loads(entry.before)["state"], orjson.loads(entry.after)["state"]) == ("active", "suspended")
    await users.DeleteUser(upb.DeleteUserRequest(id=made.user.id), metadata=ADMIN)
    err = await refused(users.GetUser(upb.GetUserRequest(id=made.user.id), metadata=ADMIN))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "USER_NOT_FOUND"


async def test_plans_created_refused_twice_guarded_when_from_the_config_and_deleted(channel):
    users = upb_grpc.UserServiceStub(channel)
    plan = upb.Plan(name="team", description="Team plan", rpm=120, tpd=500_000, price_usd_month=49.0)
    made = await users.CreatePlan(upb.CreatePlanRequest(plan=plan), metadata=ADMIN)
    assert (made.plan.name, made.plan.rpm, made.plan.price_usd_month, made.plan.users) == ("team", 120, 49.0, 0)
    assert "team" in [p.name for p in (await users.ListPlans(upb.ListPlansRequest(), metadata=ADMIN)).plans]
    err = await refused(users.CreatePlan(upb.CreatePlanRequest(plan=plan), metadata=ADMIN))
    assert err.code == grpc.StatusCode.ALREADY_EXISTS and err.reason == "PLAN_EXISTS"
    err = await refused(users.CreatePlan(upb.CreatePlanRequest(plan=upb.Plan(name="-bad name", rpm=-1)), metadata=ADMIN))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and [f for f, _ in err.field_violations] == ["name", "rpm"]
    err = await refused(users.DeletePlan(upb.DeletePlanRequest(name="basic"), metadata=ADMIN))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.reason == "PLAN_IN_CONFIG"
    await users.DeletePlan(upb.DeletePlanRequest(name="team"), metadata=ADMIN)
    err = await refused(users.DeletePlan(upb.DeletePlanRequest(name="team"), metadata=ADMIN))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "PLAN_NOT_FOUND"


async def test_gateway_keys_from_the_config_are_read_only_and_run_time_ones_disabled_with_an_alert(channel):
    users = upb_grpc.UserServiceStub(channel)
    listed = await users.ListGatewayKeys(upb.ListGatewayKeysRequest(), metadata=ADMIN)
    config_key = [k for k in listed.keys if k.id == "primary-k1"][0]
    assert (config_key.source, config_key.mask, config_key.provider) == ("config", "(config)", "openai")
    err = await refused(users.DeleteGatewayKey(upb.DeleteGatewayKeyRequest(id="primary-k1"), metadata=ADMIN))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "PROVIDER_KEY_NOT_FOUND"
    made = (await users.CreateGatewayKey(upb.CreateGatewayKeyRequest(
        provider="groq", name="team groq", api_key="gsk-team-0123456789abcdef", models=["llama-3.1-8b"]), metadata=ADMIN)).key
    assert made.source == "store" and "0123456789abcdef" not in made.mask and not made.disabled
    off = (await users.UpdateGatewayKey(upb.UpdateGatewayKeyRequest(id=made.id, disabled=True), metadata=ADMIN)).key
    assert off.disabled
    end = time.monotonic() + 5
    while True:  # alerts are written by their own task
        alerts = await users.ListAlerts(upb.ListAlertsRequest(), metadata=ADMIN)
        mine = [a for a in alerts.alerts if a.subject == made.id]
        if mine or time.monotonic() > end:
            break
        await asyncio.sleep(0.05)
    assert [a.kind for a in mine] == ["provider_key_disabled"]
    await users.DeleteGatewayKey(upb.DeleteGatewayKeyRequest(id=made.id), metadata=ADMIN)
    left = await users.ListGatewayKeys(upb.ListGatewayKeysRequest(), metadata=ADMIN)
    assert made.id not in [k.id for k in left.keys]


async def test_the_back_office_is_admin_only(channel, api_key):
    users = upb_grpc.UserServiceStub(channel)
    err = await refused(users.ListUsers(upb.ListUsersRequest(), metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.reason == "ADMIN_ONLY"
    err = await refused(users.ListPlans(upb.ListPlansRequest()))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED
