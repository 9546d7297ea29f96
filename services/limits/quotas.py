"""Caller quotas from tiers: the request rules and token budgets of a principal's tier.

The pipeline calls `admit()` once per request, before routing: it counts the request against
requests/minute (sliding) and requests/day, then reserves the request's token estimate
against tokens/day and tokens/month. `finish()` settles the reservation with the real usage
(or releases it when no tokens were used), so retries and failover charge once (C3).

Counters rebuilt from the ledger (RELIABILITY C5): a token reservation that finds its counter
empty (a new period, a FLUSHALL, a restarted in-process limiter, a fallback limiter that just
took over) makes one caller per subject and period — a marker counter with limit 1, atomic on
the limiter itself, so one across replicas too — seed the day's and month's counters from the
ledger (tokens since the period began; requests for the requests/day counter). The reservation
that noticed, and any taken while the rebuild ran, are then taken again against the rebuilt
counter, so the overshoot is at most what was in flight when the counters vanished (on Redis, a
reservation whose reply overtakes the first one's; in the test, none).

Limiter round trips per gateway are bounded (`max_inflight`) when the limiter is shared: a burst
waits here, not inside a limiter call whose timeout would read the wait as a dead backend.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from services.core.principal import Principal
from services.config.schema import TierConfig
from services.core.errors import QuotaViolation, ResourceExhausted
from services.limits.base import Decision, Limiter, Reservation, Rule
from services.limits.memory import MemoryLimiter
from services.limits.periods import period_id, period_start

log = logging.getLogger("tollgate.quotas")
T = TypeVar("T")

MESSAGES = {
    "rpm": "Rate limit exceeded: requests per minute",
    "rpd": "Daily request limit exceeded",
    "tpd": "Daily token limit exceeded",
    "tpm_month": "Monthly token limit exceeded",
}
REBUILT = ".rebuilt"  # marker rule suffix: "tpd.rebuilt" counts 1 per subject and period
RECENT_S = 2.0  # how long admissions are remembered for telling old counters' requests from new ones
RECENT_MAX = 2048
MAX_INFLIGHT = 32  # limiter calls in flight per gateway, unless the limiter says (`max_inflight`)


class History(Protocol):
    """What counters are rebuilt from: the ledger (metering/ledger.py)."""

    async def tokens_since(self, key_id: str, since: float, until: float | None = None, by_user: bool = False) -> int: ...

    async def requests_since(self, key_id: str, since: float, until: float | None = None, by_user: bool = False) -> int: ...


class BudgetHold(Protocol):
    """What admit() reads of a caller's $ budget plan (accounts/budgets.py's BudgetPlan, a layer up)."""

    @property
    def subject(self) -> str: ...

    @property
    def rules(self) -> tuple[Rule, ...]: ...

    @property
    def amount(self) -> int: ...

    @property
    def fused(self) -> bool: ...


@dataclass(slots=True)
class Admission:
    decision: Decision | None  # for the X-RateLimit-* headers; None when the tier is unlimited
    reservation: Reservation | None
    budget: Reservation | None = None  # issue 16: the $ hold, settled with the real cost
    token_decision: Decision | None = None  # issue 16: the token counters' answer (quota alerts)
    # Issue 20: the $ budget's (decision, reservation) when its hold was taken in the same limiter
    # call as the quota (Budgets.complete judges it); None when the budget was not asked here.
    budget_held: tuple[Decision | None, Reservation | None] | None = None


def limit_metadata(d: Decision | None) -> dict[str, str]:
    """The X-RateLimit-* numbers as ErrorInfo metadata, so an error answer can carry them too."""
    if d is None:
        return {}
    return {
        "ratelimit_limit": str(d.limit),
        "ratelimit_remaining": str(max(0, d.remaining)),
        "ratelimit_used": str(d.used),
        "ratelimit_reset": str(math.ceil(d.reset_at)),  # as rpc/interceptors.rate_limit_metadata
    }


class Quotas:
    def __init__(self, limiter: Limiter, tiers: dict[str, TierConfig], tz: str) -> None:
        self.limiter = limiter
        self._request_rules: dict[str, tuple[Rule, ...]] = {}
        self._token_rules: dict[str, tuple[Rule, ...]] = {}
        self.set_tiers(tiers, tz)
        self._history: History | None = None
        self._now: Callable[[], float] | None = None
        self._rebuilding: dict[str, asyncio.Task[bool]] = {}  # subject -> its rebuild in progress
        # subject -> (loop time the reservation came back, the request's start): recent admissions.
        self._recent: dict[str, deque[tuple[float, float]]] = {}
        # An in-process limiter answers without awaiting: nothing to bound.
        self._gate = None if isinstance(limiter, MemoryLimiter) else \
            asyncio.Semaphore(getattr(limiter, "max_inflight", MAX_INFLIGHT))
        # Whether every limiter call completes without suspending (the in-process limiter).
        self.local = self._gate is None
        self.rebuilds = 0  # counters seeded from the ledger (tests, status pages)

    def set_tiers(self, tiers: dict[str, TierConfig], tz: str) -> None:
        self.tiers = tiers
        self._tz = tz
        self._own_rules: dict[tuple, tuple[tuple[Rule, ...], tuple[Rule, ...]]] = {}
        self._request_rules, self._token_rules = {}, {}  # a plan deleted at run time leaves no rules
        for t in tiers.values():
            req = []
            if t.rpm:
                req.append(Rule("rpm", t.rpm, window_s=60.0))
            if t.rpd:
                req.append(Rule("rpd", t.rpd, period="day", tz=tz))
            tok = []
            if t.tpd:
                tok.append(Rule("tpd", t.tpd, period="day", tz=tz))
            if t.tpm_month:
                tok.append(Rule("tpm_month", t.tpm_month, period="month", tz=tz))
            self._request_rules[t.name] = tuple(req)
            self._token_rules[t.name] = tuple(tok)

    def use_history(self, history: History, now: Callable[[], float]) -> None:
        """Where lost counters are rebuilt from (C5); without it they restart from zero."""
        self._history = history
        self._now = now


    def request_rules(self, tier: str) -> tuple[Rule, ...]:
        return self._request_rules.get(tier, ())

    def rules_for(self, p: Principal) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
        """(request rules, token rules) of a caller: its plan's, plus a token's own tighter limits
        (issue 16). The token's own counters live under the same subject (the user), named
        `k.<key id>.<rule>`, so one limiter call checks both and both must admit."""
        req, tok = self._request_rules.get(p.tier, ()), self._token_rules.get(p.tier, ())
        if not p.own:
            return req, tok
        cache_key = (p.tier, p.key_id, p.own)
        hit = self._own_rules.get(cache_key)
        if hit is None:
            rpm, rpd, tpd, tpm_month = p.own
            tz = self._tz
            pre = f"k.{p.key_id}."
            own_req = ((Rule(pre + "rpm", rpm, window_s=60.0),) if rpm else ()) + \
                      ((Rule(pre + "rpd", rpd, period="day", tz=tz),) if rpd else ())
            own_tok = ((Rule(pre + "tpd", tpd, period="day", tz=tz),) if tpd else ()) + \
                      ((Rule(pre + "tpm_month", tpm_month, period="month", tz=tz),) if tpm_month else ())
            if len(self._own_rules) > 10_000:
                self._own_rules.clear()
            hit = self._own_rules[cache_key] = (req + own_req, tok + own_tok)
        return hit

    def token_rules(self, tier: str) -> tuple[Rule, ...]:
        return self._token_rules.get(tier, ())

    async def admit(self, p: Principal, token_estimate: int, started_at: float | None = None,
                    budget: BudgetHold | None = None) -> Admission:
        """Counts the request and reserves its token estimate; `started_at` (the ledger row's
        created_at) tells, should the counter turn out to be lost, which rows it already holds.
        `budget` (a caller's $ budgets, issue 16): when it may be fused, its hold is taken in the
        same limiter call (one round trip) and left on the Admission (`budget_held`) for
        Budgets.complete() to judge; a budget is never held for a request refused here."""
        local = self._gate is None  # nothing to bound: call the limiter directly (no closure per call)
        if local and p.subject not in self._rebuilding:
            adm = self.admit_now(p, token_estimate, started_at, budget)
            return adm if type(adm) is Admission else await adm  # type: ignore[misc]
        rules, tok = self.rules_for(p) if p.own else (self._request_rules.get(p.tier, ()), self._token_rules.get(p.tier, ()))
        fuse_budget = budget is not None and budget.fused
        fused = getattr(self.limiter, "admit_with_budget" if fuse_budget else "admit", None)
        if fused is not None and (rules or tok or fuse_budget) and p.subject not in self._rebuilding:
            # A shared limiter: the request rules' hit, the token reservation (and a budget's) in one
            # call, so one round trip (RedisLimiter.admit), with the same outcome as separate calls.
            amount = max(1, token_estimate)
            sent = time.monotonic()
            if fuse_budget:
                decision, tdec, reservation, bdec, bres = await self._call(
                    lambda: fused(p.subject, rules, tok, amount, budget.subject, budget.rules, budget.amount))
            else:
                decision, tdec, reservation = await self._call(lambda: fused(p.subject, rules, tok, amount))
                bdec = bres = None
            if decision is not None and not decision.allowed:
                raise _exhausted(p, decision)
            if tdec is not None:
                if reservation is None:
                    raise _exhausted(p, tdec)  # the request slot stays counted (seed 000)
                if self._history is not None:
                    until = self._remember(p.subject, sent, started_at)
                    if tdec.used == amount or p.subject in self._rebuilding:
                        reservation = await self._recount_holding(p, tok, amount, reservation, until, bres)
            return Admission(decision, reservation, token_decision=tdec,
                             budget_held=(bdec, bres) if fuse_budget else None)
        decision = None
        if rules:
            decision = await (self.limiter.hit(p.subject, rules) if local else self._call(lambda: self.limiter.hit(p.subject, rules)))
            if not decision.allowed:
                raise _exhausted(p, decision)
        reservation = None
        if tok:
            pending = self._rebuilding.get(p.subject)
            if pending is not None:
                await asyncio.shield(pending)  # count against the rebuilt counters, not the empty ones
            amount = max(1, token_estimate)
            sent = time.monotonic()
            tdec, reservation = await (self.limiter.reserve(p.subject, tok, amount) if local
                                       else self._call(lambda: self.limiter.reserve(p.subject, tok, amount)))
            if reservation is None:
                # The request slot stays counted: a refused request still counts as a request (seed 000).
                raise _exhausted(p, tdec)
            if self._history is not None:
                until = self._remember(p.subject, sent, started_at)
                if tdec.used == amount or p.subject in self._rebuilding:
                    reservation = await self._recount(p, tok, amount, reservation, until)
            return Admission(decision, reservation, token_decision=tdec)
        return Admission(decision, reservation)

    def admit_now(self, p: Principal, token_estimate: int, started_at: float | None = None,
                  budget: BudgetHold | None = None) -> Admission | Awaitable[Admission]:
        """admit() with the in-process limiter (`local`), without a coroutine: the Admission, or, when the token counter turned out to be lost
        (RELIABILITY C5), an awaitable of it (the counter is rebuilt from the ledger first; and
        admit()'s own, which waits for it, while a rebuild for the caller is under way)."""
        if p.subject in self._rebuilding:
            return self.admit(p, token_estimate, started_at, budget)
        rules, tok = self.rules_for(p) if p.own else (self._request_rules.get(p.tier, ()), self._token_rules.get(p.tier, ()))
        fuse_budget = budget is not None and budget.fused
        # In process, both checks are one call: one clock reading and sweep, no coroutines.
        amount = max(1, token_estimate)
        sent = time.monotonic() if tok and self._history is not None else 0.0
        if fuse_budget:
            decision, tdec, reservation, bdec, bres = self.limiter.admit_with_budget_now(  # type: ignore[attr-defined]
                p.subject, rules, tok, amount, budget.subject, budget.rules, budget.amount)
        else:
            decision, tdec, reservation = self.limiter.admit_now(p.subject, rules, tok, amount)  # type: ignore[attr-defined]
            bdec = bres = None
        if decision is not None and not decision.allowed:
            raise _exhausted(p, decision)
        if tdec is not None:
            if reservation is None:
                raise _exhausted(p, tdec)  # the request slot stays counted (seed 000)
            if self._history is not None:
                until = self._remember(p.subject, sent, started_at, now=sent)  # nothing awaited since
                if tdec.used == amount or p.subject in self._rebuilding:
                    return self._admitted_recounted(p, tok, amount, reservation, until, decision, tdec,
                                                    (bdec, bres) if fuse_budget else None)
        # Positional: a class called with keywords builds a dict for them first.
        return Admission(decision, reservation, None, tdec, (bdec, bres) if fuse_budget else None)

    async def _admitted_recounted(self, p: Principal, tok: tuple[Rule, ...], amount: int, reservation: Reservation,
                                  until: float, decision: Decision | None, tdec: Decision,
                                  budget_held: tuple[Decision | None, Reservation | None] | None) -> Admission:
        """admit_now()'s end once the lost token counter is rebuilt (C5) and the reservation taken again."""
        bres = budget_held[1] if budget_held is not None else None
        reservation = await self._recount_holding(p, tok, amount, reservation, until, bres)
        return Admission(decision, reservation, None, tdec, budget_held)

    async def _recount_holding(self, p: Principal, tok: tuple[Rule, ...], amount: int, reservation: Reservation,
                               until: float, budget: Reservation | None) -> Reservation:
        """_recount() for a fused admission: should the rebuilt token counter refuse the request,
        the budget hold taken in the same call goes back (a refused request holds no budget)."""
        try:
            return await self._recount(p, tok, amount, reservation, until)
        except BaseException:
            if budget is not None:
                try:
                    if self._gate is None:
                        self.limiter.finish_now(budget, 0)  # type: ignore[attr-defined]
                    else:
                        await self._call(lambda: self.limiter.release(budget))
                except Exception:
                    log.warning("releasing a refused request's budget hold failed; its lease returns it")
            raise

    async def finish(self, adm: Admission, used_tokens: int) -> None:
        if adm.reservation is None:
            return
        res = adm.reservation
        if self._gate is None:
            self.finish_now(adm, used_tokens)
        elif used_tokens > 0:
            await self._call(lambda: self.limiter.settle(res, used_tokens))
        else:
            await self._call(lambda: self.limiter.release(res))

    def finish_now(self, adm: Admission, used_tokens: int) -> None:
        """finish() for the in-process limiter (`local`), which settles without suspending."""
        if adm.reservation is not None:
            self.limiter.finish_now(adm.reservation, used_tokens)  # type: ignore[attr-defined]

    # -- C5: counters rebuilt from the ledger -------------------------------------------------------

    def _remember(self, subject: str, sent: float, started_at: float | None, now: float | None = None) -> float:
        """Notes this admission; returns the earliest start among requests whose reservation came
        back after ours was sent (ours included). Should our reservation be the first on an empty
        counter, those may already be in the new counter, and every earlier request is not: the
        ledger rows the counter is rebuilt from are the ones started before that instant."""
        if now is None:
            now = time.monotonic()  # the clock of `sent` (not the loop's: its time is cached per iteration)
        start = self._now() if started_at is None else started_at
        recent = self._recent.get(subject)
        if recent is None:
            recent = self._recent[subject] = deque(maxlen=RECENT_MAX)
        while recent and recent[0][0] < now - RECENT_S:
            recent.popleft()
        recent.append((now, start))
        if len(self._recent) > RECENT_MAX:  # subjects come and go: forget the idle ones
            for key in [k for k, q in self._recent.items() if not q or q[-1][0] < now - RECENT_S]:
                del self._recent[key]
        # Entries are in time order, so those back since `sent` are a suffix: walk it from the newest
        # (usually just ours) instead of scanning up to RECENT_MAX entries on every admission.
        if len(recent) < 2 or recent[-2][0] < sent:
            return start  # ours alone came back since it was sent: the usual admission
        earliest = start
        for t, s in reversed(recent):
            if t < sent:
                break
            if s < earliest:
                earliest = s
        return earliest

    async def _recount(self, p: Principal, tok: tuple[Rule, ...], amount: int, reservation: Reservation,
                       until: float) -> Reservation:
        """Our reservation found the token counter empty, or was taken while it was being rebuilt:
        rebuild it from the ledger (the first one here does), then take the reservation again
        against the rebuilt counter, so that it fits or is refused like any other."""
        task = self._rebuilding.get(p.subject)
        if task is None:
            # Its own task, so a caller that goes away (client gone) does not leave it half done;
            # it ends on its own (bounded limiter and store calls), dropped from the table when done.
            task = asyncio.get_running_loop().create_task(self._rebuild(p, tok, until), name="quota-rebuild")
            self._rebuilding[p.subject] = task
            task.add_done_callback(lambda t, subject=p.subject: self._forget_rebuild(subject, t))
        seeded = await asyncio.shield(task)
        if not seeded:
            return reservation
        await self._call(lambda: self.limiter.release(reservation))
        tdec, again = await self._call(lambda: self.limiter.reserve(p.subject, tok, amount))
        if again is None:
            raise _exhausted(p, tdec)
        return again

    def _forget_rebuild(self, subject: str, task: asyncio.Task[bool]) -> None:
        if self._rebuilding.get(subject) is task:
            del self._rebuilding[subject]

    async def _rebuild(self, p: Principal, tok: tuple[Rule, ...], until: float) -> bool:
        """Seeds each lost counter once per period (a marker decides who) with what the ledger has
        for requests started before `until`; True if any was seeded."""
        assert self._history is not None and self._now is not None
        now = self._now()
        rpd = tuple(r for r in self.rules_for(p)[0] if r.period)
        seeded = False
        for rule in (*tok, *rpd):
            if rule.limit <= 0:
                continue
            marker = Rule(rule.name + REBUILT, 1, period=rule.period, tz=rule.tz)
            try:
                won = (await self._call(lambda: self.limiter.hit(p.subject, (marker,)))).allowed
                if not won:
                    continue  # this period's counter was seeded already (here or by another replica)
                since = period_start(rule.period, now, rule.tz)
                # A user's plan counters hold all of the user's rows; a token's own, its rows only.
                by_user = p.subject.startswith("u:") and not rule.name.startswith("k.")
                who = p.user_id if by_user else p.key_id
                if rule in tok:
                    spent = await self._history.tokens_since(who, since, until, by_user=by_user)
                else:
                    spent = await self._history.requests_since(who, since, until, by_user=by_user)
                if spent <= 0:
                    continue
                _, hold = await self._call(lambda: self.limiter.reserve(p.subject, (rule,), 0))
                if hold is not None:
                    await self._call(lambda: self.limiter.settle(hold, spent))
                    seeded = True
                    self.rebuilds += 1
                    log.info("quota counter %s %s for %s rebuilt from the ledger: %d", rule.name,
                             period_id(rule.period, now, rule.tz), p.key_id, spent)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a rebuild is best effort: the request goes on with the counter it has
                log.warning("quota counter %s for %s not rebuilt: %s", rule.name, p.key_id, type(e).__name__)
        return seeded

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self._gate is None:
            return await fn()
        async with self._gate:
            return await fn()


def _exhausted(p: Principal, d: Decision) -> ResourceExhausted:
    reset = dt.datetime.fromtimestamp(d.reset_at, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    own = d.rule.startswith("k.")
    msg = MESSAGES.get(d.rule.rsplit(".", 1)[-1], "Rate limit exceeded")
    if own:
        msg += " (this token's own limit)"
    return ResourceExhausted(
        msg,
        reason="RATE_LIMIT_EXCEEDED",
        metadata={"rule": d.rule, "limit": str(d.limit), "reset_time": reset, "key_id": p.key_id,
                  **limit_metadata(d)},
        retry_after_s=max(d.retry_after_s, 0.001),
        quota_violations=[QuotaViolation(subject=f"api_key:{p.key_id}", description=f"{msg} ({d.rule} limit {d.limit})")],
    )
