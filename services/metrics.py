"""Prometheus metrics: one registry per App, counters fed from ledger rows and router tries.

Labels carry ids and names only (provider, key id, model, status), never a secret. Model
labels come from routed rows, so a flood of made-up model names cannot blow up cardinality.
Gauges that describe state (breakers, limiter backend, ledger backlog) are read at scrape
time by a collector, so the hot path pays nothing for them.

Whole-number counts (requests, tokens, upstream attempts) are added up per label set in plain
ints and handed to their counters when /metrics is rendered: a counter's inc() takes a lock and
four calls, and these are four per request. Integer sums are exact, so every scrape shows what
per-row inc() calls would have left; children are still made at first sight (same `_created`).
The float ones (cost, latency) are kept in one list and handed over in row order, so their sums
come out bit for bit as per-row calls would have left them (at most FLOATS_KEPT rows wait).
Everything here runs on the event loop's thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from services.auth.authenticator import AuthStats
from services.config.schema import ProviderConfig
from services.limits.base import Limiter
from services.metering.ledger import Ledger
from services.routing.breaker import Breaker
from services.routing.route_log import AttemptRecord
from services.store.records import UsageRecord

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
# Counts kept as ints match a float counter's own sums exactly while totals stay below 2**53;
# a row claiming more tokens than this (no real request does) ends the keeping, see on_row().
ROW_TOKENS_MAX = 2**24
FLOATS_KEPT = 1024  # rows' costs and latencies kept before they are handed over anyway


class _RowSeries:
    """The children one label set of ledger rows feeds, and the counts not yet handed to them."""

    __slots__ = ("requests", "prompt", "completion", "cost", "latency", "n", "prompt_n", "completion_n")

    def __init__(self, requests: Any, prompt: Any, completion: Any, cost: Any, latency: Any) -> None:
        self.requests, self.prompt, self.completion, self.cost, self.latency = requests, prompt, completion, cost, latency
        self.n = self.prompt_n = self.completion_n = 0

    def flush(self) -> None:
        if self.n:
            n, p, c = self.n, self.prompt_n, self.completion_n
            self.n = self.prompt_n = self.completion_n = 0
            self.requests.inc(n)
            if p:
                self.prompt.inc(p)
            if c:
                self.completion.inc(c)


class _AttemptSeries:
    __slots__ = ("child", "n")

    def __init__(self, child: Any) -> None:
        self.child, self.n = child, 0

    def flush(self) -> None:
        if self.n:
            n, self.n = self.n, 0
            self.child.inc(n)


class Metrics:
    """The counters, and at scrape time the state of the parts it is handed: each configured
    provider key's breaker, the limiter's backend, the ledger's backlog, failed authentications."""

    def __init__(self, providers: Sequence[ProviderConfig], breaker: Breaker, limiter: Limiter, ledger: Ledger,
                 auth_stats: AuthStats) -> None:
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
        self.auth_failures = Counter("tollgate_auth_failures_by_surface", "Failed authentications by surface "
                                     "(http: the bridge, grpc: the gRPC port), and those answered 429",
                                     ["surface", "outcome"], registry=self.registry)
        self.registry.register(_StateCollector(providers, breaker, limiter, ledger, auth_stats))
        # labels() once per label set; each entry also holds its counts not yet handed over.
        self._children: dict[tuple, _RowSeries] = {}
        self._attempt_children: dict[tuple[str, str, str], _AttemptSeries] = {}
        self._exact = True  # token counts are whole and small: they may wait for the scrape
        self._floats: list[tuple[_RowSeries, float, float]] = []  # (series, cost, latency s) per row, in order

    def on_row(self, r: UsageRecord) -> None:
        model = r.model if r.provider else "unrouted"
        key = (r.surface, r.provider, model, r.status)
        s = self._children.get(key)
        if s is None:
            if len(self._children) > 5000:
                self.flush()
                self._children.clear()
            s = self._children[key] = _RowSeries(
                self.requests.labels(*key), self.tokens.labels(r.provider, model, "prompt"),
                self.tokens.labels(r.provider, model, "completion"), self.cost.labels(r.provider, model),
                self.latency.labels(r.surface))
        p, c = r.prompt_tokens, r.completion_tokens
        if self._exact and type(p) is int and type(c) is int and 0 <= p <= ROW_TOKENS_MAX and 0 <= c <= ROW_TOKENS_MAX:
            s.n += 1
            s.prompt_n += p
            s.completion_n += c
        else:
            if self._exact:
                # An implausible count (negative, huge, not an int; a hostile upstream's usage):
                # from here on every row goes straight to the counters as it always did, since a
                # sum kept aside would no longer add up to the same float. inc() still refuses a
                # negative count, as it always did.
                self._exact = False
                self.flush()
            s.requests.inc()
            if p:
                s.prompt.inc(p)
            if c:
                s.completion.inc(c)
        # Cost only when inc() would take it without raising (at render time, not here).
        self._floats.append((s, r.cost_usd if r.cost_usd > 0 else 0.0, r.latency_ms / 1000.0))
        if len(self._floats) >= FLOATS_KEPT:
            self._flush_floats()

    def _flush_floats(self) -> None:
        floats, self._floats = self._floats, []
        for s, cost, seconds in floats:  # in row order: each child's float sum as per-row calls leave it
            if cost:
                s.cost.inc(cost)
            s.latency.observe(seconds)

    def on_attempt(self, a: AttemptRecord) -> None:
        key = (a.provider, a.key_id, a.outcome)
        s = self._attempt_children.get(key)
        if s is None:
            if len(self._attempt_children) > 5000:
                self.flush()
                self._attempt_children.clear()
            s = self._attempt_children[key] = _AttemptSeries(self.attempts.labels(*key))
        s.n += 1

    def on_auth_failure(self, surface: str, throttled: bool) -> None:
        """One refused authentication (issue 15 point 5); labels are the surface and the outcome only,
        never a key, its prefix or the address."""
        self.auth_failures.labels(surface, "throttled" if throttled else "unauthenticated").inc()

    def flush(self) -> None:
        """Hands the counts kept since the last call to their counters."""
        self._flush_floats()
        for s in self._children.values():
            s.flush()
        for a in self._attempt_children.values():
            a.flush()

    def render(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)


@dataclass(slots=True, eq=False)  # eq=False: hashable by identity, as the registry keeps it in a dict
class _StateCollector:
    """The state gauges, read from these parts when scraped."""

    providers: Sequence[ProviderConfig]
    breaker: Breaker
    limiter: Limiter
    ledger: Ledger
    auth_stats: AuthStats

    def describe(self) -> list:
        return []

    def collect(self):
        breaker = GaugeMetricFamily("tollgate_breaker_state", "Circuit per provider key: 0 closed, 1 half-open, 2 open",
                                    labels=["provider", "key_id"])
        for p in self.providers:
            for k in p.keys:
                breaker.add_metric([p.name, k.id], BREAKER_VALUES.get(self.breaker.state(k.id), 0))
        yield breaker
        up = GaugeMetricFamily("tollgate_limiter_backend_up", "1 when the shared limiter backend (Redis) answers, or none is used")
        up.add_metric([], 1.0 if getattr(self.limiter, "backend_up", True) else 0.0)
        yield up
        pending = GaugeMetricFamily("tollgate_ledger_pending_rows", "Usage rows waiting to be written")
        pending.add_metric([], float(self.ledger.pending))
        yield pending
        auth = GaugeMetricFamily("tollgate_auth_failures", "Failed authentications since start")
        auth.add_metric([], float(self.auth_stats.failures))
        yield auth
