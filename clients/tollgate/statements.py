"""A Statement message as JSON-ready data and as CSV: one rendering for the bridge and the CLI."""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable

from tollgate.v1 import key_service_pb2 as kpb

CSV_HEADER = ("user_id", "email", "month", "plan", "line", "requests", "prompt_tokens", "completion_tokens", "cost_usd")


def statement_dict(s: kpb.Statement) -> dict[str, Any]:
    return {"user_id": s.user_id, "email": s.email, "month": s.month, "plan": s.plan, "state": s.state or "active",
            "plan_price_usd": None if s.custom_price else round(s.plan_price_usd, 2),
            "lines": [{"model": x.name, "requests": x.requests, "prompt_tokens": x.prompt_tokens,
                       "completion_tokens": x.completion_tokens, "cost_usd": round(x.cost_usd, 6)} for x in s.lines],
            "requests": s.requests, "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "usage_cost_usd": round(s.usage_cost_usd, 6), "total_usd": round(s.total_usd, 6)}


def statements_csv(statements: Iterable[kpb.Statement]) -> str:
    """One row per model line, then the plan's price and the total, for each statement."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for s in statements:
        head = (s.user_id, s.email, s.month, s.plan)
        for x in s.lines:
            w.writerow((*head, "model:" + x.name, x.requests, x.prompt_tokens, x.completion_tokens, f"{x.cost_usd:.6f}"))
        w.writerow((*head, "plan_price", "", "", "", "custom" if s.custom_price else f"{s.plan_price_usd:.2f}"))
        w.writerow((*head, "total", s.requests, s.prompt_tokens, s.completion_tokens, f"{s.total_usd:.6f}"))
    return out.getvalue()
