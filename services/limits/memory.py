"""MemoryLimiter: the one-process limiter (exact sliding windows, calendar counters, leased reservations).

Used alone when no Redis is configured, and as the per-gateway fallback while Redis is down
(RELIABILITY C4 "local"). Nothing here awaits, so every method is atomic on the event loop:
200 concurrent hits of a 60 rpm rule admit exactly 60 (RELIABILITY C1).

State, all per instance:
- sliding windows: (subject, rule) -> deque of entries (monotonic time, amount), with a running sum;
- calendar counters: (subject, rule, period id) -> used + held; a new period is a new key, so a
  counter "resets" by being left behind and swept;
- reservations: id -> what they hold, in lease order (the lease is constant, so insertion order
  is expiry order and reaping looks only at the front).
Idle entries are swept a few per call, round robin, so memory follows activity (no leak for
subjects that never come back) and no call pays for the whole table.
"""

from __future__ import annotations

import itertools
import uuid
from collections import OrderedDict
from typing import Any

from services.clock import Clock
from services.limits.base import Decision, Reservation, Rule, RuleState, decide
from services.limits.memory_state import Counter, Entry, Held, Plan, Window
from services.limits.periods import period_id, period_reset_at, period_start

# Idle entries are examined SWEEP_BATCH at a time on every SWEEP_EVERY-th call: O(1) work per call
# (2 entries on average), every entry visited within N/2 calls, and no loop set up on most calls.
SWEEP_EVERY = 8
SWEEP_BATCH = 16


PLANS_MAX = 10_000


