"""Caller quotas from tiers: the request rules and token budgets of a principal's tier.

The pipeline calls `admit()` once per request, before routing: it counts the request against
requests/minute (sliding) and requests/day, then reserves the request's token estimate
against tokens/day and tokens/month. `finish()` settles the reservation with the real usage
(or releases it when no tokens were used), so retries and failover charge once (C3).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from services.auth.principal import Principal
from services.config.schema import TierConfig
from services.core.errors import QuotaViolation, ResourceExhausted
from services.limits.base import Decision, Limiter, Reservation, Rule

MESSAGES = {
    "rpm": "Rate limit exceeded: requests per minute",
    "rpd": "Daily request limit exceeded",
    "tpd": "Daily token limit exceeded",
    "tpm_month": "Monthly token limit exceeded",
}


@dataclass(slots=True)
class Admission:
    decision: Decision | None  # for the X-RateLimit-* headers; None when the tier is unlimited
    reservation: Reservation | None


class Quotas:
    def __init__(self, limiter: Limiter, tiers: dict[str, TierConfig], tz: str) -> None:
        self.limiter = limiter
        self._request_rules: dict[str, tuple[Rule, ...]] = {}
        self._token_rules: dict[str, tuple[Rule, ...]] = {}
        self.set_tiers(tiers, tz)

    def set_tiers(self, tiers: dict[str, TierConfig], tz: str) -> None:
        self.tiers = tiers
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

    def request_rules(self, tier: str) -> tuple[Rule, ...]:
        return self._request_rules.get(tier, ())

    async def admit(self, p: Principal, token_estimate: int) -> Admission:
        rules = self._request_rules.get(p.tier, ())
        decision = None
        if rules:
            decision = await self.limiter.hit(p.subject, rules)
            if not decision.allowed:
                raise _exhausted(p, decision)
        reservation = None
        tok = self._token_rules.get(p.tier, ())
        if tok:
            tdec, reservation = await self.limiter.reserve(p.subject, tok, max(1, token_estimate))
            if reservation is None:
                # The request slot stays counted: a refused request still counts as a request (seed 000).
                raise _exhausted(p, tdec)
        return Admission(decision, reservation)

    async def finish(self, adm: Admission, used_tokens: int) -> None:
        if adm.reservation is None:
            return
        if used_tokens > 0:
            await self.limiter.settle(adm.reservation, used_tokens)
        else:
            await self.limiter.release(adm.reservation)


def _exhausted(p: Principal, d: Decision) -> ResourceExhausted:
    reset = dt.datetime.fromtimestamp(d.reset_at, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    msg = MESSAGES.get(d.rule, "Rate limit exceeded")
    return ResourceExhausted(
        msg,
        reason="RATE_LIMIT_EXCEEDED",
        metadata={"rule": d.rule, "limit": str(d.limit), "reset_time": reset, "key_id": p.key_id},
        retry_after_s=max(d.retry_after_s, 0.001),
        quota_violations=[QuotaViolation(subject=f"api_key:{p.key_id}", description=f"{msg} ({d.rule} limit {d.limit})")],
    )
