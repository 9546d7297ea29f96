"""OpenTelemetry traces for one gateway process, built only when an OTLP endpoint is configured.

`make_tracing` returns None when tracing is off, and every call site tests `if tracing is not
None` before anything else: then no span, context or header is made on the hot path (the no-op
fast path costs one attribute test per seam; bench/README.md measures it). When on, spans go
through a BatchSpanProcessor (a background thread) to the OTLP/HTTP exporter; nothing on the
event loop waits for an export. The provider is this object's own, never the process-global
one, so two gateways in one test process do not share spans.

W3C trace context: `extract` reads a caller's `traceparent` (HTTP header or gRPC metadata);
`traceparent` writes one for the next hop (the core's gRPC metadata, a provider's request).
Attribute names follow the OpenTelemetry GenAI semantic conventions (gen_ai.*). Prompt and
completion text is recorded only when `capture_content` (config `trace_content`) is on.
"""

from __future__ import annotations

import contextvars
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["Tracing", "make_tracing", "SpanKind", "Status", "StatusCode", "Span"]

_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """One process's tracer, the content-capture switch, and W3C trace-context helpers."""

    def __init__(self, provider: TracerProvider, capture_content: bool = False) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("tollgate")
        self.capture_content = capture_content
        # The caller's context as the core's entry point read it from gRPC metadata, for the
        # pipeline's span: set once per call by the interceptor (always, so no call inherits another's).
        self.incoming: contextvars.ContextVar[Context | None] = contextvars.ContextVar("tollgate_incoming", default=None)
        # The request's own span while the core works on it, and the upstream attempt in progress,
        # whose traceparent goes on the provider request (Upstreams' trace hook).
        self.parent: contextvars.ContextVar[Span | None] = contextvars.ContextVar("tollgate_parent", default=None)
        self.attempt: contextvars.ContextVar[Span | None] = contextvars.ContextVar("tollgate_attempt", default=None)
        self.upstream: contextvars.ContextVar[str] = contextvars.ContextVar("tollgate_upstream", default="")

    @staticmethod
    def extract(traceparent: str | None, tracestate: str | None = None) -> Context | None:
        if not traceparent:
            return None
        carrier = {"traceparent": traceparent}
        if tracestate:
            carrier["tracestate"] = tracestate
        ctx = _PROPAGATOR.extract(carrier)
        return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None

    @staticmethod
    def traceparent(span: Span) -> str:
        c = span.get_span_context()
        return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}" if c.is_valid else ""

    def start(self, name: str, parent: Context | Span | None = None, kind: SpanKind = SpanKind.INTERNAL,
              attributes: dict[str, Any] | None = None, start_time: int | None = None) -> Span:
        ctx = trace.set_span_in_context(parent) if isinstance(parent, Span) else parent
        return self.tracer.start_span(name, context=ctx, kind=kind, attributes=attributes, start_time=start_time)

    def shutdown(self) -> None:
        self.provider.shutdown()


def make_tracing(endpoint: str, service_name: str = "tollgate", capture_content: bool = False,
                 sample_ratio: float = 1.0, exporter: SpanExporter | None = None) -> Tracing | None:
    """None when there is nowhere to send spans. `exporter` (tests: the SDK's InMemorySpanExporter)
    replaces the OTLP exporter and is flushed synchronously."""
    if exporter is None and not endpoint:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = endpoint.rstrip("/")
        url = url if url.endswith("/v1/traces") else url + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=5),
                                                       schedule_delay_millis=1000))
    return Tracing(provider, capture_content)
