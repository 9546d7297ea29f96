"""Credentials over a real store: the first sign-up is admin and closes registration, even when ten race
(F6); email and password rules; logins; argon2id only at rest."""

from __future__ import annotations

import asyncio

import pytest

from services.auth.passwords import verify_password
from services.core.errors import InvalidArgument
from services.store import EmailTaken, RegistrationClosed, UnknownTier
from services.auth.credentials import Credentials
from tests.services.store.conftest import PEPPER, dump_text


async def _signups(credentials, emails):
    return await asyncio.gather(
        *(credentials.create_user(e, "correct horse") for e in emails), return_exceptions=True
    )


async def test_first_user_is_admin_and_closes_registration(store, clock, credentials):
    assert await store.registration_open() is True
    admin = await credentials.create_user("  Admin@Example.COM ", "s3cret-pass")
    assert (admin.role, admin.email, admin.tier) == ("admin", "admin@example.com", "basic")
    assert admin.id.startswith("usr_") and len(admin.id) == 20
    assert await store.registration_open() is False
    with pytest.raises(RegistrationClosed):
        await credentials.create_user("late@example.com", "pw")
    await store.set_registration_open(True)
    clock.advance(1)
    user = await credentials.create_user("late@example.com", "pw", tier="pro")
    assert (user.role, user.tier) == ("user", "pro")
    assert [u.id for u in await store.list_users()] == [admin.id, user.id]
    assert await store.get_user(user.id) == user
    assert await store.get_user("usr_nobody") is None


async def test_ten_racing_first_signups_make_one_admin(store, credentials):
    results = await _signups(credentials, [f"u{i}@example.com" for i in range(10)])
    users = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert [u.role for u in users] == ["admin"]
    assert len(errors) == 9 and all(isinstance(e, RegistrationClosed) for e in errors)
    assert [u.role for u in await store.list_users()] == ["admin"]


async def test_racing_signups_on_two_replicas_make_one_admin(make_store, clock):
    a, b = await make_store(), await make_store()
    results = await asyncio.gather(
        _signups(Credentials(a, clock, PEPPER), [f"a{i}@example.com" for i in range(5)]),
        _signups(Credentials(b, clock, PEPPER), [f"b{i}@example.com" for i in range(5)]),
    )
    roles = [u.role for u in await a.list_users()]
    assert roles == ["admin"]
    assert sum(isinstance(r, RegistrationClosed) for part in results for r in part) == 9


async def test_racing_signups_when_open_add_users_not_admins(store, credentials):
    await credentials.create_user("root@example.com", "pw")
    await store.set_registration_open(True)
    results = await _signups(credentials, [f"u{i}@example.com" for i in range(10)])
    assert all(not isinstance(r, BaseException) and r.role == "user" for r in results)
    assert sorted(u.role for u in await store.list_users()) == ["admin"] + ["user"] * 10


async def test_email_taken_case_insensitively(store, credentials):
    await credentials.create_user("a@example.com", "pw")
    await store.set_registration_open(True)
    with pytest.raises(EmailTaken) as info:
        await credentials.create_user("A@EXAMPLE.com", "other")
    assert "a@example.com" not in str(info.value).lower()


@pytest.mark.parametrize("email", ["", "no-at", "a@b", "a b@c.io", "@c.io", "a@@c.io", "a@.io"])
async def test_invalid_email_rejected(store, email, credentials):
    with pytest.raises(InvalidArgument):
        await credentials.create_user(email, "pw")


async def test_empty_password_and_unknown_tier_rejected(store, credentials):
    with pytest.raises(InvalidArgument):
        await credentials.create_user("a@example.com", "")
    with pytest.raises(UnknownTier):
        await credentials.create_user("a@example.com", "pw", tier="gold")
    assert await store.list_users() == []


