"""Who is calling: the resolved identity every RPC works with after authentication."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, frozen=True)
class Principal:
    key_id: str  # "ak_…" (issued key), "AUTH_KEY_01" (static key), "admin", "anonymous"
    kind: str  # api_key | token | static | admin | session | anonymous
    tier: str  # the tier whose limits apply ("unlimited" for none)
    user_id: str = ""
    role: str = "user"  # "admin" for the admin key and admin users
    name: str = ""
    session_id: str = ""  # the session row behind a `tgs_` token (issue 16), else ""
    own: tuple[int, int, int, int] = ()  # a token's own (rpm, rpd, tpd, tpm_month), tighter than its plan
    # $ budgets beside the plan's (issue 16): (user per day, user per month, token per day, token per month), 0 = none
    budgets: tuple[float, float, float, float] = ()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    # The limiter subject: a user's plan is shared by all of that user's tokens and sessions
    # (issue 16); a key with no user (seed 000's admin API, static keys) has its own limits. Set
    # once when the principal is built (a cached key's principal serves many requests), read
    # several times per request.
    subject: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject", "u:" + self.user_id if self.user_id and self.kind in ("token", "session")
                           else "ak:" + self.key_id)
