"""Users: first sign-up is admin and closes registration, even when ten race (F6); logins."""

from __future__ import annotations

import asyncio

import pytest

from services.auth.passwords import verify_password
from services.core.errors import InvalidArgument
from services.store import EmailTaken, RegistrationClosed, UnknownTier
from tests.services.store.conftest import dump_text


async def _signups(store, emails):
    return await asyncio.gather(
        *(store.create_user(e, "correct horse") for e in emails), return_exceptions=True
    )


async def test_first_user_is_admin_and_closes_registration(store, clock):
    assert await store.registration_open() is True
    admin = await store.create_user("  Admin@Example.COM ", "s3cret-pass")
    assert (admin.role, admin.email, admin.tier) == ("admin", "admin@example.com", "basic")
    assert admin.id.startswith("usr_") and len(admin.id) == 20
    assert await store.registration_open() is False
    with pytest.raises(RegistrationClosed):
        await store.create_user("late@example.com", "pw")
    await store.set_registration_open(True)
    clock.advance(1)
    user = await store.create_user("late@example.com", "pw", tier="pro")
    assert (user.role, user.tier) == ("user", "pro")
    assert [u.id for u in await store.list_users()] == [admin.id, user.id]
    assert await store.get_user(user.id) == user
    assert await store.get_user("usr_nobody") is None


async def test_ten_racing_first_signups_make_one_admin(store):
    results = await _signups(store, [f"u{i}@example.com" for i in range(10)])
    users = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert [u.role for u in users] == ["admin"]
    assert len(errors) == 9 and all(isinstance(e, RegistrationClosed) for e in errors)
    assert [u.role for u in await store.list_users()] == ["admin"]


async def test_racing_signups_on_two_replicas_make_one_admin(make_store):
    a, b = await make_store(), await make_store()
    results = await asyncio.gather(
        _signups(a, [f"a{i}@example.com" for i in range(5)]),
        _signups(b, [f"b{i}@example.com" for i in range(5)]),
    )
    roles = [u.role for u in await a.list_users()]
    assert roles == ["admin"]
    assert sum(isinstance(r, RegistrationClosed) for part in results for r in part) == 9


async def test_racing_signups_when_open_add_users_not_admins(store):
    await store.create_user("root@example.com", "pw")
    await store.set_registration_open(True)
    results = await _signups(store, [f"u{i}@example.com" for i in range(10)])
    assert all(not isinstance(r, BaseException) and r.role == "user" for r in results)
    assert sorted(u.role for u in await store.list_users()) == ["admin"] + ["user"] * 10


async def test_email_taken_case_insensitively(store):
    await store.create_user("a@example.com", "pw")
    await store.set_registration_open(True)
    with pytest.raises(EmailTaken) as info:
        await store.create_user("A@EXAMPLE.com", "other")
    assert "a@example.com" not in str(info.value).lower()


@pytest.mark.parametrize("email", ["", "no-at", "a@b", "a b@c.io", "@c.io", "a@@c.io", "a@.io"])
async def test_invalid_email_rejected(store, email):
    with pytest.raises(InvalidArgument):
        await store.create_user(email, "pw")


async def test_empty_password_and_unknown_tier_rejected(store):
    with pytest.raises(InvalidArgument):
        await store.create_user("a@example.com", "")
    with pytest.raises(UnknownTier):
        await store.create_user("a@example.com", "pw", tier="gold")
    assert await store.list_users() == []


async def test_authenticate(store):
    admin = await store.create_user("a@example.com", "right-password")
    assert await store.authenticate("A@example.com", "right-password") == admin
    assert await store.authenticate("a@example.com", "wrong-password") is None
    assert await store.authenticate("nobody@example.com", "right-password") is None
    await store.run(lambda db: db.execute_sql("UPDATE users SET disabled = TRUE"))
    assert await store.authenticate("a@example.com", "right-password") is None


async def test_passwords_stored_as_argon2id_only(store):
    await store.create_user("a@example.com", "Tr0ub4dor&3-unique")
    [stored] = await store.run(lambda db: [r[0] for r in db.execute_sql("SELECT password_hash FROM users")])
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "Tr0ub4dor&3-unique")
    assert "Tr0ub4dor&3-unique" not in await dump_text(store)


async def test_weak_hash_is_upgraded_on_login(store):
    from argon2 import PasswordHasher

    await store.create_user("a@example.com", "pw")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    await store.run(lambda db: db.execute_sql(f"UPDATE users SET password_hash = '{weak}'"))
    assert await store.authenticate("a@example.com", "pw") is not None
    [stored] = await store.run(lambda db: [r[0] for r in db.execute_sql("SELECT password_hash FROM users")])
    assert stored != weak and "m=65536" in stored


async def test_settings(store):
    assert await store.get_setting("theme") is None
    assert await store.get_setting("theme", "dark") == "dark"
    await store.set_setting("theme", "light")
    await store.set_setting("theme", "blue")
    assert await store.get_setting("theme") == "blue"
