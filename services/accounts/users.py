"""The operator's user management: plans, roles, state, deletion, invites (issue 16).

Every change of password, role, plan or state revokes the user's sessions (signin.py) and drops
this replica's auth caches; other replicas see it within the authenticator's one-second cache,
for sessions and API tokens alike (a token's plan and its owner's state are read with the key).
The last active admin cannot be demoted, suspended or deleted (LAST_ADMIN, 409 on REST).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from services.accounts.signin import SignIn
from services.auth.credentials import Credentials
from services.core.errors import FieldViolation, InvalidArgument, NotFound, Unauthenticated
from services.store.records import (
    ROLE_ADMIN,
    ROLE_USER,
    STATE_ACTIVE,
    STATE_DELETED,
    STATE_SUSPENDED,
    UsageFilter,
    UserRecord,
)

BUDGET_MAX_USD = 1_000_000_000.0  # anything above is a typo, not a budget
ROLES = (ROLE_ADMIN, ROLE_USER)
SETTABLE_STATES = (STATE_ACTIVE, STATE_SUSPENDED)


def month_start(now: float) -> float:
    d = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    return dt.datetime(d.year, d.month, 1, tzinfo=dt.timezone.utc).timestamp()


def invalid(problems: list[FieldViolation]) -> InvalidArgument:
    return InvalidArgument("; ".join(f"{p.field}: {p.description}" for p in problems), reason="VALIDATION_ERROR",
                           field_violations=problems)


def check_budget(field: str, value: float) -> list[FieldViolation]:
    if value != value or value < 0 or value > BUDGET_MAX_USD:
        return [FieldViolation(field, f"must be a number of USD from 0 (none) to {BUDGET_MAX_USD:.0f}")]
    return []


@dataclass(slots=True)
class Created:
    user: UserRecord
    invite_token: str = ""


class Accounts:
    def __init__(self, store, credentials: Credentials, signin: SignIn, auth, clock, plans: Any) -> None:
        self.store = store
        self.credentials = credentials  # passwords and invite tokens: hashed there, never here
        self.signin = signin
        self.auth = auth
        self.clock = clock
        self._plans = plans  # callable: the plan names that exist now

    async def spend_month(self, user_id: str) -> dict[str, Any]:
        return await self.store.usage_totals(UsageFilter(user_id=user_id, since=month_start(self.clock.now())))

    async def create(self, email: str, plan: str, role: str, password: str) -> Created:
        problems = []
        if plan not in self._plans():
            problems.append(FieldViolation("plan", f"unknown plan; one of {', '.join(sorted(self._plans()))}"))
        role = role or ROLE_USER
        if role not in ROLES:
            problems.append(FieldViolation("role", "must be admin or user"))
        if password and not 8 <= len(password) <= 1024:
            problems.append(FieldViolation("password", "must be 8-1024 characters"))
        if problems:
            raise invalid(problems)
        token, invite_hash, expires = "", None, None
        if not password:
            token, invite_hash, expires = self.credentials.new_invite()
        try:
            user = await self.credentials.insert_user(email, password or None, plan, role, invite_hash, expires)
        except InvalidArgument as e:
            if e.reason not in ("INVALID_ARGUMENT",):
                raise
            raise invalid([FieldViolation("email", "must be an email address")]) from None
        return Created(user, token)

    async def update(self, user_id: str, plan: str = "", role: str = "", state: str = "",
                     budget_usd_day: float | None = None, budget_usd_month: float | None = None
                     ) -> tuple[UserRecord, UserRecord]:
        problems: list[FieldViolation] = []
        changes: dict[str, Any] = {}
        if plan:
            if plan not in self._plans():
                problems.append(FieldViolation("plan", f"unknown plan; one of {', '.join(sorted(self._plans()))}"))
            changes["tier"] = plan
        if role:
            if role not in ROLES:
                problems.append(FieldViolation("role", "must be admin or user"))
            changes["role"] = role
        if state:
            if state not in SETTABLE_STATES:
                problems.append(FieldViolation("state", "must be active or suspended (DELETE removes a user)"))
            changes["state"] = state
        for field, value in (("budget_usd_day", budget_usd_day), ("budget_usd_month", budget_usd_month)):
            if value is not None:
                problems += check_budget(field, value)
                changes[field] = value or None
        if problems:
            raise invalid(problems)
        done = await self.store.update_user(user_id, changes) if changes else None
        if done is None:
            user = await self.store.get_user(user_id) if not changes else None
            if user is None or user.state == STATE_DELETED:
                raise NotFound("User not found", reason="USER_NOT_FOUND")
            return user, user
        before, after = done
        if (before.tier, before.role, before.state) != (after.tier, after.role, after.state):
            await self.signin.end_all(user_id)  # plan, role or state changed: sign in again
        self.auth.forget()  # tokens pick up the new plan/state here at once, elsewhere within 1 s
        return before, after

    async def delete(self, user_id: str) -> UserRecord:
        done = await self.store.update_user(user_id, {"state": STATE_DELETED, "deleted_at": self.clock.now()})
        if done is None:
            raise NotFound("User not found", reason="USER_NOT_FOUND")
        await self.store.revoke_user_keys(user_id)
        await self.signin.end_all(user_id)
        self.auth.forget()
        return done[0]

    async def accept_invite(self, token: str, password: str) -> UserRecord:
        if not 8 <= len(password) <= 1024:
            raise invalid([FieldViolation("password", "must be 8-1024 characters")])
        h = self.credentials.invite_hash(token)
        if h is None:
            raise Unauthenticated("This invite is not valid (used, expired or unknown)", reason="INVITE_INVALID")
        found = await self.store.find_invite(h)
        if found is None or (found[1] is not None and found[1] <= self.clock.now()):
            raise Unauthenticated("This invite is not valid (used, expired or unknown)", reason="INVITE_INVALID")
        user = found[0]
        if not await self.credentials.accept_invite(user.id, h, password):
            raise Unauthenticated("This invite is not valid (used, expired or unknown)", reason="INVITE_INVALID")
        await self.signin.end_all(user.id)
        return user