async def test_authenticate(store, credentials):
    admin = await credentials.create_user("a@example.com", "right-password")
    assert await credentials.authenticate("A@example.com", "right-password") == admin
    assert await credentials.authenticate("a@example.com", "wrong-password") is None
    assert await credentials.authenticate("nobody@example.com", "right-password") is None
    await store.run(lambda db: db.execute_sql("UPDATE users SET disabled = TRUE"))
    assert await credentials.authenticate("a@example.com", "right-password") is None


async def test_passwords_stored_as_argon2id_only(store, credentials):
    await credentials.create_user("a@example.com", "Tr0ub4dor&3-unique")
    [stored] = await store.run(lambda db: [r[0] for r in db.execute_sql("SELECT password_hash FROM users")])
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "Tr0ub4dor&3-unique")
    assert "Tr0ub4dor&3-unique" not in await dump_text(store)


async def test_weak_hash_is_upgraded_on_login(store, credentials):
    from argon2 import PasswordHasher

    await credentials.create_user("a@example.com", "pw")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    await store.run(lambda db: db.execute_sql(f"UPDATE users SET password_hash = '{weak}'"))
    assert await credentials.authenticate("a@example.com", "pw") is not None
    [stored] = await store.run(lambda db: [r[0] for r in db.execute_sql("SELECT password_hash FROM users")])
    assert stored != weak and "m=65536" in stored



@pytest.mark.parametrize("email,password,fields", [
    ("not-an-address", "long-enough-pw", ["email"]),
    ("a@example.com", "short", ["password"]),
    ("bad\x01@example.com", "x" * 1025, ["email", "password"]),
])
async def test_sign_up_names_every_field_that_breaks_the_rules(store, credentials, email, password, fields):
    with pytest.raises(InvalidArgument) as info:
        await credentials.sign_up(email, password, "basic")
    assert info.value.reason == "VALIDATION_ERROR"
    assert [v.field for v in info.value.field_violations] == fields
    assert await store.list_users() == []


async def test_sign_up_normalizes_and_makes_the_first_user_admin(store, credentials):
    user = await credentials.sign_up("  Ann@Example.com ", "long-enough-pw", "basic")
    assert (user.email, user.role) == ("ann@example.com", "admin")
    with pytest.raises(RegistrationClosed):
        await credentials.sign_up("bob@example.com", "long-enough-pw", "basic")


async def test_check_and_set_password(store, credentials):
    user = await credentials.create_user("a@example.com", "old-password")
    assert await credentials.check_password(user.id, "old-password") is True
    assert await credentials.check_password(user.id, "wrong") is False
    assert await credentials.check_password("usr_nobody", "old-password") is False
    assert await credentials.check_password(user.id, "x" * 5000) is False  # over the bound: no argon2 run
    await credentials.set_password(user.id, "new-password")
    assert await credentials.authenticate("a@example.com", "new-password") == user
    assert await credentials.authenticate("a@example.com", "old-password") is None


async def test_invited_user_signs_in_only_after_accepting(store, credentials, clock):
    await credentials.create_user("admin@example.com", "admin-password")
    token, invite_hash, expires = credentials.new_invite()
    assert token.startswith("tgi_") and expires == clock.now() + 7 * 86400
    assert credentials.invite_hash(token) == invite_hash and token not in invite_hash
    assert credentials.invite_hash("tgi_" + "x" * 300) is None and credentials.invite_hash("other") is None
    user = await credentials.insert_user("new@example.com", None, "basic", "user", invite_hash, expires)
    assert user.invited
    # No password verifies against the placeholder hash, not even the empty one.
    assert await credentials.authenticate("new@example.com", "") is None
    found, until = await store.find_invite(invite_hash)
    assert (found.id, until) == (user.id, expires)
    assert await credentials.accept_invite(user.id, invite_hash, "chosen-password") is True
    assert await credentials.accept_invite(user.id, invite_hash, "again") is False  # used
    assert (await credentials.authenticate("new@example.com", "chosen-password")).id == user.id
    assert "chosen-password" not in await dump_text(store) and token not in await dump_text(store)
