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

Counters rebuilt from the ledger (RELIABILITY C5, as token quotas do in services/limits/quotas.py):
a reservation that finds its counter empty (a FLUSHALL, a restarted in-process limiter, a new
period) makes one caller per subject, budget and period — a marker counter with limit 1 on the
limiter itself, so one across replicas — seed that budget's counter with the ledger's cost since
the period began (the user's rows for plan and user budgets, the token's rows for its own). The
reservation that noticed, and any taken while the rebuild ran, are then taken again against the
rebuilt counter, so the overshoot is at most what was in flight when the counters vanished.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from services.core.principal import Principal
from services.catalog.pricing import Catalog
from services.core.errors import FailedPrecondition, QuotaViolation, ResourceExhausted
from services.limits.base import Decision, Limiter, Reservation, Rule
from services.limits.periods import period_id, period_start

log = logging.getLogger("tollgate.budgets")

MICROS = 1_000_000
PERIOD_WORDS = {"day": "daily", "month": "monthly"}
REBUILT = ".rebuilt"  # marker rule suffix: "usd.plan.day.rebuilt" counts 1 per subject and period


class CostHistory(Protocol):
    """What $ counters are rebuilt from: the ledger (metering/ledger.py)."""

    async def cost_since(self, key_id: str, since: float, until: float | None = None, by_user: bool = False) -> float: ...


@dataclass(slots=True, frozen=True)
class BudgetLine:
    """One budget that applies to a caller, as the API shows it."""

    scope: str  # "plan" | "user" | "token"
    period: str  # "day" | "month"
    limit_usd: float
    rule: Rule


@dataclass(slots=True, frozen=True)
class BudgetPlan:
    """What one request asks of its caller's budgets (Budgets.plan), before the limiter is asked."""

    lines: tuple[BudgetLine, ...]
    subject: str  # the budgets' limiter subject
    rules: tuple[Rule, ...]
    amount: int  # the worst-case cost in micro-dollars (0 when unpriced)
    model: str
    unpriced: bool  # the model has no price: nothing to hold (or, under `refuse`, refused)
    fused: bool  # quotas.py may take the hold in the request's one limiter call
    until: float  # C5: a rebuild counts ledger rows of requests started before this instant


