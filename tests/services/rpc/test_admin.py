"""services/rpc/admin.py: AdminService over a real port: validation naming every bad field, keys
that stop working the moment they are revoked, the ledger in pages, run-time model aliases, and
which methods need the admin key."""

from __future__ import annotations

import grpc

from tests.services.rpc.conftest import ADMIN, bearer, refused
from tollgate.v1 import admin_service_pb2 as apb
from tollgate.v1 import admin_service_pb2_grpc as apb_grpc
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import inference_service_pb2_grpc as ipb_grpc


async def chat(channel, key: str, model: str = "tokens-2") -> ipb.ChatResponse:
    inp = pb.ChatInput(model=model, messages=[pb.Message(role=pb.ROLE_USER, text="hi")])
    return await ipb_grpc.InferenceServiceStub(channel).Chat(ipb.ChatRequest(input=inp), metadata=bearer(key))


async def test_create_api_key_names_every_bad_field(channel):
    err = await refused(apb_grpc.AdminServiceStub(channel).CreateApiKey(
        apb.CreateApiKeyRequest(name=" ", email="not-an-address", tier="platinum"), metadata=ADMIN))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "VALIDATION_ERROR"
    assert [f for f, _ in err.field_violations] == ["name", "email", "tier"]


async def test_a_created_key_works_until_revoked_then_at_once_not(channel):
    admin = apb_grpc.AdminServiceStub(channel)
    made = await admin.CreateApiKey(apb.CreateApiKeyRequest(name="svc", email="svc@example.com", tier="basic"), metadata=ADMIN)
    assert made.key.startswith(made.api_key.prefix) and made.api_key.tier == "basic" and made.api_key.revoked_at == 0
    assert (await chat(channel, made.key)).text == "tok0 tok1 "
    await admin.RevokeApiKey(apb.RevokeApiKeyRequest(id=made.api_key.id), metadata=ADMIN)
    err = await refused(chat(channel, made.key))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED
    active = await admin.ListApiKeys(apb.ListApiKeysRequest(), metadata=ADMIN)
    assert made.api_key.id not in [k.id for k in active.api_keys]
    everything = await admin.ListApiKeys(apb.ListApiKeysRequest(include_revoked=True), metadata=ADMIN)
    assert [k.revoked_at > 0 for k in everything.api_keys if k.id == made.api_key.id] == [True]


async def test_revoking_an_unknown_key_is_not_found_naming_it(channel):
    err = await refused(apb_grpc.AdminServiceStub(channel).RevokeApiKey(apb.RevokeApiKeyRequest(id="key_nope"), metadata=ADMIN))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "API_KEY_NOT_FOUND"
    assert err.metadata["key_id"] == "key_nope"


async def test_admin_methods_refuse_a_user_key_and_a_missing_one(channel, api_key):
    admin = apb_grpc.AdminServiceStub(channel)
    err = await refused(admin.ListApiKeys(apb.ListApiKeysRequest(), metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.reason == "ADMIN_ONLY"
    err = await refused(admin.ListApiKeys(apb.ListApiKeysRequest()))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED and err.reason == "ADMIN_KEY_REQUIRED"
    err = await refused(admin.ReloadAuthKeys(apb.ReloadAuthKeysRequest(), metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.reason == "ADMIN_ONLY"


async def test_list_usage_pages_through_the_ledger_with_opaque_tokens(channel, api_key):
    for _ in range(3):
        await chat(channel, api_key)
    admin = apb_grpc.AdminServiceStub(channel)
    first = await admin.ListUsage(apb.ListUsageRequest(page_size=2), metadata=ADMIN)
    assert first.total_size == 3 and len(first.rows) == 2 and first.next_page_token
    second = await admin.ListUsage(apb.ListUsageRequest(page_size=2, page_token=first.next_page_token), metadata=ADMIN)
    assert len(second.rows) == 1 and second.next_page_token == ""
    rows = list(first.rows) + list(second.rows)
    assert len({r.request_id for r in rows}) == 3
    assert {(r.provider, r.model, r.status, r.completion_tokens) for r in rows} == {("primary", "tokens-2", "ok", 2)}
    err = await refused(admin.ListUsage(apb.ListUsageRequest(page_token="not-a-token"), metadata=ADMIN))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "INVALID_PAGE_TOKEN"


async def test_get_stats_counts_what_the_ledger_holds(channel, api_key):
    await chat(channel, api_key)
    stats = await apb_grpc.AdminServiceStub(channel).GetStats(apb.GetStatsRequest(), metadata=ADMIN)
    assert stats.total_requests == 1 and stats.completion_tokens == 2 and stats.active_keys >= 1
    assert [(c.name, c.requests) for c in stats.by_status] == [("ok", 1)]
    assert stats.uptime_s > 0


async def test_model_aliases_set_listed_used_and_deleted(channel, api_key, fake_openai):
    admin = apb_grpc.AdminServiceStub(channel)
    made = await admin.SetModelAlias(apb.SetModelAliasRequest(name="team-fast", models=["tokens-3", "tokens-4"]),
                                     metadata=ADMIN)
    assert (made.alias.name, list(made.alias.models), made.alias.source) == ("team-fast", ["tokens-3", "tokens-4"], "runtime")
    listed = await admin.ListModelAliases(apb.ListModelAliasesRequest(), metadata=ADMIN)
    assert ("team-fast", "runtime") in [(a.name, a.source) for a in listed.aliases]
    assert (await chat(channel, api_key, "team-fast")).text == "tok0 tok1 tok2 "  # its first member answered
    gone = await admin.DeleteModelAlias(apb.DeleteModelAliasRequest(name="team-fast"), metadata=ADMIN)
    assert list(gone.alias.models) == ["tokens-3", "tokens-4"]
    err = await refused(admin.DeleteModelAlias(apb.DeleteModelAliasRequest(name="team-fast"), metadata=ADMIN))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "ALIAS_NOT_FOUND" and err.metadata["alias"] == "team-fast"


async def test_an_alias_of_itself_is_invalid_argument_naming_the_member(channel):
    err = await refused(apb_grpc.AdminServiceStub(channel).SetModelAlias(
        apb.SetModelAliasRequest(name="loop", models=["tokens-3", "loop"]), metadata=ADMIN))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "VALIDATION_ERROR"
    assert [f for f, _ in err.field_violations] == ["models[1]"]


async def test_router_status_shows_each_key_and_what_it_served_to_any_caller(channel, api_key):
    await chat(channel, api_key)
    status = await apb_grpc.AdminServiceStub(channel).GetRouterStatus(apb.GetRouterStatusRequest(), metadata=bearer(api_key))
    key = [k for k in status.keys if k.key_id == "primary-k1"][0]
    assert (key.provider, key.kind, key.breaker, key.available, key.requests) == ("primary", "openai", "closed", True, 1)
    assert status.total_requests == 1 and status.strategy
