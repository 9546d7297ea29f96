"""Seed 003's demo accounts for trying the console (`make demo`, or TOLLGATE_DEMO_DATA=1).

Off by default: `make run` starts empty. When on, every start makes sure the four users of
seed 003's table exist on their plans and gives each a fresh random password, which the start-up
banner prints (the only place a password is ever shown); other users are left alone.
"""

from __future__ import annotations

import secrets

from services.store.records import STATE_ACTIVE

# Seed 003's "Users (Demo)" table; the admin has no plan there: enterprise (unlimited tokens).
DEMO_USERS = (
    ("admin@llm-gateway.io", "admin", "enterprise"),
    ("demo@startup.ai", "user", "startup"),
    ("dev@enterprise.com", "user", "growth"),
    ("test@free.com", "user", "explorer"),
)


async def seed_demo_users(store, credentials, signin) -> list[tuple[str, str, str, str]]:
    """(email, role, plan, password) for each demo user, created or reset now."""
    out = []
    for email, role, plan in DEMO_USERS:
        password = secrets.token_urlsafe(9)
        found = await store.find_user_by_email(email)
        if found is None:
            await credentials.insert_user(email, password, plan, role)
        else:
            await store.update_user(found.id, {"tier": plan, "role": role, "state": STATE_ACTIVE})
            await credentials.set_password(found.id, password)
            await signin.end_all(found.id)
        out.append((email, role, plan, password))
    return out


def demo_banner(users: list[tuple[str, str, str, str]]) -> str:
    lines = ["  demo data (seed 003): sign in to the console with one of these (new passwords on every start):"]
    lines += [f"    {email:<24} {password:<14} {role:<5} plan {plan}" for email, role, plan, password in users]
    return "\n".join(lines)
