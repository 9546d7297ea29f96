"""Monthly statements and usage summaries (issue 16): sums of the ledger, nothing else.

A statement's usage lines are the ledger's rows of that user in that UTC calendar month, summed
by model in the database; its usage cost is their catalogue cost summed the same way, so the
statement equals the ledger (tests/gateway_http/test_accounts_statements.py checks it to the
cent). The plan's price is the plan's current monthly price (None in the config: custom).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from services.core.errors import FieldViolation
from services.accounts.users import invalid
from services.store.records import UsageFilter, UserRecord

MONTH_RE = re.compile(r"(\d{4})-(\d{2})")


def month_range(month: str, now: float) -> tuple[str, float, float]:
    """("YYYY-MM", start, end) in UTC; "" = this month. INVALID_ARGUMENT for anything else."""
    if not month:
        d = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        month = f"{d.year:04d}-{d.month:02d}"
    m = MONTH_RE.fullmatch(month)
    if not m or not 1 <= int(m.group(2)) <= 12 or not 2000 <= int(m.group(1)) <= 2999:
        raise invalid([FieldViolation("month", "must be YYYY-MM, e.g. 2026-11")])
    y, mo = int(m.group(1)), int(m.group(2))
    start = dt.datetime(y, mo, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=dt.timezone.utc)
    return month, start.timestamp(), end.timestamp()


@dataclass(slots=True)
class Line:
    name: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(slots=True)
class StatementData:
    user: UserRecord
    month: str
    plan_price_usd: float
    custom_price: bool
    lines: list[Line] = field(default_factory=list)
    total: Line = field(default_factory=lambda: Line("total"))

    @property
    def total_usd(self) -> float:
        return self.plan_price_usd + self.total.cost_usd


class Statements:
    def __init__(self, store, ledger, tiers: Any, clock) -> None:
        self.store = store
        self.ledger = ledger
        self.tiers = tiers  # callable: name -> TierConfig
        self.clock = clock

    async def for_user(self, user: UserRecord, month: str) -> StatementData:
        month, since, until = month_range(month, self.clock.now())
        await self.ledger.flush()
        t = await self.store.usage_totals(UsageFilter(user_id=user.id, since=since, until=until))
        tier = self.tiers().get(user.tier)
        price = getattr(tier, "price_usd_month", None) if tier else None
        out = StatementData(user, month, float(price or 0.0), price is None)
        for model, v in sorted(t["by_model"].items()):
            out.lines.append(Line(model, int(v["requests"]), int(v["prompt_tokens"]), int(v["completion_tokens"]),
                                  float(v["cost_usd"])))
        out.total = Line("total", int(t["requests"]), int(t["prompt_tokens"]), int(t["completion_tokens"]),
                         float(t["cost_usd"]))
        return out

    async def summary(self, user_id: str, since: float, until: float) -> tuple[float, float, Line, list[Line], list[Line]]:
        now = self.clock.now()
        if since < 0 or until < 0:
            raise invalid([FieldViolation("since" if since < 0 else "until", "must be >= 0 (epoch seconds)")])
        since = since or month_range("", now)[1]
        until = until or now + 1
        if until <= since:
            raise invalid([FieldViolation("until", "must be after since")])
        await self.ledger.flush()
        flt = UsageFilter(user_id=user_id, since=since, until=until)
        t = await self.store.usage_totals(flt)
        total = Line("total", int(t["requests"]), int(t["prompt_tokens"]), int(t["completion_tokens"]), float(t["cost_usd"]))
        by_model = [Line(m, int(v["requests"]), int(v["prompt_tokens"]), int(v["completion_tokens"]), float(v["cost_usd"]))
                    for m, v in sorted(t["by_model"].items())]
        by_day = [Line(dt.datetime.fromtimestamp(d * 86400, dt.timezone.utc).strftime("%Y-%m-%d"), n, p, c, usd)
                  for d, n, p, c, usd in await self.store.usage_by_day(flt)]
        return since, until, total, by_day, by_model
