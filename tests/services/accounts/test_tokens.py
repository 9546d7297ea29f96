"""Tokens over a real store: the rules a user's own API token follows (names, expiry, limits,
budgets, the per-user cap), its plan, and that only its owner lists or revokes it (F5)."""

from __future__ import annotations

import pytest

from services.accounts.tokens import LIMIT_MAX, TOKENS_PER_USER, TTL_MAX_S, TokenRequest, Tokens
from services.auth.credentials import Credentials
from services.auth.key_vault import KeyVault
from services.core.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from tests.services.store.conftest import PEPPER


class Caches:
    """The authenticator's side of a revoke: how often its caches were dropped."""

    def __init__(self) -> None:
        self.forgotten = 0

    def forget(self) -> None:
        self.forgotten += 1


@pytest.fixture
async def world(store, clock):
    credentials = Credentials(store, clock, PEPPER)
    ann = await credentials.create_user("ann@example.com", "password-ann")
    await store.set_registration_open(True)
    bob = await credentials.create_user("bob@example.com", "password-bob", tier="pro")
    vault, caches = KeyVault(store, PEPPER, clock), Caches()
    tokens = Tokens(store, vault, caches, clock, "basic", lambda: {"basic": None, "pro": None})
    return tokens, vault, caches, ann, bob


async def test_a_minted_token_is_the_users_with_its_own_limits(world, clock) -> None:
    tokens, vault, _, ann, bob = world
    rec, secret = await tokens.mint(ann.id, TokenRequest("  ci  ", ttl_seconds=3600, rpm=5, budget_usd_day=2.5))
    assert (rec.name, rec.kind, rec.user_id, rec.email, rec.tier) == ("ci", "token", ann.id, ann.email, "basic")
    assert (rec.rpm, rec.rpd, rec.budget_usd_day, rec.budget_usd_month) == (5, 0, 2.5, None)
    assert rec.expires_at == clock.now() + 3600
    assert await vault.find(secret) == rec
    assert await tokens.list(ann.id) == [rec] and await tokens.list(bob.id) == []
    theirs, _ = await tokens.mint(bob.id, TokenRequest("b"))
    assert (theirs.tier, theirs.expires_at) == ("pro", None)


@pytest.mark.parametrize("req,fields", [
    (TokenRequest(""), ["name"]),
    (TokenRequest("x" * 201), ["name"]),
    (TokenRequest("tab\there"), ["name"]),
    (TokenRequest("n", ttl_seconds=-1), ["ttl_seconds"]),
    (TokenRequest("n", ttl_seconds=TTL_MAX_S + 1, rpm=-1, tpd=LIMIT_MAX + 1), ["ttl_seconds", "rpm", "tpd"]),
    (TokenRequest("n", budget_usd_day=-1.0, budget_usd_month=float("nan")), ["budget_usd_day", "budget_usd_month"]),
])
async def test_every_bad_field_is_named(world, req, fields) -> None:
    tokens, _, _, ann, _ = world
    with pytest.raises(InvalidArgument) as info:
        await tokens.mint(ann.id, req)
    assert info.value.reason == "VALIDATION_ERROR"
    assert [v.field for v in info.value.field_violations] == fields
    assert await tokens.list(ann.id) == []


async def test_a_disabled_or_missing_user_mints_nothing(world, store) -> None:
    tokens, _, _, _, bob = world
    with pytest.raises(Unauthenticated):
        await tokens.mint("usr_nobody", TokenRequest("n"))
    await store.update_user(bob.id, {"state": "suspended"})
    with pytest.raises(Unauthenticated) as info:
        await tokens.mint(bob.id, TokenRequest("n"))
    assert info.value.reason == "ACCOUNT_UNAVAILABLE"


async def test_the_per_user_cap_counts_active_tokens(world, monkeypatch) -> None:
    tokens, _, _, ann, _ = world
    monkeypatch.setattr("services.accounts.tokens.TOKENS_PER_USER", 2)
    first, _ = await tokens.mint(ann.id, TokenRequest("1"))
    await tokens.mint(ann.id, TokenRequest("2"))
    with pytest.raises(FailedPrecondition) as info:
        await tokens.mint(ann.id, TokenRequest("3"))
    assert info.value.reason == "TOO_MANY_TOKENS"
    assert await tokens.revoke(ann.id, first.id)
    await tokens.mint(ann.id, TokenRequest("3"))  # a revoked one frees its place
    assert TOKENS_PER_USER == 100  # the real cap, untouched outside this test


async def test_only_the_owner_revokes_and_the_caches_are_dropped(world) -> None:
    tokens, vault, caches, ann, bob = world
    rec, secret = await tokens.mint(ann.id, TokenRequest("n"))
    admin_key, _ = await vault.create(name="admin-made", email="e", tier="basic", user_id=ann.id)  # kind api
    for user, token_id in ((bob.id, rec.id), (ann.id, admin_key.id), (ann.id, ""), (ann.id, "ak_unknown")):
        assert await tokens.revoke(user, token_id) is False
    assert caches.forgotten == 0 and await vault.find(secret) == rec
    assert await tokens.revoke(ann.id, rec.id) is True
    assert caches.forgotten == 1 and await vault.find(secret) is None
    assert await tokens.revoke(ann.id, rec.id) is False  # already revoked
