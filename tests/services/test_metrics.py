"""services/metrics.py: what it keeps aside and hands over at render time adds up exactly to what
per-row prometheus calls would have left (counts, token sums, cost sums, latency buckets)."""

from __future__ import annotations

import random
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from services.metrics import FLOATS_KEPT, Metrics
from services.store.records import UsageRecord

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def fake_app() -> SimpleNamespace:
    """What the scrape-time collector reads, with nothing configured."""
    return SimpleNamespace(config=SimpleNamespace(providers=()), router=None, limiter=None,
                           ledger=SimpleNamespace(pending=0), auth=SimpleNamespace(stats=SimpleNamespace(failures=0)))


def samples(raw: str, prefix: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(raw):
        for s in fam.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_rows_render_as_per_row_calls_would() -> None:
    rng = random.Random(7)
    m = Metrics(fake_app())
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
