"""Prometheus metrics: one registry per App, counters fed from ledger rows and router tries.

Labels carry ids and names only (provider, key id, model, status), never a secret. Model
labels come from routed rows, so a flood of made-up model names cannot blow up cardinality.
Gauges that describe state (breakers, limiter backend, ledger backlog) are read at scrape
time by a collector, so the hot path pays nothing for them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from services.routing.router import AttemptRecord
from services.store.records import UsageRecord

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self, app: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("tollgate_requests", "Requests by surface, provider, model and status",
                                ["surface", "provider", "model", "status"], registry=self.registry)
        self.tokens = Counter("tollgate_tokens", "Tokens metered", ["provider", "model", "type"], registry=self.registry)
        self.cost = Counter("tollgate_cost_usd", "Cost in USD by the catalogue's prices", ["provider", "model"], registry=self.registry)
        self.latency = Histogram("tollgate_request_latency_seconds", "End-to-end request latency", ["surface"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                                 registry=self.registry)
        self.attempts = Counter("tollgate_upstream_attempts", "Upstream tries and skips by outcome",
                                ["provider", "key_id", "outcome"], registry=self.registry)
        self.registry.register(_StateCollector(app))
        self._children: dict[tuple, tuple] = {}
        self._attempt_children: dict[tuple[str, str, str], Any] = {}  # labels() once per label set

    def on_row(self, r: UsageRecord) -> None:
        model = r.model if r.provider else "unrouted"
        key = (r.surface, r.provider, model, r.status)
        kids = self._children.get(key)
        if kids is None:
            if len(self._children) > 5000:
                self._children.clear()
            kids = (self.requests.labels(*key), self.tokens.labels(r.provider, model, "prompt"),
                    self.tokens.labels(r.provider, model, "completion"), self.cost.labels(r.provider, model),
                    self.latency.labels(r.surface))
            self._children[key] = kids
        req, tin, tout, cost, lat = kids
        req.inc()
        if r.prompt_tokens:
            tin.inc(r.prompt_tokens)
        if r.completion_tokens:
            tout.inc(r.completion_tokens)
        if r.cost_usd:
            cost.inc(r.cost_usd)
        lat.observe(r.latency_ms / 1000.0)

    def on_attempt(self, a: AttemptRecord) -> None:
        key = (a.provider, a.key_id, a.outcome)
        child = self._attempt_children.get(key)
        if child is None:
            if len(self._attempt_children) > 5000:
                self._attempt_children.clear()
            child = self._attempt_children[key] = self.attempts.labels(*key)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    def __init__(self, app: Any) -> None:
        self.app = app

    def describe(self) -> list:
        return []

    def collect(self):
        app = self.app
        breaker = GaugeMetricFamily("tollgate_breaker_state", "Circuit per provider key: 0 closed, 1 half-open, 2 open",
                                    labels=["provider", "key_id"])
        for p in app.config.providers:
            for k in p.keys:
                breaker.add_metric([p.name, k.id], BREAKER_VALUES.get(app.router.breaker.state(k.id), 0))
        yield breaker
        up = GaugeMetricFamily("tollgate_limiter_backend_up", "1 when the shared limiter backend (Redis) answers, or none is used")
        up.add_metric([], 1.0 if getattr(app.limiter, "backend_up", True) else 0.0)
        yield up
        pending = GaugeMetricFamily("tollgate_ledger_pending_rows", "Usage rows waiting to be written")
        pending.add_metric([], float(app.ledger.pending))
        yield pending
        auth = GaugeMetricFamily("tollgate_auth_failures", "Failed authentications since start")
        auth.add_metric([], float(app.auth.stats.failures))
        yield auth
