"""The store's vocabulary: plain records the rest of the gateway reads, and the store's errors.

Nothing outside `services/store/` ever sees a peewee row; repos convert to these dataclasses.
Secrets are not fields here: an ApiKeyRecord has no hash, a ProviderKeyRecord no sealed value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

ROLE_ADMIN = "admin"
ROLE_USER = "user"
KIND_API = "api"  # issued by an admin (seed 000's /api/admin/keys)
KIND_TOKEN = "token"  # created by a user for themselves (seed 001's /api/tokens)


@dataclass(slots=True)
class TierRecord:
    """A plan's limits; 0 means unlimited."""

    name: str
    rpm: int = 0  # requests per minute
    rpd: int = 0  # requests per day
    tpd: int = 0  # tokens per day
    tpm_month: int = 0  # tokens per month
    description: str = ""
    # Plans and budgets page (issue 16 point 4): the price (None = custom), $ budgets (0 = none) and
    # when an admin last created/edited it at run time (None = as the config or defaults seeded it).
    price_usd_month: float | None = None
    budget_usd_day: float = 0.0
    budget_usd_month: float = 0.0
    edited_at: float | None = None


STATE_ACTIVE = "active"
STATE_SUSPENDED = "suspended"
STATE_DELETED = "deleted"
STATES = (STATE_ACTIVE, STATE_SUSPENDED, STATE_DELETED)


@dataclass(slots=True)
class UserRecord:
    id: str
    email: str
    role: str  # ROLE_ADMIN | ROLE_USER
    tier: str
    created_at: float
    disabled: bool = False  # True unless state is active (kept for the code that reads it)
    state: str = STATE_ACTIVE
    budget_usd_day: float | None = None
    budget_usd_month: float | None = None
    invited: bool = False  # created by an admin, password not set yet


@dataclass(slots=True)
class AuditRecord:
    """One admin action: who, what, on what, from where, when, before/after as JSON (never a secret)."""

    id: str
    actor: str
    action: str
    target: str
    ip: str
    created_at: float
    before: str = ""
    after: str = ""


@dataclass(slots=True)
class AlertRecord:
    id: str
    kind: str  # budget_threshold | quota_80 | quota_100 | provider_key_disabled | breaker_open
    subject: str
    message: str
    created_at: float
    delivered: bool = False


@dataclass(slots=True)
class SessionRecord:
    """A signed-in browser or client: the row that makes a session token revocable."""

    id: str
    user_id: str  # "operator" for the admin key's sessions
    role: str
    created_at: float
    expires_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None
    user_agent: str = ""
    ip: str = ""

    def live(self, now: float) -> bool:
        return self.revoked_at is None and self.expires_at > now


@dataclass(slots=True)
class ApiKeyRecord:
    """An issued key as lists show it: its prefix, never the key or its hash."""

    id: str
    prefix: str
    name: str
    email: str
    tier: str
    user_id: str | None
    kind: str  # KIND_API | KIND_TOKEN
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None
    last_used_at: float | None = None
    # Issue 16: a token's own limits (0 = only the plan's) and $ budgets (None = none).
    rpm: int = 0
    rpd: int = 0
    tpd: int = 0
    tpm_month: int = 0
    budget_usd_day: float | None = None
    budget_usd_month: float | None = None
    owner_budgets: tuple[float, float] = field(default=(0.0, 0.0), compare=False)  # the owner's (day, month) $
    owner_state: str = field(default="", compare=False)  # the owning user's state when looked up for authentication, "" = no user

    def active(self, now: float) -> bool:
        """Not revoked and not expired at `now`."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(slots=True)
class ProviderKeyRecord:
    """A provider key's settings and mask; the sealed secret stays in the store."""

    id: str
    user_id: str | None  # None: a gateway-wide key shared by every caller
    provider_kind: str
    name: str
    base_url: str
    mask: str
    models: list[str]
    default_model: str
    priority: int
    daily_quota: int
    rpm: int
    created_at: float
    disabled: bool = False


@dataclass(slots=True)
class UsageRecord:
    """One ledger row: exactly one per request (request_id is the primary key)."""

    request_id: str
    key_id: str = ""
    user_id: str = ""
    surface: str = ""
    provider: str = ""
    provider_key_id: str = ""
    model: str = ""
    status: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 0
    created_at: float = 0.0  # epoch seconds
    error: str = ""


@dataclass(slots=True)
class UsageFilter:
    """Ledger filters; None means 'any'. `since` is inclusive, `until` exclusive."""

    key_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    since: float | None = None
    until: float | None = None
    status: str | None = None  # issue 16: the ledger explorer's filter


class RegistrationClosed(PermissionDenied):
    """Sign-up attempted while registration is closed (after the first user, by default)."""

    reason = "REGISTRATION_CLOSED"


class EmailTaken(AlreadyExists):
    """A user with this email already exists. The message does not repeat the address."""

    reason = "EMAIL_TAKEN"


class LastAdmin(FailedPrecondition):
    """Demoting, suspending or deleting the last active admin (409 on REST)."""

    reason = "LAST_ADMIN"


class UnknownTier(InvalidArgument):
    reason = "UNKNOWN_TIER"


class UnknownUser(NotFound):
    reason = "USER_NOT_FOUND"


class ProviderKeyNotFound(NotFound):
    reason = "PROVIDER_KEY_NOT_FOUND"


@dataclass(slots=True)
class LoadedModelRecord:
    """A model loaded at run time (issue 19, seed 000's /api/models/load). No sealed key here:
    auth/provider_secrets.py opens it, for the router only."""

    id: str
    name: str  # what callers route by, e.g. "My Custom Model"
    format: str  # gguf | ollama | openai
    source: str  # as given (a path, a library name, or a base URL without credentials)
    provider: str  # the configured provider serving it (an Ollama); "" = its own base URL below
    kind: str  # provider kind: ollama, openai_compatible
    base_url: str
    upstream_model: str  # the name sent upstream
    description: str = ""
    context_length: int = 0
    created_by: str = ""  # principal key id of who loaded it
    created_at: float = 0.0
    has_key: bool = False
