"""Tokens: the API tokens users mint for themselves (KeyService), and the rules they follow.

A token is an API key of kind `token` owned by a user: named, optionally expiring, with limits
and $ budgets of its own that can only be tighter than its plan's. At most TOKENS_PER_USER are
active per user. auth/key_vault.py issues it (the store keeps its hash); only its owner lists or
revokes it, and someone else's token, an admin-issued key or a revoked one is "not found" (F5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.accounts.users import check_budget, invalid
from services.auth.key_vault import KeyVault
from services.clock import Clock
from services.core.errors import FailedPrecondition, FieldViolation, Unauthenticated
from services.store.records import KIND_TOKEN, ApiKeyRecord
from services.store.store import Store

NAME_MAX = 200
TOKENS_PER_USER = 100
TTL_MAX_S = 10 * 365 * 86400
LIMIT_MAX = 10**15
LIMITS = ("rpm", "rpd", "tpd", "tpm_month")
BUDGETS = ("budget_usd_day", "budget_usd_month")


@dataclass(slots=True, frozen=True)
class TokenRequest:
    """What a user asks for: 0 means no expiry, only the plan's limit, no budget of its own."""

    name: str
    ttl_seconds: int = 0
    rpm: int = 0
    rpd: int = 0
    tpd: int = 0
    tpm_month: int = 0
    budget_usd_day: float = 0.0
    budget_usd_month: float = 0.0


class Tokens:
    def __init__(self, store: Store, vault: KeyVault, auth: Any, clock: Clock, default_tier: str,
                 tiers: Callable[[], Mapping[str, Any]]) -> None:
        self.store = store
        self.vault = vault
        self.auth = auth  # its caches are dropped after a revoke (effective at once here)
        self.clock = clock
        self.default_tier = default_tier
        self._tiers = tiers  # callable: the plans that exist now

    async def mint(self, user_id: str, req: TokenRequest) -> tuple[ApiKeyRecord, str]:
        """A new token and its secret (shown this once). VALIDATION_ERROR naming each bad field,
        ACCOUNT_UNAVAILABLE for a disabled or missing user, TOO_MANY_TOKENS at the cap."""
        name = req.name.strip()
        problems = []
        if not name or len(name) > NAME_MAX or any(ord(c) < 32 or ord(c) == 127 for c in name):
            problems.append(FieldViolation("name", f"required, at most {NAME_MAX} characters"))
        if not 0 <= req.ttl_seconds <= TTL_MAX_S:
            problems.append(FieldViolation("ttl_seconds", f"must be 0 (no expiry) to {TTL_MAX_S}"))
        for field in LIMITS:
            if not 0 <= getattr(req, field) <= LIMIT_MAX:
                problems.append(FieldViolation(field, f"must be 0 (only the plan's) to {LIMIT_MAX}"))
        for field in BUDGETS:
            problems += check_budget(field, getattr(req, field))
        if problems:
            raise invalid(problems)
        user = await self.store.get_user(user_id)
        if user is None or user.disabled:
            raise Unauthenticated("This account no longer exists or is disabled", reason="ACCOUNT_UNAVAILABLE")
        if len(await self.list(user_id)) >= TOKENS_PER_USER:
            raise FailedPrecondition(f"At most {TOKENS_PER_USER} active tokens per user; revoke one first",
                                     reason="TOO_MANY_TOKENS", metadata={"limit": str(TOKENS_PER_USER)})
        expires_at = self.clock.now() + req.ttl_seconds if req.ttl_seconds else None
        tier = user.tier if user.tier in self._tiers() else self.default_tier
        limits = dict(rpm=req.rpm, rpd=req.rpd, tpd=req.tpd, tpm_month=req.tpm_month,
                      budget_usd_day=req.budget_usd_day or None, budget_usd_month=req.budget_usd_month or None)
        return await self.vault.create(name=name, email=user.email, tier=tier, user_id=user_id, kind=KIND_TOKEN,
                                       expires_at=expires_at, limits=limits)

    async def list(self, user_id: str) -> list[ApiKeyRecord]:
        """The user's active tokens, newest first."""
        return [t for t in await self.store.list_api_keys(user_id=user_id, kind=KIND_TOKEN) if t.user_id == user_id]

    async def revoke(self, user_id: str, token_id: str) -> bool:
        """False unless `token_id` is an active token of this user's."""
        rec = await self.store.get_api_key(token_id, user_id) if token_id else None
        if rec is None or rec.user_id != user_id or rec.kind != KIND_TOKEN or \
                not await self.store.revoke_api_key(rec.id, user_id):
            return False
        self.auth.forget()  # effective at once here; other replicas within their 1 s cache
        return True
