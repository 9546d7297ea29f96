"""The error table: every failure the core raises, with its gRPC code and AIP-193 reason.

Code raises these; rpc/interceptors.py turns them into a google.rpc.Status (ErrorInfo plus
RetryInfo / QuotaFailure / BadRequest); each bridge codec renders its own body from that.
Messages never contain a secret: callers pass ids, never keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc


@dataclass(slots=True)
class QuotaViolation:
    subject: str  # e.g. "api_key:ak_123" (an id, never a key)
    description: str


@dataclass(slots=True)
class FieldViolation:
    field: str
    description: str


class TollgateError(Exception):
    """Base: a declared failure with a gRPC status code and an ErrorInfo reason."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        retry_after_s: float | None = None,
        quota_violations: list[QuotaViolation] | None = None,
        field_violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = metadata or {}
        self.retry_after_s = retry_after_s
        self.quota_violations = quota_violations or []
        self.field_violations = field_violations or []


class InvalidArgument(TollgateError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class Unauthenticated(TollgateError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(TollgateError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class NotFound(TollgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(TollgateError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(TollgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(TollgateError):
    """A quota or rate limit of ours, or every upstream answering 429."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMIT_EXCEEDED"


class PayloadTooLarge(TollgateError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "PAYLOAD_TOO_LARGE"


class Unavailable(TollgateError):
    """No upstream could serve (all failed, all breakers open) or we are shutting down."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UPSTREAM_UNAVAILABLE"


class DeadlineExceeded(TollgateError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Cancelled(TollgateError):
    code = grpc.StatusCode.CANCELLED
    reason = "CANCELLED"


class Unimplemented(TollgateError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class Internal(TollgateError):
    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"


class UpstreamRejected(TollgateError):
    """The provider refused the gateway's own key (its 401/403): the caller is not at fault."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "PROVIDER_AUTH_FAILED"


class UpstreamBadRequest(TollgateError):
    """The provider said the caller's request is wrong (its 400/404/422): kept as the caller's error."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "UPSTREAM_BAD_REQUEST"


@dataclass(slots=True)
class UpstreamFailure(Exception):
    """What an adapter raises when one attempt fails; the router decides what happens next.

    kind: "connect" | "timeout" | "rate_limited" | "server" | "auth" | "bad_request" |
          "content_filter" | "context_length" | "protocol" | "not_found"
    """

    kind: str
    status: int = 0
    message: str = ""
    retry_after_s: float | None = None
    provider_code: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind} ({self.status}): {self.message}"

    @property
    def retryable(self) -> bool:
        """Connect errors, timeouts, 408/409/429 and 5xx may go to another candidate (RELIABILITY A4)."""
        return self.kind in ("connect", "timeout", "rate_limited", "server", "auth", "protocol")

    @property
    def counts_for_breaker(self) -> bool:
        """5xx, connect, reset and timeout count; 429 and caller errors do not (RELIABILITY A1)."""
        return self.kind in ("connect", "timeout", "server", "protocol")