class Budgets:
    def __init__(self, limiter: Limiter, catalog: Catalog, tiers: dict, unpriced: str = "free",
                 tz: str = "UTC") -> None:
        self.limiter = limiter
        self.catalog = catalog
        self.tiers = tiers
        self.unpriced = unpriced
        self.tz = tz
        self._cache: dict[tuple, tuple[BudgetLine, ...]] = {}
        self._history: CostHistory | None = None
        self._now: Callable[[], float] | None = None
        self._rebuilding: dict[str, asyncio.Task[bool]] = {}  # subject -> its rebuild in progress
        self.rebuilds = 0  # budget counters seeded from the ledger (tests, status pages)

    def use_history(self, history: CostHistory, now: Callable[[], float]) -> None:
        """RELIABILITY C5: lost $ counters come back from the ledger's costs."""
        self._history = history
        self._now = now

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
        return await self.complete(p, self.plan(p, lines, model, prompt_tokens, max_output))

    def plan(self, p: Principal, lines: tuple[BudgetLine, ...], model: str, prompt_tokens: int,
             max_output: int) -> BudgetPlan:
        """What a request asks of the caller's budgets, worked out before the limiter is asked, so
        that quotas.py can take the hold in the same limiter call as the request's quota (one
        round trip, issue 20); `complete()` then judges the answer."""
        amount = self.estimate_micros(model, prompt_tokens, max_output)
        subject = self.subject(p)
        until = self._now() if self._history is not None else 0.0
        # Fused only when there is something to hold and no rebuild of this subject's counters is
        # under way (a reservation must then wait for it: complete() takes it separately).
        fused = amount is not None and subject not in self._rebuilding
        return BudgetPlan(lines, subject, tuple(line.rule for line in lines), amount or 0, model,
                          amount is None, fused, until)

    async def complete(self, p: Principal, plan: BudgetPlan, held: tuple[Decision | None, Reservation | None] | None = None
                       ) -> tuple[Reservation | None, Decision | None]:
        """The budget hold for `plan`: judged from the fused call's answer `held` (decision,
        reservation) when quotas.py took it, else taken here. Raises BUDGET_EXCEEDED when it does
        not fit, UNPRICED_MODEL_UNDER_BUDGET for an unpriced model under `refuse`."""
        if plan.unpriced:
            if self.unpriced == "refuse":
                raise FailedPrecondition(
                    f"Model {plan.model!r} has no price, and this caller is under a $ budget: it is refused "
                    "(unpriced_models = refuse)", reason="UNPRICED_MODEL_UNDER_BUDGET", metadata={"model": plan.model})
            return None, None  # unpriced_models = free: costs 0, nothing to hold
        subject, amount = plan.subject, plan.amount
        until = plan.until
        if held is None or held[0] is None:
            pending = self._rebuilding.get(subject)
            if pending is not None:
                await asyncio.shield(pending)  # count against the rebuilt counters, not the empty ones
            until = self._now() if self._history is not None else 0.0
            decision, res = await self.limiter.reserve(subject, plan.rules, amount)
        else:
            decision, res = held
        if res is None:
            raise self._exceeded(p, plan.lines, decision, amount)
        if self._history is not None and (decision.used == amount or subject in self._rebuilding):
            decision, res = await self._recount(p, plan.lines, subject, amount, res, decision, until)
        return res, decision

    # -- C5: counters rebuilt from the ledger -------------------------------------------------------

    async def _recount(self, p: Principal, lines: tuple[BudgetLine, ...], subject: str, amount: int,
                       res: Reservation, decision: Decision, until: float) -> tuple[Decision, Reservation]:
        """Our reservation found a counter empty, or was taken while it was being rebuilt: rebuild
        it (the first one here does), then take the reservation again against the rebuilt counter."""
        task = self._rebuilding.get(subject)
        if task is None:
            # Its own task, so a caller that goes away does not leave it half done.
            task = asyncio.get_running_loop().create_task(self._rebuild(p, lines, subject, until), name="budget-rebuild")
            self._rebuilding[subject] = task
            task.add_done_callback(lambda t, s=subject: self._forget_rebuild(s, t))
        seeded = await asyncio.shield(task)
        if not seeded:
            return decision, res
        await self.limiter.release(res)
        decision, again = await self.limiter.reserve(subject, tuple(line.rule for line in lines), amount)
        if again is None:
            raise self._exceeded(p, lines, decision, amount)
        return decision, again

    def _forget_rebuild(self, subject: str, task: asyncio.Task[bool]) -> None:
        if self._rebuilding.get(subject) is task:
            del self._rebuilding[subject]

    async def _rebuild(self, p: Principal, lines: tuple[BudgetLine, ...], subject: str, until: float) -> bool:
        """Seeds each lost budget counter once per period (a marker decides who, across replicas)
        with the ledger's cost of the requests started before `until`; True if any was seeded."""
        assert self._history is not None and self._now is not None
        now = self._now()
        seeded = False
        for line in lines:
            rule = line.rule
            marker = Rule(rule.name + REBUILT, 1, period=rule.period, tz=rule.tz)
            try:
                if not (await self.limiter.hit(subject, (marker,))).allowed:
                    continue  # this period's counter was seeded already (here or by another replica)
                since = period_start(rule.period, now, rule.tz)
                # Plan and user budgets hold all of the user's rows; a token's own (or a key with no user), its rows.
                by_user = subject.startswith("$u:") and line.scope != "token"
                who = p.user_id if by_user else p.key_id
                spent = max(0, round(await self._history.cost_since(who, since, until, by_user=by_user) * MICROS))
                if spent <= 0:
                    continue
                _, hold = await self.limiter.reserve(subject, (rule,), 0)
                if hold is not None:
                    await self.limiter.settle(hold, spent)
                    seeded = True
                    self.rebuilds += 1
                    log.info("budget counter %s %s for %s rebuilt from the ledger: $%.6f", rule.name,
                             period_id(rule.period, now, rule.tz), p.key_id, spent / MICROS)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # best effort: the request goes on with the counter it has
                log.warning("budget counter %s for %s not rebuilt: %s", rule.name, p.key_id, type(e).__name__)
        return seeded

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
