"""services/metrics.py: what it keeps aside and hands over at render time adds up exactly to what
per-row prometheus calls would have left (counts, token sums, cost sums, latency buckets)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from services.auth.authenticator import AuthStats
from services.clock import FakeClock
from services.config.schema import ProviderConfig, ProviderKeyConfig
from services.limits import make_limiter
from services.metering.ledger import Ledger
from services.metrics import FLOATS_KEPT, Metrics
from services.routing.breaker import Breaker
from services.store.records import UsageRecord

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


async def _no_insert(rows: list[UsageRecord]) -> int:
    return len(rows)


def metrics(providers: tuple[ProviderConfig, ...] = ()) -> tuple[Metrics, Breaker, Ledger, AuthStats]:
    """Metrics over real parts (the scrape-time collector reads them), with nothing written anywhere."""
    clock = FakeClock()
    breaker, ledger, stats = Breaker(clock, failure_threshold=2), Ledger(_no_insert), AuthStats()
    return Metrics(providers, breaker, make_limiter(None, clock), ledger, stats), breaker, ledger, stats


def samples(raw: str, prefix: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(raw):
        for s in fam.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_rows_render_as_per_row_calls_would() -> None:
    rng = random.Random(7)
    m = metrics()[0]
    reg = CollectorRegistry()
    requests = Counter("tollgate_requests", "", ["surface", "provider", "model", "status"], registry=reg)
    tokens = Counter("tollgate_tokens", "", ["provider", "model", "type"], registry=reg)
    cost = Counter("tollgate_cost_usd", "", ["provider", "model"], registry=reg)
    latency = Histogram("tollgate_request_latency_seconds", "", ["surface"], buckets=BUCKETS, registry=reg)
    # More rows per series than FLOATS_KEPT, so floats are handed over mid-way as well as at render.
    for i in range(3 * FLOATS_KEPT + 17):
        provider = rng.choice(["a", "b", ""])
        r = UsageRecord(f"req_{i}", "k", "", rng.choice(["openai", "grpc"]), provider, "", "m1", rng.choice(["ok", "error"]),
                        rng.randrange(0, 500), rng.randrange(0, 500), False, rng.random() / 1000 if provider else 0.0,
                        rng.random() * 3000, 1, 0.0, "")
        m.on_row(r)
        model = r.model if r.provider else "unrouted"
        requests.labels(r.surface, r.provider, model, r.status).inc()
        if r.prompt_tokens:
            tokens.labels(r.provider, model, "prompt").inc(r.prompt_tokens)
        if r.completion_tokens:
            tokens.labels(r.provider, model, "completion").inc(r.completion_tokens)
        if r.cost_usd:
            cost.labels(r.provider, model).inc(r.cost_usd)
        latency.labels(r.surface).observe(r.latency_ms / 1000.0)
        if i == FLOATS_KEPT // 2:  # a scrape in the middle hands everything over too
            m.render()
    from prometheus_client import generate_latest

    want = samples(generate_latest(reg).decode(), "tollgate_")
    got = samples(m.render().decode(), "tollgate_")
    got = {k: v for k, v in got.items() if k[0] in {n for n, _ in want}}
    # Same label sets and the same values, float sums bit for bit (handed over in row order).
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}
    assert want[("tollgate_request_latency_seconds_count", (("surface", "grpc"),))] > FLOATS_KEPT


def _row(request_id: str) -> UsageRecord:
    return UsageRecord(request_id, "k", "", "openai", "p", "", "m1", "ok", 1, 1, False, 0.0, 5.0, 1, 0.0, "")


def test_the_scrape_reads_breakers_backlog_and_auth_failures_as_they_are_then() -> None:
    providers = (ProviderConfig("p", "openai", "http://127.0.0.1:9", (ProviderKeyConfig("k1"), ProviderKeyConfig("k2"))),)
    m, breaker, ledger, stats = metrics(providers)
    before = samples(m.render().decode(), "tollgate_")
    assert before[("tollgate_breaker_state", (("key_id", "k1"), ("provider", "p")))] == 0
    assert before[("tollgate_limiter_backend_up", ())] == 1
    assert before[("tollgate_ledger_pending_rows", ())] == 0 and before[("tollgate_auth_failures", ())] == 0
    breaker.record_failure("k2")
    breaker.record_failure("k2")  # the threshold: open
    ledger.record(_row("req_1"))
    ledger.record(_row("req_2"))
    stats.failures += 3
    after = samples(m.render().decode(), "tollgate_")
    assert after[("tollgate_breaker_state", (("key_id", "k1"), ("provider", "p")))] == 0
    assert after[("tollgate_breaker_state", (("key_id", "k2"), ("provider", "p")))] == 2
    assert after[("tollgate_ledger_pending_rows", ())] == 2 and after[("tollgate_auth_failures", ())] == 3
