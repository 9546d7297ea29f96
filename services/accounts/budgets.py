"""$ budgets (issue 16): per plan, per user and per token, per UTC day and calendar month.

Spend is the ledger's catalogue cost. A request reserves its worst-case cost (prompt estimate
at the input price plus its max output at the output price) under every budget that applies,
in micro-dollars, with the same limiter primitives as token quotas: one atomic reservation
(the Lua reserve script on Redis, so replicas share one budget), settled with the real cost
when the answer is metered, released when nothing was used. A request that does not fit is
refused before any provider is called (RESOURCE_EXHAUSTED, reason BUDGET_EXCEEDED, the budget
named). Callers without any budget cost nothing here: no limiter call.

Counters are per subject: a user's plan and user budgets under `$u:<user id>`, so all of that
user's tokens share them; a token's own under the same subject as `usd.k.<key id>.<period>`.
A key with no user is its own subject `$ak:<key id>`.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from services.auth.principal import Principal
from services.catalog.pricing import Catalog
from services.core.errors import FailedPrecondition, QuotaViolation, ResourceExhausted
from services.limits.base import Decision, Limiter, Reservation, Rule

MICROS = 1_000_000
PERIOD_WORDS = {"day": "daily", "month": "monthly"}


@dataclass(slots=True, frozen=True)
class BudgetLine:
    """One budget that applies to a caller, as the API shows it."""

    scope: str  # "plan" | "user" | "token"
    period: str  # "day" | "month"
    limit_usd: float
    rule: Rule


class Budgets:
    def __init__(self, limiter: Limiter, catalog: Catalog, tiers: dict, unpriced: str = "free",
                 tz: str = "UTC") -> None:
        self.limiter = limiter
        self.catalog = catalog
        self.tiers = tiers
        self.unpriced = unpriced
        self.tz = tz
        self._cache: dict[tuple, tuple[BudgetLine, ...]] = {}

    @staticmethod
    def subject(p: Principal) -> str:
        return "$u:" + p.user_id if p.user_id and p.kind in ("token", "session") else "$ak:" + p.key_id

    def lines(self, p: Principal) -> tuple[BudgetLine, ...]:
        """Every budget that applies to the caller (cached per tier, key and budget numbers)."""
        tier = self.tiers.get(p.tier)
        plan = (getattr(tier, "budget_usd_day", 0.0), getattr(tier, "budget_usd_month", 0.0)) if tier else (0.0, 0.0)
        if not p.budgets and not any(plan):
            return ()
        key = (p.tier, p.key_id, p.budgets, plan)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        user_day, user_month, tok_day, tok_month = p.budgets or (0.0, 0.0, 0.0, 0.0)
        out = []
        for scope, period, usd in (("plan", "day", plan[0]), ("plan", "month", plan[1]), ("user", "day", user_day),
                                   ("user", "month", user_month), ("token", "day", tok_day), ("token", "month", tok_month)):
            if usd and usd > 0:
                name = f"usd.k.{p.key_id}.{period}" if scope == "token" else f"usd.{scope}.{period}"
                out.append(BudgetLine(scope, period, usd, Rule(name, max(1, round(usd * MICROS)), period=period, tz=self.tz)))
        if len(self._cache) > 10_000:
            self._cache.clear()
        hit = self._cache[key] = tuple(out)
        return hit

    def estimate_micros(self, model: str, prompt_tokens: int, max_output: int) -> int | None:
        """The worst-case cost in micro-dollars; None when the model has no price."""
        p_in, p_out = self.catalog.price(model)
        if not p_in and not p_out:
            return None
        return max(1, math.ceil(prompt_tokens * p_in + max_output * p_out))  # per-Mtok prices: micro-dollars

    async def admit(self, p: Principal, model: str, prompt_tokens: int, max_output: int) -> Reservation | None:
        lines = self.lines(p)
        if not lines:
            return None
        res, decision = await self.admit_with_decision(p, lines, model, prompt_tokens, max_output)
        return res

    async def admit_with_decision(self, p: Principal, lines: tuple[BudgetLine, ...], model: str, prompt_tokens: int,
                                  max_output: int) -> tuple[Reservation | None, Decision | None]:
        """The hold and the limiter's answer (the tightest budget after it: for the soft-threshold alert)."""
        amount = self.estimate_micros(model, prompt_tokens, max_output)
        if amount is None:
            if self.unpriced == "refuse":
                raise FailedPrecondition(
                    f"Model {model!r} has no price, and this caller is under a $ budget: it is refused "
                    "(unpriced_models = refuse)", reason="UNPRICED_MODEL_UNDER_BUDGET", metadata={"model": model})
            return None, None  # unpriced_models = free: costs 0, nothing to hold
        rules = tuple(line.rule for line in lines)
        decision, res = await self.limiter.reserve(self.subject(p), rules, amount)
        if res is None:
            raise self._exceeded(p, lines, decision, amount)
        return res, decision

    async def finish(self, res: Reservation, cost_usd: float) -> None:
        micros = max(0, round(cost_usd * MICROS))
        if micros:
            await self.limiter.settle(res, micros)
        else:
            await self.limiter.release(res)

    def finish_now(self, res: Reservation, cost_usd: float) -> None:
        self.limiter.finish_now(res, max(0, round(cost_usd * MICROS)))  # type: ignore[attr-defined]

    async def spent(self, p: Principal) -> list[tuple[BudgetLine, Decision]]:
        """Each budget and its live counter (for /api/quota and alerts)."""
        out = []
        for line in self.lines(p):
            out.append((line, await self.limiter.peek(self.subject(p), (line.rule,))))
        return out

    def _exceeded(self, p: Principal, lines: tuple[BudgetLine, ...], d: Decision, amount: int) -> ResourceExhausted:
        line = next((x for x in lines if x.rule.name == d.rule), lines[0])
        spent = d.used / MICROS
        reset = dt.datetime.fromtimestamp(d.reset_at, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        msg = (f"The {PERIOD_WORDS[line.period]} {line.scope} budget of ${line.limit_usd:.2f} would be exceeded: "
               f"${spent:.4f} spent or held, this request may cost up to ${amount / MICROS:.4f}")
        budget = f"{line.scope}_{line.period}"
        return ResourceExhausted(
            msg, reason="BUDGET_EXCEEDED",
            metadata={"budget": budget, "limit_usd": f"{line.limit_usd:.2f}", "spent_usd": f"{spent:.6f}",
                      "reset_time": reset},
            retry_after_s=max(1.0, d.reset_at - dt.datetime.now(dt.timezone.utc).timestamp()),
            quota_violations=[QuotaViolation(subject=f"budget:{budget}", description=msg)])
