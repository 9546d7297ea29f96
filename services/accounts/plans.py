"""Plans at run time (issue 16 point 4, issue 17's plans and budgets page).

The plans in force are the config's (`[[tiers]]` plus the built-in defaults) overlaid with the
store's run-time ones: a plan an admin created or edited is stored (tiers.edited_at set) and its
stored values win over the config's from then on, on every replica: each replica re-reads the
edited plans every REFRESH_S seconds (one small query) and swaps its limiter rules and budgets.
A plan declared in the config cannot be deleted here (remove it from the config instead); a run-time
plan can, once no user or admin-issued key is on it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Sequence

from services.accounts.budgets import Budgets
from services.clock import Clock
from services.config.schema import TierConfig
from services.core.errors import AlreadyExists, FailedPrecondition, FieldViolation, NotFound
from services.core.poller import Changes, Poller
from services.accounts.users import BUDGET_MAX_USD, invalid
from services.limits.quotas import Quotas
from services.store.records import TierRecord
from services.store.store import Store

log = logging.getLogger(__name__)

REFRESH_S = 2.0
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LIMIT_MAX = 1_000_000_000_000  # requests or tokens; anything above is a typo, not a limit
PRICE_MAX_USD = 1_000_000.0
DESCRIPTION_MAX = 500
LIMITS = ("rpm", "rpd", "tpd", "tpm_month")


def check(rec: TierRecord) -> None:
    """INVALID_ARGUMENT naming every bad field."""
    problems: list[FieldViolation] = []
    if not NAME_RE.match(rec.name or ""):
        problems.append(FieldViolation("name", "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"))
    if len(rec.description) > DESCRIPTION_MAX:
        problems.append(FieldViolation("description", f"at most {DESCRIPTION_MAX} characters"))
    for f in LIMITS:
        v = getattr(rec, f)
        if v < 0 or v > LIMIT_MAX:
            problems.append(FieldViolation(f, f"must be a whole number from 0 (no limit) to {LIMIT_MAX}"))
    if rec.price_usd_month is not None and (not math.isfinite(rec.price_usd_month)
                                            or not 0 <= rec.price_usd_month <= PRICE_MAX_USD):
        problems.append(FieldViolation("price_usd_month", f"must be USD from 0 to {PRICE_MAX_USD:.0f} (unset = custom)"))
    for f in ("budget_usd_day", "budget_usd_month"):
        v = getattr(rec, f)
        if not math.isfinite(v) or not 0 <= v <= BUDGET_MAX_USD:
            problems.append(FieldViolation(f, f"must be USD from 0 (none) to {BUDGET_MAX_USD:.0f}"))
    if problems:
        raise invalid(problems)


def merged(config_tiers: list[TierConfig], edited: list[TierRecord]) -> dict[str, TierConfig]:
    """The config's plans, each overridden by its stored edit, plus the run-time-only plans."""
    out = {t.name: t for t in config_tiers}
    for r in edited:
        base = out.get(r.name) or TierConfig(r.name)
        out[r.name] = dataclasses.replace(
            base, rpm=r.rpm, rpd=r.rpd, tpd=r.tpd, tpm_month=r.tpm_month, description=r.description,
            price_usd_month=r.price_usd_month, budget_usd_day=r.budget_usd_day, budget_usd_month=r.budget_usd_month)
    return out


class Plans:
    def __init__(self, store: Store, quotas: Quotas, budgets: Budgets, clock: Clock,
                 config_tiers: Sequence[TierConfig], quota_timezone: str, changes: Changes | None = None) -> None:
        self.store = store
        self.quotas = quotas
        self.budgets = budgets
        self.clock = clock
        self.config_tiers = tuple(config_tiers)
        self.quota_timezone = quota_timezone
        self._poller = Poller("plans-watch", self.refresh, REFRESH_S, log, changes=changes)

    @property
    def config_names(self) -> set[str]:
        return {t.name for t in self.config_tiers}

    def apply(self, tiers: dict[str, TierConfig]) -> None:
        """Swap the plans in force on this replica (limiter rules, budgets)."""
        if tiers == self.quotas.tiers:
            return
        self.quotas.set_tiers(tiers, self.quota_timezone)
        self.budgets.tiers = self.quotas.tiers
        self.budgets._cache.clear()

    async def refresh(self) -> None:
        self.apply(merged(list(self.config_tiers), await self.store.list_edited_tiers()))

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.close()

    async def create(self, rec: TierRecord) -> TierRecord:
        check(rec)
        rec.edited_at = self.clock.now()
        if rec.name in self.quotas.tiers:
            raise AlreadyExists(f"plan {rec.name!r} already exists", reason="PLAN_EXISTS")
        await self.store.create_tier(rec)
        await self.refresh()
        return rec

    async def update(self, rec: TierRecord) -> tuple[TierConfig, TierRecord]:
        before = self.quotas.tiers.get(rec.name) if rec.name else None
        if before is None:
            raise NotFound(f"plan {rec.name!r} not found", reason="PLAN_NOT_FOUND")
        check(rec)
        rec.edited_at = self.clock.now()
        await self.store.update_tier(rec)
        await self.refresh()
        return before, rec

    async def delete(self, name: str) -> TierConfig:
        before = self.quotas.tiers.get(name) if name else None
        if before is None:
            raise NotFound(f"plan {name!r} not found", reason="PLAN_NOT_FOUND")
        if name in self.config_names:
            raise FailedPrecondition(f"plan {name!r} is declared in the config ([[tiers]] or the defaults); "
                                     "remove it there", reason="PLAN_IN_CONFIG")
        await self.store.delete_tier(name)
        await self.refresh()
        return before
