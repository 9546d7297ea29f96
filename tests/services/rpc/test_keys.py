"""services/rpc/keys.py: KeyService over a real port: sign-up and sign-in (validation naming every
field, one answer for every bad credential, the per-account failure budget), sessions, tokens a
session mints and revokes, one's own provider keys, quota, and who may call what."""

from __future__ import annotations

import grpc
import pytest

from tests.services.rpc.conftest import bearer, refused
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import inference_service_pb2_grpc as ipb_grpc
from tollgate.v1 import key_service_pb2 as kpb
from tollgate.v1 import key_service_pb2_grpc as kpb_grpc

PASSWORD = "correct horse battery"


@pytest.fixture
def keys(channel) -> kpb_grpc.KeyServiceStub:
    return kpb_grpc.KeyServiceStub(channel)


@pytest.fixture
async def session(keys) -> kpb.RegisterResponse:
    """The first sign-up (always accepted): a user and a session token."""
    return await keys.Register(kpb.RegisterRequest(email="Ann@Example.com", password=PASSWORD))


async def chat(channel, key: str) -> ipb.ChatResponse:
    inp = pb.ChatInput(model="tokens-2", messages=[pb.Message(role=pb.ROLE_USER, text="hi")])
    return await ipb_grpc.InferenceServiceStub(channel).Chat(ipb.ChatRequest(input=inp), metadata=bearer(key))


async def test_register_names_every_bad_field(keys):
    err = await refused(keys.Register(kpb.RegisterRequest(email="not an address", password="short")))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "VALIDATION_ERROR"
    assert [f for f, _ in err.field_violations] == ["email", "password"]


async def test_a_sign_up_is_signed_in_and_its_session_is_listed_as_current(keys, session):
    assert session.user.email == "ann@example.com" and session.session_token and session.csrf_token
    me = await keys.GetMe(kpb.GetMeRequest(), metadata=bearer(session.session_token))
    assert (me.user.id, me.user.email, me.session_id) == (session.user.id, "ann@example.com", session.session_id)
    listed = await keys.ListSessions(kpb.ListSessionsRequest(), metadata=bearer(session.session_token))
    assert [(s.id, s.current) for s in listed.sessions] == [(session.session_id, True)]


