"""Chat fields the gateway does not interpret: sent as they are, mapped, ignored aloud, or refused.

The bridges set ChatRequest.raw_body only when a body holds such fields (OpenAI's n, logprobs,
reasoning_effort, max_completion_tokens, service_tier, ...; Anthropic's cache_control, thinking,
top_k, server tools, ...), so the usual request never comes here. `plan()` looks at the first
candidate of the route:
- its wire format is the surface's own (an OpenAI-shaped provider for the OpenAI surface, Anthropic
  for the Anthropic one): the body is relayed as sent through the pass-through relay (the
  gateway's key, failover between that provider's keys, the answer back unchanged, one ledger row
  under the surface's name with the provider's usage);
- otherwise each field is mapped (reasoning_effort and thinking to the provider's reasoning
  control, max_completion_tokens to max tokens), refused with a 400 naming it when it changes what
  comes back (n > 1, logprobs, audio, ...), or ignored and named in the X-Tollgate-Ignored header
  (advisory fields: metadata, store, service_tier, prompt_cache_key, ...). Never a silent 200.
"""

from __future__ import annotations

import dataclasses
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, NoReturn

import orjson

from services.core.principal import Principal
from services.core import errors as E
from services.core.types import ChatRequest, Target, Usage
from services.pipeline import ForwardStarted, Outcome, Pipeline
from services.config.kinds import resolve
from services.routing.candidates import CandidateIndex
from services.routing.passthrough import NativeRequest, Passthrough, native_request
from services.routing.route_log import RouteLog

# Per surface: the wire formats that take the caller's body as sent, and the path it goes to.
UPSTREAM_PATH = {("openai", "openai"): "chat/completions", ("anthropic", "anthropic"): "v1/messages",
                 ("openai_completions", "openai"): "completions",
                 ("openai_completions", "ollama"): "v1/completions"}  # Ollama's OpenAI-compatible API
# Wires whose adapter maps Sampling.reasoning_effort to a reasoning control of their provider.
REASONING_WIRES = frozenset({"openai", "anthropic", "gemini", "ollama"})
# Fields that change what comes back: honoured only as sent to OpenAI, else a 400 naming them
# (unless the value asks for nothing: n=1, logprobs=false, modalities=["text"]).
OPENAI_REFUSED = {"suffix": (None, ""), "echo": (None, False), "best_of": (None, 1), "n": (None, 1), "logprobs": (None, False), "top_logprobs": (None,), "audio": (None,),
                  "modalities": (None, ["text"]), "logit_bias": (None, {}), "functions": (None,),
                  "function_call": (None,), "web_search_options": (None,)}
# Anthropic's own features that change what the model can do or see: an Anthropic route, or a 400.
ANTHROPIC_REFUSED = frozenset({"container", "mcp_servers"})
# Already in the request (the bridge codecs): OpenAI's max_completion_tokens is its max tokens,
# Anthropic's metadata.user_id the ledger's user.
MAPPED = {"openai": frozenset({"max_completion_tokens"}), "anthropic": frozenset({"metadata"}),
          "openai_completions": frozenset()}
BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
EFFORTS = {v: k for k, v in sorted(BUDGETS.items(), key=lambda kv: -kv[1])}


@dataclass(slots=True)
class RelayedRequest(NativeRequest):
    """A chat request relayed as sent: metered under the surface it came through."""

    through: str = ""
    # Prices the answer itself where the provider does not bill tokens (images, audio): given the
    # relay's meter and the token usage found, returns the usage to record and its cost in USD
    # (None: price the tokens as usual).
    bill: Callable[[Any, Usage], tuple[Usage, float | None]] | None = None

    @property
    def surface(self) -> str:
        return self.through


