"""Ledger rows as protos, shared by AdminService.ListUsage and KeyService.GetUsage."""

from __future__ import annotations

from services.store.records import UsageRecord
from tollgate.v1 import usage_pb2


def usage_row(r: UsageRecord) -> usage_pb2.UsageRow:
    return usage_pb2.UsageRow(
        request_id=r.request_id, key_id=r.key_id, user=r.user_id or "", surface=r.surface, provider=r.provider,
        provider_key_id=r.provider_key_id, model=r.model, status=r.status, prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens, estimated=r.estimated, cost_usd=r.cost_usd, latency_ms=r.latency_ms,
        attempts=r.attempts, created_at=r.created_at,
    )
