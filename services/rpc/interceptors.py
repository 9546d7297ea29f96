"""The guard every RPC runs through: auth, request id, rate-limit metadata, error mapping.

It wraps servicer methods rather than being a grpc.aio.ServerInterceptor so that the
in-process channel (the bridge's default) and the real gRPC server run exactly the same
code: the same principal resolution, the same request ids, the same google.rpc.Status.
A core error becomes a Status with ErrorInfo (+ RetryInfo / QuotaFailure / BadRequest);
anything unexpected becomes INTERNAL with the request id, never UNKNOWN (RELIABILITY B4).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from services.auth.authenticator import Authenticator
from services.core.principal import Principal
from services.auth.throttle import AuthThrottle
from services.limits.open_gate import OPEN_EVENT, OpenGate
from services.core import errors as E
from services.core.scrub import Scrubber
from services.limits.base import Decision, Limiter
from services.limits.quotas import Quotas
from services.pipeline import new_request_id

log = logging.getLogger("tollgate.rpc")

DETAILS_KEY = "grpc-status-details-bin"
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "x-admin-key", "x-goog-api-key"})


class Ctx:
    """What a guarded method gets besides the request: who calls and this call's id."""

    __slots__ = ("principal", "request_id", "context", "open_decision")

    def __init__(self, principal: Principal, request_id: str, context: Any) -> None:
        self.principal = principal
        self.request_id = request_id
        self.context = context
        self.open_decision = None  # the per-IP count, for a keyless call in open mode (open_gate.py)


def rate_limit_metadata(d: Decision | None) -> tuple[tuple[str, str], ...]:
    if d is None:
        return ()
    remaining = d.remaining
    return (
        ("x-ratelimit-limit", str(d.limit)),
        ("x-ratelimit-remaining", str(remaining if remaining > 0 else 0)),
        ("x-ratelimit-used", str(d.used)),
        ("x-ratelimit-reset", str(math.ceil(d.reset_at))),  # an int already
    )


MESSAGE_MAX = 1024
META_VALUE_MAX = 256


def _cap(text: str, n: int) -> str:
    # Errors may quote caller values (a model id); trailing metadata must stay small (E6).
    return text if len(text) <= n else text[: n - 1] + "…"


def status_for(e: E.TollgateError, request_id: str) -> tuple[grpc.StatusCode, str, tuple[tuple[str, Any], ...]]:
    """A core error as (code, message, trailing metadata with google.rpc.Status details)."""
    message = _cap(e.message, MESSAGE_MAX)
    meta = {k: _cap(str(v), META_VALUE_MAX) for k, v in e.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=e.reason, domain="tollgate", metadata={**meta, "request_id": request_id})
    details = [info]
    if e.retry_after_s is not None:
        secs = max(0.0, e.retry_after_s)
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(secs), nanos=int((secs - int(secs)) * 1e9))))
    if e.quota_violations:
        details.append(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description) for v in e.quota_violations]))
    if e.field_violations:
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=_cap(v.field, META_VALUE_MAX), description=_cap(v.description, META_VALUE_MAX))
            for v in e.field_violations]))
    st = status_pb2.Status(code=e.code.value[0], message=message)
    for d in details:
        st.details.add().Pack(d)
    md = [(DETAILS_KEY, st.SerializeToString()), ("x-request-id", request_id)]
    if e.retry_after_s is not None:
        md.append(("retry-after", str(max(1, int(math.ceil(e.retry_after_s))))))
    return e.code, message, tuple(md)


async def _abort(context: Any, e: E.TollgateError, request_id: str, scrubber: Scrubber | None = None) -> None:
    if scrubber is not None:
        e = scrubbed(e, scrubber, credentials(context))
    code, message, md = status_for(e, request_id)
    await context.abort(code, message, trailing_metadata=md)


def scrubbed(e: E.TollgateError, scrubber: Scrubber, extra: tuple[str, ...] = ()) -> E.TollgateError:
    """`e` with every secret the gateway knows (and the caller's own credentials, `extra`) cut out
    of its message, metadata and violations: the last stop before any surface renders it (F3)."""
    e.message = scrubber.scrub(e.message, extra)
    if e.metadata:
        e.metadata = {k: scrubber.scrub(str(v), extra) for k, v in e.metadata.items()}
    if e.field_violations:
        e.field_violations = [E.FieldViolation(v.field, scrubber.scrub(v.description, extra)) for v in e.field_violations]
    return e


