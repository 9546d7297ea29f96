"""What a request's tries add up to: the error the caller gets when the router stops.

A caller error (400, content policy, context length) ends the request at once with the
upstream's own meaning; a walk that found no answer ends with the error that best explains
why (RELIABILITY A3-A7): a deadline, silence everywhere, every key rate limited, a model no
upstream has, every key refused, every circuit open, or the last failure.
"""

from __future__ import annotations

from services.core import errors as E
from services.core.errors import UpstreamFailure
from services.providers.transport import PROVIDER_AUTH_MESSAGE
from services.routing.breaker import Breaker
from services.routing.route_log import RouteLog


def caller_error(f: UpstreamFailure) -> E.TollgateError:
    """An upstream's refusal of the request itself: no other upstream would answer differently."""
    meta = {"upstream_status": str(f.status)} if f.status else {}
    if f.kind == "context_length":
        return E.InvalidArgument(f.message, reason="CONTEXT_LENGTH_EXCEEDED", metadata=meta)
    if f.kind == "content_filter":
        return E.InvalidArgument(f.message, reason="CONTENT_FILTERED", metadata=meta)
    if f.status == 413:
        return E.PayloadTooLarge(f.message or "request too large for the upstream", metadata=meta)
    return E.UpstreamBadRequest(f.message or "the upstream rejected the request", metadata=meta)


def exhausted(log: RouteLog, failures: list[UpstreamFailure], deadline: float, now: float,
              breaker: Breaker) -> E.TollgateError:
    """The error for a walk that ended with no answer: `failures` are its tries and the skips that explain one."""
    if now >= deadline - 0.001 or (failures and failures[-1].kind == "timeout" and now >= deadline - 0.05):
        return E.DeadlineExceeded("the request's deadline passed before an upstream answered", reason="DEADLINE_EXCEEDED")
    if failures and all(f.kind == "timeout" for f in failures):
        # RELIABILITY A5: silence everywhere is a gateway timeout (504), not an outage (503).
        return E.DeadlineExceeded("no upstream answered within its timeout", reason="UPSTREAM_TIMEOUT")
    if failures and all(f.kind == "rate_limited" for f in failures):
        # RELIABILITY A3: every candidate said 429: so do we, with the soonest time one frees up.
        waits = [f.retry_after_s for f in failures if f.retry_after_s is not None]
        wait = min(waits) if waits else 1.0
        return E.ResourceExhausted("every upstream is rate limited", reason="UPSTREAM_RATE_LIMITED", retry_after_s=wait)
    if failures and all(f.kind == "not_found" for f in failures):
        return E.NotFound(failures[-1].message or "model not found upstream", reason="MODEL_NOT_FOUND")
    if failures and all(f.kind == "auth" for f in failures):
        return E.UpstreamRejected(PROVIDER_AUTH_MESSAGE, reason="PROVIDER_AUTH_FAILED")
    if not failures:
        # RELIABILITY A7: every circuit open: no upstream call, and an honest Retry-After.
        waits = [breaker.open_until(a.key_id) for a in log.attempts if a.outcome == "breaker_open"]
        waits = [w - now for w in waits if w]
        retry = min([w for w in waits if w > 0] or [1.0])
        return E.Unavailable("no upstream can take the request now (all circuits open)",
                             reason="NO_AVAILABLE_UPSTREAM", retry_after_s=max(1.0, retry))
    last = failures[-1]
    # An upstream that answered garbage is a bad gateway (502), one that did not answer is unavailable (503).
    reason = "UPSTREAM_PROTOCOL_ERROR" if last.kind == "protocol" else "UPSTREAM_UNAVAILABLE"
    return E.Unavailable(f"all upstreams failed; last: {last.message}", reason=reason,
                         metadata={"last_failure": last.kind}, retry_after_s=1.0)
