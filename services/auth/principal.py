"""Who is calling: the resolved identity every RPC works with after authentication."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Principal:
    key_id: str  # "ak_…" (issued key), "AUTH_KEY_01" (static key), "admin", "anonymous"
    kind: str  # api_key | token | static | admin | session | anonymous
    tier: str  # the tier whose limits apply ("unlimited" for none)
    user_id: str = ""
    role: str = "user"  # "admin" for the admin key and admin users
    name: str = ""
    session_id: str = ""  # the session row behind a `tgs_` token (issue 16), else ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def subject(self) -> str:
        """The limiter subject: quotas are per API key (seed 000)."""
        return "ak:" + self.key_id