def credentials(context: Any) -> tuple[str, ...]:
    try:
        md = context.invocation_metadata() or ()
    except Exception:  # a context that cannot say: the known secrets are still cut
        return ()
    out = []
    for k, v in md:
        if k in CREDENTIAL_HEADERS and isinstance(v, str) and v:
            scheme, _, rest = v.partition(" ")
            out.append(rest.strip() if scheme.lower() == "bearer" and rest else v)
    return tuple(out)


def _internal(exc: BaseException) -> E.TollgateError:
    return E.Internal(f"internal error ({type(exc).__name__}); the request id identifies it in the logs")


class Guard:
    """What every RPC passes first: draining, trace context, login throttling, seed 004's open
    gate, the caller's principal; and the rate-limit numbers it sends back. The servicers'
    methods reach it through `unary()` / `stream()` below, as their `guard` attribute."""

    def __init__(self, auth: Authenticator, quotas: Quotas, limiter: Limiter, scrubber: Scrubber | None,
                 open_gate: OpenGate | None, auth_throttle: AuthThrottle | None, tracing: Any,
                 draining: Callable[[], bool]) -> None:
        self.auth = auth
        self.quotas = quotas
        self.limiter = limiter
        self.scrubber = scrubber
        self.open_gate = open_gate
        self.auth_throttle = auth_throttle
        self.tracing = tracing  # tollgate.tracing.Tracing, or None when traces are off
        self.draining = draining  # True once the process is shutting down (services/runtime.py)

    def enter_now(self, context: Any, request_id: str) -> Ctx | None:
        """_enter() for the usual keyed call, without a coroutine: no trace context to read, no
        address blocked, seed 004's open gate off, and a stored API key looked up within the last
        second. None for anything else (and while draining): the caller awaits _enter()."""
        if self.tracing is not None or self.draining():
            return None
        throttle, gate = self.auth_throttle, self.open_gate
        if (throttle is not None and throttle.blocking) or (gate is not None and gate.enabled):
            return None
        md = {}
        for k, v in context.invocation_metadata():  # a loop, not a comprehension: no call per request
            if isinstance(v, str):
                md[k] = v
        principal = self.auth.resolve_now(md)
        return None if principal is None else Ctx(principal, request_id, context)

    async def _enter(self, context: Any, request_id: str, admin_only: bool, public: bool,
                     open_kind: Any = "", request: Any = None) -> Ctx:
        if self.draining():
            raise E.Unavailable("the gateway is shutting down; retry on another replica", reason="SHUTTING_DOWN",
                                retry_after_s=1.0)
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        tracing = self.tracing
        if tracing is not None:
            # W3C trace context from the caller (the bridge's span, or a gRPC client's); set on every
            # call, so a call on a reused task never inherits the previous one's parent.
            tracing.incoming.set(tracing.extract(md.get("traceparent"), md.get("tracestate")))
        # Issue 15 point 5: an address over its failed authentications is refused before any key check.
        # The address is worked out only when some address is blocked, or a credential was refused.
        throttle = self.auth_throttle
        if throttle is not None and throttle.blocking:
            throttle.check(*throttle.address(context.peer(), md))
        gate = self.open_gate
        if open_kind and gate is not None and gate.enabled:
            key, admin = self.auth.credentials(md)
            kind = open_kind(request) if callable(open_kind) else open_kind
            if kind and not key and not admin:
                # Seed 004's open mode: no key, per-IP limits instead (services/limits/open_gate.py).
                if md.get(OPEN_EVENT) == "ws_connect":
                    kind = "ws_connect"
                principal, decision = await gate.admit(kind, context.peer(), md)
                ctx = Ctx(principal, request_id, context)
                ctx.open_decision = decision
                return ctx
        if public:
            principal = Principal("anonymous", "anonymous", "unlimited")
            key, admin = self.auth.credentials(md)
            if key or admin:
                try:
                    principal = await self.auth.resolve(md)
                except E.TollgateError as e:
                    # public routes still answer with a bad key (e.g. /v1/models on seed 002 is authed; Register is not)
                    if throttle is not None and isinstance(e, E.Unauthenticated):
                        await throttle.failed(*throttle.address(context.peer(), md))
        else:
            try:
                principal = await self.auth.resolve(md, admin_only=admin_only)
            except E.Unauthenticated:
                # Only a credential that was presented and refused counts, not a missing one.
                if throttle is not None and any(self.auth.credentials(md)):
                    await throttle.failed(*throttle.address(context.peer(), md))  # the 429 once over the limit
                raise
        return Ctx(principal, request_id, context)

    async def _send_limits(self, ctx: Ctx) -> None:
        rules = self.quotas.request_rules(ctx.principal.tier)
        if not rules:
            return
        try:
            d = await self.limiter.peek(ctx.principal.subject, rules)
        except E.TollgateError:
            return
        await ctx.context.send_initial_metadata(rate_limit_metadata(d) + (("x-request-id", ctx.request_id),))


