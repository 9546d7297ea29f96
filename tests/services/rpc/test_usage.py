"""services/rpc/usage.py: a ledger row as the UsageRow proto (AdminService.ListUsage, KeyService.GetUsage)."""

from __future__ import annotations

from services.rpc.usage import usage_row
from services.store.records import UsageRecord


def test_every_field_of_a_row_is_carried_over():
    r = UsageRecord("req_1", key_id="key_1", user_id="usr_1", surface="openai", provider="primary",
                    provider_key_id="primary-k1", model="gpt-4o-mini", status="ok", prompt_tokens=12,
                    completion_tokens=34, estimated=True, cost_usd=0.000123, latency_ms=456.5, attempts=2,
                    created_at=1_700_000_000.25)
    pb = usage_row(r)
    assert (pb.request_id, pb.key_id, pb.user, pb.surface, pb.provider, pb.provider_key_id, pb.model, pb.status) == (
        "req_1", "key_1", "usr_1", "openai", "primary", "primary-k1", "gpt-4o-mini", "ok")
    assert (pb.prompt_tokens, pb.completion_tokens, pb.estimated, pb.attempts) == (12, 34, True, 2)
    assert abs(pb.cost_usd - 0.000123) < 1e-12 and abs(pb.latency_ms - 456.5) < 1e-6
    assert abs(pb.created_at - 1_700_000_000.25) < 1e-3


def test_a_row_without_a_user_has_an_empty_user():
    pb = usage_row(UsageRecord("req_2", user_id=None))  # rows of admin-issued keys have none
    assert pb.user == "" and pb.request_id == "req_2" and pb.prompt_tokens == 0