async def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(keys, session):
    wrong = await refused(keys.Login(kpb.LoginRequest(email="ann@example.com", password="not the password")))
    unknown = await refused(keys.Login(kpb.LoginRequest(email="bob@example.com", password="not the password")))
    for err in (wrong, unknown):
        assert (err.code, err.reason, err.message) == (
            grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS", "Invalid email or password")
    err = await refused(keys.Login(kpb.LoginRequest()))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.field_violations == [("email", "required"), ("password", "required")]
    ok = await keys.Login(kpb.LoginRequest(email=" ANN@example.com", password=PASSWORD))
    assert ok.user.id == session.user.id and ok.session_id != session.session_id


async def test_ten_failed_sign_ins_a_minute_then_the_account_is_rate_limited(keys, session):
    for _ in range(10):
        assert (await refused(keys.Login(kpb.LoginRequest(email="ann@example.com", password="guess-guess")))).reason \
            == "INVALID_CREDENTIALS"
    err = await refused(keys.Login(kpb.LoginRequest(email="ann@example.com", password=PASSWORD)))  # even the right one
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason == "LOGIN_RATE_LIMITED"
    assert err.retry_after_s is not None and err.retry_after_s >= 1


async def test_a_session_mints_a_token_that_works_until_revoked(channel, keys, session):
    s = bearer(session.session_token)
    made = await keys.CreateToken(kpb.CreateTokenRequest(name="ci", rpm=5), metadata=s)
    assert made.secret.startswith(made.token.prefix) and made.token.rpm == 5
    assert (await chat(channel, made.secret)).text == "tok0 tok1 "
    err = await refused(keys.CreateToken(kpb.CreateTokenRequest(name="again"), metadata=bearer(made.secret)))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.reason == "SESSION_REQUIRED"
    assert [t.id for t in (await keys.ListTokens(kpb.ListTokensRequest(), metadata=s)).tokens] == [made.token.id]
    await keys.RevokeToken(kpb.RevokeTokenRequest(id=made.token.id), metadata=s)
    assert (await refused(chat(channel, made.secret))).code == grpc.StatusCode.UNAUTHENTICATED
    err = await refused(keys.RevokeToken(kpb.RevokeTokenRequest(id=made.token.id), metadata=s))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "TOKEN_NOT_FOUND"


async def test_create_token_names_every_bad_field(keys, session):
    err = await refused(keys.CreateToken(kpb.CreateTokenRequest(name="", ttl_seconds=-1, rpm=-5),
                                         metadata=bearer(session.session_token)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.field_violations] == ["name", "ttl_seconds", "rpm"]


async def test_user_calls_refuse_a_key_with_no_user(keys, api_key):
    for call in (keys.ListTokens(kpb.ListTokensRequest(), metadata=bearer(api_key)),
                 keys.ListProviderKeys(kpb.ListProviderKeysRequest(), metadata=bearer(api_key)),
                 keys.ListSessions(kpb.ListSessionsRequest(), metadata=bearer(api_key))):
        err = await refused(call)
        assert err.code == grpc.StatusCode.PERMISSION_DENIED and err.reason == "USER_REQUIRED"


async def test_own_provider_keys_are_validated_masked_and_deleted(keys, session):
    s = bearer(session.session_token)
    err = await refused(keys.CreateProviderKey(kpb.CreateProviderKeyRequest(
        provider="nope", key="has spaces in it", models=["a"], default_model="b"), metadata=s))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.field_violations] == ["provider", "key", "default_model"]
    made = (await keys.CreateProviderKey(kpb.CreateProviderKeyRequest(
        provider="groq", key="gsk-ann-0123456789abcdef", models=["llama-3.1-8b"]), metadata=s)).key
    assert made.provider == "groq" and "0123456789abcdef" not in made.masked_key and list(made.models) == ["llama-3.1-8b"]
    assert [k.id for k in (await keys.ListProviderKeys(kpb.ListProviderKeysRequest(), metadata=s)).keys] == [made.id]
    await keys.DeleteProviderKey(kpb.DeleteProviderKeyRequest(id=made.id), metadata=s)
    err = await refused(keys.DeleteProviderKey(kpb.DeleteProviderKeyRequest(id=made.id), metadata=s))
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "PROVIDER_KEY_NOT_FOUND"


async def test_quota_shows_the_plans_limits_and_what_was_used(channel, keys, api_key):
    await chat(channel, api_key)
    q = await keys.GetQuota(kpb.GetQuotaRequest(), metadata=bearer(api_key))
    limits = {x.name: x for x in q.limits}
    assert q.plan == "enterprise"
    rpm = limits["requests_per_minute"]
    assert (rpm.limit, rpm.used, rpm.remaining) == (1000, 1, 999) and rpm.reset_at > 0
    assert limits["tokens_per_day"].limit == 10_000_000 and limits["tokens_per_day"].used > 0


async def test_logout_ends_a_session_and_a_token_cannot_log_out(keys, session, api_key):
    err = await refused(keys.Logout(kpb.LogoutRequest(), metadata=bearer(api_key)))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.reason == "SESSION_REQUIRED"
    await keys.Logout(kpb.LogoutRequest(), metadata=bearer(session.session_token))
    err = await refused(keys.GetMe(kpb.GetMeRequest(), metadata=bearer(session.session_token)))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED


async def test_change_password_checks_the_current_one_and_keeps_only_this_session(keys, session):
    s = bearer(session.session_token)
    other = await keys.Login(kpb.LoginRequest(email="ann@example.com", password=PASSWORD))
    err = await refused(keys.ChangePassword(kpb.ChangePasswordRequest(current_password="wrong-wrong",
                                                                      new_password="a new pass phrase"), metadata=s))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and [f for f, _ in err.field_violations] == ["current_password"]
    await keys.ChangePassword(kpb.ChangePasswordRequest(current_password=PASSWORD, new_password="a new pass phrase"),
                              metadata=s)
    assert (await keys.GetMe(kpb.GetMeRequest(), metadata=s)).user.id == session.user.id
    assert (await refused(keys.GetMe(kpb.GetMeRequest(), metadata=bearer(other.session_token)))).code \
        == grpc.StatusCode.UNAUTHENTICATED
    assert (await keys.Login(kpb.LoginRequest(email="ann@example.com", password="a new pass phrase"))).user.id \
        == session.user.id