def unary(admin_only: bool = False, public: bool = False, peek_limits: bool = True, open_kind: Any = ""):
    """Wraps a unary servicer method in its servicer's Guard (the servicer's `guard` attribute)."""
    def wrap(fn: Callable[..., Awaitable[Any]]):
        # Chat and Embed send their own limits with the answer's metadata; decided once here.
        peek = peek_limits and fn.__name__ not in ("Chat", "Embed", "CreateResponse")
        fast = not admin_only and not public  # a keyed call may take Guard.enter_now()

        @functools.wraps(fn)
        async def handler(servicer: Any, request: Any, context: Any) -> Any:
            guard: Guard = servicer.guard
            request_id = new_request_id()
            ctx = None
            try:
                ctx = (fast and guard.enter_now(context, request_id)) or \
                    await guard._enter(context, request_id, admin_only, public, open_kind, request)
                if peek and ctx.principal.kind not in ("admin", "anonymous"):
                    await guard._send_limits(ctx)
                elif peek and ctx.open_decision is not None:  # open mode: the per-IP count (seed 004)
                    await context.send_initial_metadata(rate_limit_metadata(ctx.open_decision)
                                                        + (("x-request-id", request_id),))
                return await fn(servicer, request, ctx)
            except Exception as exc:
                await _failed(context, exc, request_id, guard.scrubber, fn.__name__)
            finally:
                if ctx is not None and ctx.open_decision is not None:
                    guard.open_gate.leave()  # MAX_CONCURRENT_REQUESTS counts calls in flight
        return handler
    return wrap


def stream(admin_only: bool = False, open_kind: Any = ""):
    """Wraps a server-streaming servicer method in its servicer's Guard (its `guard` attribute)."""
    def wrap(fn: Callable[..., AsyncIterator[Any]]):
        @functools.wraps(fn)
        async def handler(servicer: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            guard: Guard = servicer.guard
            request_id = new_request_id()
            ctx = None
            try:
                ctx = (not admin_only and guard.enter_now(context, request_id)) or \
                    await guard._enter(context, request_id, admin_only, False, open_kind, request)
                async for msg in fn(servicer, request, ctx):
                    yield msg
            except Exception as exc:
                await _failed(context, exc, request_id, guard.scrubber, fn.__name__)
            finally:
                if ctx is not None and ctx.open_decision is not None:
                    guard.open_gate.leave()  # MAX_CONCURRENT_REQUESTS counts calls in flight
        return handler
    return wrap


async def _failed(context: Any, exc: Exception, request_id: str, scrubber: Scrubber | None, method: str) -> None:
    """What a guarded method's error becomes: a TollgateError its status; an abort (grpc.aio's or the
    in-process channel's) goes on as it is; anything else is logged and answered INTERNAL.
    (Cancellation is not an Exception: it never comes here.)"""
    if isinstance(exc, E.TollgateError):
        await _abort(context, exc, request_id, scrubber)
    elif isinstance(exc, grpc.aio.AbortError) or _is_abort(exc):
        raise exc
    else:
        log.error("unhandled error in %s (request %s)", method, request_id, exc_info=exc)
        await _abort(context, _internal(exc), request_id, scrubber)


def _is_abort(exc: BaseException) -> bool:
    # In-process aborts raise the channel's own exception type; let it pass untouched.
    return getattr(exc, "_tollgate_abort", False)
