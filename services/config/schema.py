"""The typed configuration: frozen dataclasses built once by config/load.py and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(Exception):
    """A bad setting: names where it came from, which field, and what is wrong (one line)."""

    def __init__(self, source: str, field_name: str, problem: str) -> None:
        super().__init__(f"{source}: {field_name}: {problem}")
        self.source = source
        self.field_name = field_name
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ProviderKeyConfig:
    id: str  # public id shown in X-LLM-Key-ID and status pages
    secret: str = field(repr=False, default="")
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    keys: tuple[ProviderKeyConfig, ...]
    models: tuple[str, ...] = ()  # allow-list; empty = any model
    default_model: str = ""
    priority: int = 0
    weight: float = 1.0
    rpm: int = 0  # per key, 0 = unlimited
    rate_window_s: float = 60.0
    daily_quota: int = 0  # requests per key per day, 0 = unlimited
    timeout_s: float = 60.0
    max_in_flight: int = 0  # per key: concurrent upstream calls, 0 = unlimited (RELIABILITY A8)
    source: str = ""  # where it was declared, for error messages


@dataclass(frozen=True, slots=True)
class TierConfig:
    name: str
    rpm: int = 0
    rpd: int = 0
    tpd: int = 0
    tpm_month: int = 0
    description: str = ""


@dataclass(frozen=True, slots=True)
class StaticKey:
    """A key from AUTH_KEY / AUTH_KEY_01..99 (seed 002): its public id and the secret."""

    id: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Config:
    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str = "127.0.0.1:8080"
    data_dir: str = ".tollgate"
    database_url: str = ""
    redis_url: str = ""
    admin_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    enable_auth: bool = True
    static_keys: tuple[StaticKey, ...] = ()
    auth_key_tier: str = ""
    default_tier: str = "basic"
    strategy: str = "balanced"
    limiter_fail_mode: str = "open"  # open: per-gateway limits when Redis is down; closed: 503
    quota_timezone: str = "UTC"
    max_body_bytes: int = 16 * 1024 * 1024
    max_messages: int = 2048
    request_timeout_s: float = 600.0
    stream_stall_s: float = 60.0  # a stream whose client reads nothing this long is closed (0 = never)
    first_token_timeout_s: float = 0.0  # 0 = only the per-try timeout applies
    idle_timeout_s: float = 0.0  # 0 = no limit on silence between stream reads
    max_attempts: int = 4
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    retry_after_wait_max_s: float = 5.0  # Retry-After up to this: wait and retry; above: fail over
    shutdown_grace_s: float = 30.0
    ledger_flush_s: float = 0.5
    demo: str = "auto"  # auto: the demo provider serves when no real provider is configured
    providers: tuple[ProviderConfig, ...] = ()
    tiers: tuple[TierConfig, ...] = ()
    cors_origins: tuple[str, ...] = ()
    cookie_secure: bool = False  # console cookies carry Secure: set it when served behind TLS
    test_hooks: bool = False
    log_level: str = "INFO"
    bridge_target: str = ""  # bridge alone: the remote gRPC address; "" = in-process
    workers: int = 1  # gateway processes on the same ports (SO_REUSEPORT), > 1 needs redis_url
    worker_id: int = 0  # set by the supervisor for each worker it starts (0 = no supervisor)
    source: str = "defaults"