class MemoryLimiter:
    """The Limiter for one process; see the module docstring. Not thread-safe (one event loop)."""

    def __init__(self, clock: Clock, lease_s: float = 120.0) -> None:
        self._clock = clock
        self._lease_s = lease_s
        self._windows: OrderedDict[tuple[str, str], Window] = OrderedDict()
        self._counters: OrderedDict[tuple[str, str, str], Counter] = OrderedDict()
        self._held: dict[str, Held] = {}
        # Reaped reservations, kept one more lease: a late settle still charges its real usage once.
        self._reaped: dict[str, tuple[float, Held]] = {}
        # (period, tz) -> (start, end, id) of the period holding the last `now` asked about: the
        # calendar maths (zoneinfo, strftime) runs once per period, not on every call.
        self._periods: dict[tuple[str, str], tuple[float, float, str]] = {}
        # Reservation ids: unique per instance (a counter) and across instances (a random prefix).
        self._id_prefix = f"m-{uuid.uuid4().hex[:16]}-"
        self._ids = itertools.count(1)
        self._calls = 0  # calls since start, for sweeping every SWEEP_EVERY-th one
        # (subject, id(rules), id(token rules)) -> Plan: admit_now()'s targets, looked up once per
        # calendar period instead of on every request (the plan holds the rules, so the ids stay theirs).
        self._plans: dict[tuple[str, int, int], Plan] = {}
        # No lease can have run out before this monotonic time: _reap() is not called until then.
        self._reap_after = float("inf")

    # -- the Limiter protocol -------------------------------------------------------------------

    async def hit(self, subject: str, rules: tuple[Rule, ...]) -> Decision:
        mono, now = self._tidy()
        return self._check(subject, rules, 1, mono, now, count=True)[0]

    async def peek(self, subject: str, rules: tuple[Rule, ...]) -> Decision:
        mono, now = self._tidy()
        return self._check(subject, rules, 1, mono, now, count=False)[0]

    async def reserve(self, subject: str, rules: tuple[Rule, ...], amount: int) -> tuple[Decision, Reservation | None]:
        amount = max(0, int(amount))
        mono, now = self._tidy()
        decision, held = self._check(subject, rules, amount, mono, now, count=True, hold=True)
        return decision, held.reservation if held else None

    async def settle(self, reservation: Reservation, actual: int) -> None:
        self._finish(reservation, max(0, int(actual)))

    async def release(self, reservation: Reservation) -> None:
        self._finish(reservation, 0)

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        """Nothing to close: the state dies with the process."""

    # -- extras ---------------------------------------------------------------------------------

    def admit_now(self, subject: str, rules: tuple[Rule, ...], token_rules: tuple[Rule, ...],
                  amount: int) -> tuple[Decision | None, Decision | None, Reservation | None]:
        """`hit(rules)` and then, if it admitted, `reserve(token_rules, amount)`, as one call:
        what quotas.py does for every request, with one clock reading and one sweep instead of
        two, and no coroutine. (request decision, token decision, reservation); the token
        decision is None when the request rules refused or there are no token rules."""
        clock = self._clock  # _tidy(), written out: once per request
        mono, now = clock.monotonic(), clock.now()
        if mono >= self._reap_after:
            self._reap(mono)
        self._calls += 1
        if not self._calls % SWEEP_EVERY:
            self._sweep(mono, now)
        if not token_rules:
            if rules:
                return self._check(subject, rules, 1, mono, now, count=True)[0], None, None
            return None, None, None
        key = (subject, id(rules), id(token_rules))
        plan = self._plans.get(key)
        if plan is not None and plan.since <= now < plan.until:
            fast = self._admit_planned(plan, key, subject, rules, token_rules, max(0, int(amount)), mono, now)
            if fast is not None:
                return fast
        decision = None
        if rules:
            decision = self._check(subject, rules, 1, mono, now, count=True)[0]
            if not decision.allowed:
                return decision, None, None
        tdec, held = self._check(subject, token_rules, max(0, int(amount)), mono, now, count=True, hold=True)
        if held is None:
            return decision, tdec, None
        self._plan(key, rules, token_rules, now)  # every target exists now: the next request takes the plan
        return decision, tdec, held.reservation

    async def admit(self, subject: str, rules: tuple[Rule, ...], token_rules: tuple[Rule, ...],
                    amount: int) -> tuple[Decision | None, Decision | None, Reservation | None]:
        """admit_now() as a coroutine, for callers that hold any Limiter (degraded.py's fallback)."""
        return self.admit_now(subject, rules, token_rules, amount)

    def _admit_planned(self, plan: Plan, key: tuple[str, int, int], subject: str, rules: tuple[Rule, ...],
                       token_rules: tuple[Rule, ...], amount: int, mono: float,
                       now: float) -> tuple[Decision | None, Decision, Reservation] | None:
        """admit_now() when every rule has room, through the subject's plan: the same counts,
        reservation and decisions as the two _check() calls make, without looking each target up
        again. None when some rule has no room (or a window was swept): _check() decides then,
        nothing counted here."""
        for rule, target, win in plan.req:
            if win:
                if target.gone:
                    del self._plans[key]
                    return None
                entries = target.entries
                if entries and entries[0].ts <= mono - target.window_s:
                    target.prune(mono)
                used = target.total
            else:
                used = target.used + target.held
            if used + 1 > rule.limit:
                return None
        for rule, target, win in plan.tok:
            if win:
                if target.gone:
                    del self._plans[key]
                    return None
                entries = target.entries
                if entries and entries[0].ts <= mono - target.window_s:
                    target.prune(mono)
                used = target.total
            else:
                used = target.used + target.held
            if used + amount > rule.limit:
                return None
        # Every rule has room: counted as _check(count=True) counts (RELIABILITY C1/C3).
        decision = None
        if rules:
            best = None
            for rule, target, win in plan.req:
                if win:
                    target.entries.append(Entry(mono, 1))
                    used = target.total = target.total + 1
                    reset_at = now + (target.entries[0].ts + target.window_s - mono)
                else:
                    target.used += 1
                    used = target.used + target.held
                    reset_at = target.ends_at
                left = rule.limit - used
                if best is None or left < best[0]:  # the tightest rule, the first one on a tie (as decide())
                    best = (left, rule, used, reset_at)
            if best is None:
                decision = decide(True, [], now)
            else:
                left, rule, used, reset_at = best
                decision = Decision(True, rule.name, rule.limit, left if left > 0 else 0, used, reset_at)
        res = Reservation(subject, token_rules, amount, plan.tok_pids, False, self._id_prefix + str(next(self._ids)))
        expires = mono + self._lease_s
        counters: list[Counter] = []
        held_entries: list[tuple[Window, Entry]] = []
        self._held[res.id] = Held(res, expires, counters, held_entries)
        if expires < self._reap_after:
            self._reap_after = expires
        best = None
        for rule, target, win in plan.tok:
            if win:
                entry = Entry(mono, amount)
                target.entries.append(entry)
                used = target.total = target.total + amount
                held_entries.append((target, entry))
                reset_at = now + (target.entries[0].ts + target.window_s - mono)
            else:
                target.held += amount
                counters.append(target)
                used = target.used + target.held
                reset_at = target.ends_at
            left = rule.limit - used
            if best is None or left < best[0]:
                best = (left, rule, used, reset_at)
        if best is None:
            return decision, decide(True, [], now), res
        left, rule, used, reset_at = best
        return decision, Decision(True, rule.name, rule.limit, left if left > 0 else 0, used, reset_at), res

    def _plan(self, key: tuple[str, int, int], rules: tuple[Rule, ...], token_rules: tuple[Rule, ...],
              now: float) -> None:
        """Notes the subject's targets as _check() found them, right after it admitted and counted
        (so each exists): valid while `now` stays in every rule's calendar period."""
        subject = key[0]
        since, until = float("-inf"), float("inf")
        sides: list[tuple] = []
        pids: list[str] = []
        for side in (rules, token_rules):
            targets = []
            pids = []
            for rule in side:
                if not rule.period:
                    pids.append("")
                    if rule.limit > 0:
                        target = self._windows.get((subject, rule.name))
                        if target is None:
                            return  # not where _check() put it: no plan
                        targets.append((rule, target, True))
                    continue
                start, end, pid = self._period(rule.period, now, rule.tz)
                since, until = max(since, start), min(until, end)
                pids.append(pid)
                if rule.limit > 0:
                    target = self._counters.get((subject, rule.name, pid))
                    if target is None:
                        return
                    # The sweep drops a counter only once now >= its ends_at (which a counter
                    # shared under another tz may hold earlier): the plan ends no later.
                    until = min(until, target.ends_at)
                    targets.append((rule, target, False))
            sides.append(tuple(targets))
        if len(self._plans) >= PLANS_MAX:
            self._plans.clear()  # subjects come and go: start over rather than keep the idle ones
        self._plans[key] = Plan(rules, token_rules, since, until, sides[0], sides[1], tuple(pids))

    def admit_with_budget_now(self, subject: str, rules: tuple[Rule, ...], token_rules: tuple[Rule, ...], amount: int,
                              bsubject: str, brules: tuple[Rule, ...], bamount: int) -> tuple[
                                  Decision | None, Decision | None, Reservation | None, Decision | None, Reservation | None]:
        """admit_now(), then, if the token rules held too, `reserve(brules, bamount)` under
        `bsubject` (a caller's $ budgets, issue 16), as one call: RedisLimiter.admit_with_budget's
        outcomes. The budget decision is None when it was not reached or there are no budget rules."""
        decision, tdec, res = self.admit_now(subject, rules, token_rules, amount)
        if not brules or (decision is not None and not decision.allowed) or (tdec is not None and res is None):
            return decision, tdec, res, None, None
        mono, now = self._clock.monotonic(), self._clock.now()
        bdec, held = self._check(bsubject, brules, max(0, int(bamount)), mono, now, count=True, hold=True)
        return decision, tdec, res, bdec, held.reservation if held else None

    async def admit_with_budget(self, subject: str, rules: tuple[Rule, ...], token_rules: tuple[Rule, ...], amount: int,
                                bsubject: str, brules: tuple[Rule, ...], bamount: int) -> tuple[
                                    Decision | None, Decision | None, Reservation | None, Decision | None, Reservation | None]:
        """admit_with_budget_now() as a coroutine (degraded.py's fallback)."""
        return self.admit_with_budget_now(subject, rules, token_rules, amount, bsubject, brules, bamount)

    def finish_now(self, reservation: Reservation, actual: int) -> None:
        """settle() (actual > 0) or release() (0) without a coroutine: quotas.py, after an answer."""
        if reservation.settled:  # _finish(), written out: once per request
            return
        reservation.settled = True
        mono = self._clock.monotonic()
        if mono >= self._reap_after:
            self._reap(mono)
        held = self._held.pop(reservation.id, None)
        if held is not None:
            self._unwind(held, max(0, int(actual)), mono)
        else:
            self._charge_reaped(reservation, max(0, int(actual)))

    def owns(self, reservation: Reservation) -> bool:
        """Whether this limiter made `reservation` and has not finished it (degraded.py routes by it)."""
        return reservation.id in self._held or reservation.id in self._reaped

    async def reap(self) -> int:
        """Give back reservations past their lease (RELIABILITY B7); every call does this too."""
        return self._reap(self._clock.monotonic())

    async def snapshot(self) -> dict[str, Any]:
        """Counts per subject and rule for status pages; prunes as it reads."""
        mono = self._clock.monotonic()
        subjects: dict[str, dict[str, dict[str, Any]]] = {}
        for (subject, rule), w in self._windows.items():
            w.prune(mono)
            subjects.setdefault(subject, {})[rule] = {"used": w.total, "window_s": w.window_s}
        for (subject, rule, pid), c in self._counters.items():
            subjects.setdefault(subject, {})[f"{rule}:{pid}"] = {
                "used": c.used,
                "held": c.held,
                "period": pid,
                "reset_at": c.ends_at,
            }
        return {
            "backend": "memory",
            "windows": len(self._windows),
            "counters": len(self._counters),
            "reservations": len(self._held),
            "subjects": subjects,
        }

    # -- internals ------------------------------------------------------------------------------

    def _tidy(self) -> tuple[float, float]:
        """(monotonic, epoch) now, after giving back expired leases and sweeping a few idle entries."""
        clock = self._clock
        mono, now = clock.monotonic(), clock.now()
        if mono >= self._reap_after:
            self._reap(mono)
        self._calls += 1
        if not self._calls % SWEEP_EVERY:
            self._sweep(mono, now)
        return mono, now

    def _check(
        self, subject: str, rules: tuple[Rule, ...], amount: int, mono: float, now: float, *, count: bool,
        hold: bool = False
    ) -> tuple[Decision, Held | None]:
        # The common case, every rule with room, reads each target once and builds no RuleState;
        # anything else (a refusal, a peek) takes the general path below. What _target() and
        # _period() do is written out here: this runs twice per request, three rules each.
        targets: list[tuple[Rule, Window | Counter]] = []
        pids: list[str] = []  # each rule's period id ("" for a window), for the reservation
        windows, counters, periods = self._windows, self._counters, self._periods
        for rule in rules:
            period = rule.period
            if not period:
                pids.append("")
                if rule.limit <= 0:
                    continue  # unlimited: never refuses, no state
                wkey = (subject, rule.name)
                target = windows.get(wkey)
                if target is None:
                    target = Window(rule.window_s)
                    if count:
                        windows[wkey] = target
                target.window_s = rule.window_s  # a reloaded config applies at once
                entries = target.entries
                if entries and entries[0].ts <= mono - target.window_s:
                    target.prune(mono)
                used = target.total
            else:
                p = periods.get((period, rule.tz))
                if p is None or not p[0] <= now < p[1]:
                    p = self._period(period, now, rule.tz)
                pids.append(p[2])
                if rule.limit <= 0:
                    continue
                ckey = (subject, rule.name, p[2])
                target = counters.get(ckey)
                if target is None:
                    target = Counter(p[1])
                    if count:
                        counters[ckey] = target
                used = target.used + target.held
            if used + amount > rule.limit:
                return self._refused(subject, rules, amount, mono, now, create=count)
            targets.append((rule, target))
        if not count:
            return self._peeked(targets, amount, mono, now), None
        held = None
        if hold:
            res = Reservation(subject, rules, amount, tuple(pids), False, self._id_prefix + str(next(self._ids)))
            held = Held(res, mono + self._lease_s, [], [])
            self._held[res.id] = held
            if held.expires < self._reap_after:
                self._reap_after = held.expires
        # RELIABILITY C1/C3: all-or-nothing, counted only once every rule said yes.
        best: tuple[int, Rule, int, float] | None = None
        for rule, target in targets:
            if type(target) is Window:
                entry = Entry(mono, amount)
                target.entries.append(entry)
                target.total += amount
                if held is not None:
                    held.entries.append((target, entry))
                used = target.total
                # "frees up" for an admitted call: when the oldest counted entry leaves
                reset_at = now + (target.entries[0].ts + target.window_s - mono)
            else:
                if held is not None:
                    target.held += amount
                    held.counters.append(target)
                else:
                    target.used += amount
                used = target.used + target.held
                reset_at = target.ends_at
            left = rule.limit - used
            if best is None or left < best[0]:  # the tightest rule, the first one on a tie (as decide())
                best = (left, rule, used, reset_at)
        if best is None:
            return decide(True, [], now), held
        left, rule, used, reset_at = best
        return Decision(True, rule.name, rule.limit, max(0, left), used, reset_at), held

    def _refused(self, subject: str, rules: tuple[Rule, ...], amount: int, mono: float, now: float,
                 *, create: bool) -> tuple[Decision, Held | None]:
        """Some rule has no room: nothing is counted; the Decision names the rule that frees up last."""
        states = [self._state(r, self._target(subject, r, now, create=create), amount, mono, now)
                  for r in rules if r.limit > 0]
        return decide(False, states, now), None

    def _peeked(self, targets: list[tuple[Rule, Window | Counter]], amount: int, mono: float, now: float) -> Decision:
        return decide(True, [self._state(r, t, amount, mono, now) for r, t in targets], now)

    def _period(self, period: str, now: float, tz: str) -> tuple[float, float, str]:
        """(start, end, id) of the calendar period holding `now`, from the cache while it holds."""
        key = (period, tz)
        p = self._periods.get(key)
        if p is None or not p[0] <= now < p[1]:
            p = (period_start(period, now, tz), period_reset_at(period, now, tz), period_id(period, now, tz))
            self._periods[key] = p
        return p

    def _target(self, subject: str, rule: Rule, now: float, *, create: bool) -> Window | Counter:
        if not rule.period:
            wkey = (subject, rule.name)
            window = self._windows.get(wkey)
            if window is None:
                window = Window(rule.window_s)
                if create:
                    self._windows[wkey] = window
            window.window_s = rule.window_s  # a reloaded config applies at once
            return window
        _, ends_at, pid = self._period(rule.period, now, rule.tz)
        ckey = (subject, rule.name, pid)
        counter = self._counters.get(ckey)
        if counter is None:
            counter = Counter(ends_at)
            if create:
                self._counters[ckey] = counter
        return counter

    def _state(self, rule: Rule, target: Window | Counter, amount: int, mono: float, now: float,
               admitted: bool = False) -> RuleState:
        # `admitted`: the state after this call was counted, reported as ok whatever the sum says
        # (the Decision of an admitted call; the same as building it and then flipping ok).
        if type(target) is Window:
            target.prune(mono)
            used = target.total
            ok = used + amount <= rule.limit
            if ok or admitted:
                if not ok:
                    return RuleState(rule, used, True, now + (target.free_at(rule.limit, amount, mono) - mono))
                # "frees up" for an admitted call: when the oldest counted entry leaves
                first = target.entries[0].ts + target.window_s if target.entries else mono
                return RuleState(rule, used, True, now + (first - mono))
            free = target.free_at(rule.limit, amount, mono)
            return RuleState(rule, used, False, now + (free - mono), max(0.0, free - mono))
        used = target.used + target.held
        if admitted:
            return RuleState(rule, used, True, target.ends_at)
        ok = used + amount <= rule.limit
        return RuleState(rule, used, ok, target.ends_at, 0.0 if ok else max(0.0, target.ends_at - now))

    def _finish(self, reservation: Reservation, actual: int) -> None:
        """Settle (actual > 0) or release (actual 0) at most once (idempotent by reservation id)."""
        if reservation.settled:
            return
        reservation.settled = True
        mono = self._clock.monotonic()
        if mono >= self._reap_after:
            self._reap(mono)
        held = self._held.pop(reservation.id, None)
        if held is not None:
            self._unwind(held, actual, mono)
            return
        self._charge_reaped(reservation, actual)

    def _charge_reaped(self, reservation: Reservation, actual: int) -> None:
        gone = self._reaped.pop(reservation.id, None)
        if gone is not None:
            # The lease already refunded the hold; the request did run, so charge what it used.
            for counter in gone[1].counters:
                counter.used += actual

    def _unwind(self, held: Held, actual: int, mono: float) -> None:
        amount = held.reservation.amount
        for counter in held.counters:
            counter.held -= amount
            counter.used += actual
        for window, entry in held.entries:
            window.prune(mono)
            # An entry that has left its window stays out: the estimate was counted while it was in.
            if entry.live:
                window.total += actual - entry.amount
                entry.amount = actual

    def _reap(self, mono: float) -> int:
        reaped = 0
        while self._held:
            rid, held = next(iter(self._held.items()))
            if held.expires > mono:
                break
            del self._held[rid]
            self._unwind(held, 0, mono)  # RELIABILITY B7: an abandoned reservation comes back
            self._reaped[rid] = (mono + self._lease_s, held)
            reaped += 1
        while self._reaped:
            rid, (until, _) = next(iter(self._reaped.items()))
            if until > mono:
                break
            del self._reaped[rid]
        # Leases end in the order they were given (the lease is constant): the first left is next.
        after = next(iter(self._held.values())).expires if self._held else float("inf")
        if self._reaped:
            after = min(after, next(iter(self._reaped.values()))[0])
        self._reap_after = after
        return reaped

    def _sweep(self, mono: float, now: float) -> None:
        for _ in range(min(SWEEP_BATCH, len(self._windows))):
            wkey, window = next(iter(self._windows.items()))
            window.prune(mono)
            if window.entries:
                self._windows.move_to_end(wkey)
            else:
                del self._windows[wkey]
                window.gone = True
        for _ in range(min(SWEEP_BATCH, len(self._counters))):
            ckey, counter = next(iter(self._counters.items()))
            if counter.held == 0 and now >= counter.ends_at:
                del self._counters[ckey]  # a finished period nobody holds: the "reset"
            else:
                self._counters.move_to_end(ckey)