class Fidelity:
    def __init__(self, index: CandidateIndex, pipeline: Pipeline, relay: Passthrough) -> None:
        self.index = index
        self.pipeline = pipeline
        self.relay = relay

    def plan(self, req: ChatRequest) -> Target | None:
        """The target to relay the body to unchanged, or None after mapping the fields for translation."""
        try:
            views = self.index.resolve(req.model, req.route.provider)
        except E.TollgateError:
            return None  # the router raises the same error in its own words
        target = views[0].target if views else None
        kind = resolve(target.kind) if target is not None else None
        wire = kind.wire if kind is not None else ""
        if (req.surface, wire) in UPSTREAM_PATH:
            return target
        try:
            body = orjson.loads(req.raw_body)
        except orjson.JSONDecodeError:
            return None
        ignored: list[str] = []
        for name in req.extra_fields:
            value = body.get(name)
            if name in MAPPED.get(req.surface, ()):
                continue  # already in the request (bridge codecs)
            if req.surface == "anthropic" and (name in ANTHROPIC_REFUSED or name.startswith(("tools.", "messages."))):
                what = f"'{name}' ({_at(body, name)})" if "." in name else f"'{name}'"
                raise E.InvalidArgument(
                    f"{what} is Anthropic's own and needs an Anthropic route; this model is served by "
                    f"{target.kind if target else 'another provider'}", reason="UNSUPPORTED_PARAMETER",
                    field_violations=[E.FieldViolation(name, "needs an Anthropic route")])
            if name == "reasoning_effort" and isinstance(value, str):
                req.sampling.reasoning_effort = value
                if wire not in REASONING_WIRES:
                    ignored.append(name)
            elif name == "thinking" and isinstance(value, dict):
                budget = value.get("budget_tokens")
                if value.get("type") == "enabled" and isinstance(budget, int):
                    req.sampling.reasoning_effort = EFFORTS.get(min(BUDGETS.values(), key=lambda b: abs(b - budget)), "medium")
                if wire not in REASONING_WIRES:
                    ignored.append(name)
            elif name in OPENAI_REFUSED and req.surface != "anthropic":
                if value not in OPENAI_REFUSED[name]:
                    raise E.InvalidArgument(
                        f"'{name}' cannot be honoured by {target.kind if target else 'this'} routes; "
                        f"it is sent as is only to OpenAI-shaped providers", reason="UNSUPPORTED_PARAMETER",
                        field_violations=[E.FieldViolation(name, "not supported by this route")])
            else:
                ignored.append(name)
        req.ignored = tuple(sorted(ignored))  # one order whatever order the client wrote its fields in
        return None

    def first_target(self, req: ChatRequest) -> Target | None:
        try:
            views = self.index.resolve(req.model, req.route.provider)
        except E.TollgateError:
            return None
        return views[0].target if views else None

    async def count_tokens(self, req: ChatRequest, time_remaining: float | None) -> tuple[int, Target | None]:
        """Anthropic's own count when the route is Anthropic (not metered: counting is free); else (-1, None)."""
        target = self.first_target(req)
        kind = resolve(target.kind) if target is not None else None
        if not req.raw_body or kind is None or kind.wire != "anthropic":
            return -1, None
        raw = req.raw_body
        if target.model != req.model:
            raw = orjson.dumps({**orjson.loads(raw), "model": target.model})
        headers = [("content-type", "application/json")] + list((req.raw_headers or {}).items())
        nreq = native_request(target.provider, "POST", "v1/messages/count_tokens", "", headers, raw)
        ex = await self.relay.open(nreq, self.pipeline.deadline(time_remaining), RouteLog(strategy="passthrough"))
        try:
            body = b"".join([piece async for piece in ex.body()])
        finally:
            ex.close()
        if not ex.ok:
            raise upstream_error(ex.status, body)
        try:
            n = orjson.loads(body)["input_tokens"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise E.Unavailable("Anthropic's count is not JSON", reason="UPSTREAM_PROTOCOL_ERROR") from None
        return int(n), ex.target

    def _native(self, req: ChatRequest, target: Target, stream: bool) -> RelayedRequest:
        kind = resolve(target.kind)
        path = UPSTREAM_PATH[(req.surface, kind.wire if kind else "")]
        raw = req.raw_body
        changes: dict[str, Any] = {}
        if target.model != req.model:
            changes["model"] = target.model  # "openai/gpt-4.1" names the provider; the provider wants "gpt-4.1"
        if stream and req.surface != "anthropic":
            body = orjson.loads(raw)
            opts = body.get("stream_options")
            if not (isinstance(opts, dict) and opts.get("include_usage")):
                # Metered from the provider's own usage: asked for (the caller sees one more chunk, choices []).
                changes["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        if changes:
            raw = orjson.dumps({**orjson.loads(raw), **changes})
        headers = [("content-type", "application/json")] + list((req.raw_headers or {}).items())
        nreq = native_request(target.provider, "POST", path, "", headers, raw)
        return RelayedRequest(**{f.name: getattr(nreq, f.name) for f in dataclasses.fields(NativeRequest)},
                              through=req.surface)

    async def chat(self, p: Principal, req: ChatRequest, target: Target, request_id: str,
                   time_remaining: float | None) -> tuple[bytes, Outcome]:
        events = self.pipeline.forward(p, self._native(req, target, False), self.relay, request_id, time_remaining)
        raw, started = await whole_answer(events)
        return raw, started.outcome

    async def stream(self, p: Principal, req: ChatRequest, target: Target, request_id: str,
                     time_remaining: float | None) -> AsyncIterator[Outcome | bytes]:
        """The outcome once the provider accepted the request, then its stream's bytes as they come."""
        events = self.pipeline.forward(p, self._native(req, target, True), self.relay, request_id, time_remaining)
        async with aclosing(events):
            async for ev in events:
                if type(ev) is bytes:
                    yield ev
                elif isinstance(ev, ForwardStarted):
                    if not ev.exchange.ok:
                        await raise_upstream_error(ev, events)
                    yield ev.outcome


def _at(body: Any, path: str) -> str:
    """The value at a dotted path of the body ("tools.0.type"), as text, for an error message."""
    node = body
    for part in path.split("."):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return "?"
    return str(node)[:64]


async def whole_answer(events: AsyncIterator[Any]) -> tuple[bytes, ForwardStarted]:
    """A relayed request's events run to their end (a pipeline.forward()): the answer's bytes and
    its start; a provider's error answer is raised as what it means for the caller."""
    pieces: list[bytes] = []
    started: ForwardStarted | None = None
    async with aclosing(events):
        async for ev in events:
            if type(ev) is bytes:
                pieces.append(ev)
            elif isinstance(ev, ForwardStarted):
                started = ev
    assert started is not None
    raw = b"".join(pieces)
    if not started.exchange.ok:
        raise upstream_error(started.exchange.status, raw)
    return raw, started


async def raise_upstream_error(started: ForwardStarted, events: AsyncIterator[Any]) -> NoReturn:
    """A relayed stream the provider refused: reads the rest of its error answer and raises what it means."""
    body = b""
    async for piece in events:
        if type(piece) is bytes:
            body += piece
    raise upstream_error(started.exchange.status, body)


def upstream_error(status: int, body: bytes) -> E.TollgateError:
    """A provider's own error answer (OpenAI's or Anthropic's JSON), kept as what it means for the caller."""
    message, param = f"the provider answered {status}", ""
    try:
        err = orjson.loads(body).get("error") or {}
        message = str(err.get("message") or message)[:2000]
        param = str(err.get("param") or "")
    except (orjson.JSONDecodeError, AttributeError):
        pass
    fv = [E.FieldViolation(param, message)] if param else None
    if status in (401, 403):
        return E.UpstreamRejected("the provider rejected the gateway's key")
    if status == 429:
        return E.ResourceExhausted(message, reason="UPSTREAM_RATE_LIMITED", retry_after_s=1.0)
    if status == 404 and "previous" not in message.lower():
        return E.NotFound(message, reason="NOT_FOUND", field_violations=fv)
    if 400 <= status < 500:
        return E.UpstreamBadRequest(message, field_violations=fv)
    return E.Unavailable(message, reason="UPSTREAM_UNAVAILABLE", retry_after_s=1.0)
