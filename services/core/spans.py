"""The core's spans: a request's pipeline span, its quota and ledger spans, and one span per
upstream attempt carrying the route decision. Only called when tracing is on (App.tracing is
not None); the seams in pipeline.py and routing/router.py test that first, so with tracing off
none of this runs.

Attributes follow the OpenTelemetry GenAI semantic conventions (gen_ai.operation.name,
gen_ai.request.model, gen_ai.response.model, gen_ai.provider.name and the older gen_ai.system,
gen_ai.usage.input_tokens / output_tokens, gen_ai.response.finish_reasons); Tollgate's own are
under tollgate.*. Never a key: provider keys appear by their public id only. Prompt and
completion text (gen_ai.input.messages / gen_ai.output.messages) only with trace_content on.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from tollgate.tracing import Span, SpanKind, Status, StatusCode, Tracing

OPERATION = {"chat": "chat", "stream": "chat", "embed": "embeddings", "forward": "chat"}


def request_span(tr: Tracing, op: str, model: str, surface: str, request_id: str, messages: Any = None) -> Span:
    """The pipeline's span for one request, a child of the caller's context (gRPC metadata, via the bridge)."""
    name = OPERATION[op]
    span = tr.start(f"{name} {model}", tr.incoming.get(), SpanKind.SERVER, {
        "gen_ai.operation.name": name, "gen_ai.request.model": model, "tollgate.surface": surface,
        "tollgate.request_id": request_id, "tollgate.streaming": op == "stream"})
    if tr.capture_content and messages:
        span.set_attribute("gen_ai.input.messages", orjson.dumps(
            [{"role": m.role, "content": m.text} for m in messages], default=str).decode())
    tr.parent.set(span)
    return span


def end_request(tr: Tracing, span: Span, out: Any, status: str, error: str, output_text: str | None = None) -> None:
    route = out.route
    target = route.target
    attrs: dict[str, Any] = {"tollgate.status": status, "tollgate.attempts": route.tries,
                             "tollgate.route.strategy": route.strategy or ""}
    if target is not None:
        attrs["gen_ai.response.model"] = route.upstream_model or target.model
        attrs["gen_ai.provider.name"] = attrs["gen_ai.system"] = target.kind
        attrs["tollgate.provider"] = target.provider
        attrs["tollgate.provider_key_id"] = target.key_id
    u = out.usage
    if u is not None:
        attrs["gen_ai.usage.input_tokens"] = u.prompt_tokens
        attrs["gen_ai.usage.output_tokens"] = u.completion_tokens
        attrs["tollgate.usage.estimated"] = u.estimated
    if out.finish_reason:
        attrs["gen_ai.response.finish_reasons"] = (out.finish_reason,)
    if out.cost_usd:
        attrs["tollgate.cost_usd"] = out.cost_usd
    if tr.capture_content and output_text:
        attrs["gen_ai.output.messages"] = orjson.dumps([{"role": "assistant", "content": output_text}]).decode()
    span.set_attributes(attrs)
    if status != "ok":
        span.set_status(Status(StatusCode.ERROR, error or status))
        attrs_err = error or status
        span.set_attribute("error.type", attrs_err)
    span.end()
    tr.parent.set(None)


def child(tr: Tracing, parent: Span, name: str, **attrs: Any) -> Span:
    return tr.start(name, parent, SpanKind.INTERNAL, attrs or None)


def start_attempt(tr: Tracing, t: Any, log: Any, stream: bool) -> None:
    """An upstream attempt begins: its CLIENT span, whose traceparent the provider request carries."""
    parent = tr.parent.get()
    if parent is None:
        return
    span = tr.start(f"chat {t.model}", parent, SpanKind.CLIENT, {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": t.model, "gen_ai.provider.name": t.kind,
        "gen_ai.system": t.kind, "server.address": urlsplit(t.base_url).hostname or "",
        "tollgate.route.provider": t.provider, "tollgate.route.key_id": t.key_id,
        "tollgate.route.strategy": log.strategy or "", "tollgate.route.try": log.tries + 1, "tollgate.streaming": stream})
    tr.attempt.set(span)
    tr.upstream.set(Tracing.traceparent(span))


def end_attempt(tr: Tracing, t: Any, outcome: str, status: int, t0: float | None, now_mono: float) -> None:
    """A try's outcome (the span started by start_attempt, or one built now for a try the router did not
    start, such as the pass-through's); a skip is an event on the request's span."""
    parent = tr.parent.get()
    if t0 is None:
        if parent is not None:
            parent.add_event("tollgate.route.skip", {"tollgate.route.provider": t.provider,
                                                     "tollgate.route.key_id": t.key_id, "tollgate.route.outcome": outcome})
        return
    span = tr.attempt.get()
    tr.attempt.set(None)
    tr.upstream.set("")
    if span is None:
        if parent is None:
            return
        start_ns = time.time_ns() - int((now_mono - t0) * 1e9)
        span = tr.start(f"chat {t.model}", parent, SpanKind.CLIENT, {
            "gen_ai.request.model": t.model, "gen_ai.provider.name": t.kind, "gen_ai.system": t.kind,
            "tollgate.route.provider": t.provider, "tollgate.route.key_id": t.key_id}, start_time=start_ns)
    span.set_attribute("tollgate.route.outcome", outcome)
    if status:
        span.set_attribute("http.response.status_code", status)
    if outcome != "ok":
        span.set_status(Status(StatusCode.ERROR, outcome))
        span.set_attribute("error.type", outcome)
    span.end()


def output(span: Span, text: str) -> None:
    """The completion's text (content capture on only: the caller checks trace_content)."""
    span.set_attribute("gen_ai.output.messages", orjson.dumps([{"role": "assistant", "content": text}]).decode())
