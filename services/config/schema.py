"""The typed configuration: frozen dataclasses built once by config/load.py and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(Exception):
    """A bad setting: names where it came from, which field, and what is wrong (one line)."""

    def __init__(self, source: str, field_name: str, problem: str) -> None:
        # `field_name` is the name the user wrote: "server.grpc_addr", "ROUTER_SERVICES[0].backend_type",
        # "ROUTING_STRATEGY"; "-" when the whole source is bad (unreadable file, not JSON).
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
    load_models: bool = False  # keys of this tier may load models (seed 000 /api/models/load); admins always may
    # Issue 16: the plan's monthly price (None = custom, shown as such) and $ budgets (0 = none).
    price_usd_month: float | None = None
    budget_usd_day: float = 0.0
    budget_usd_month: float = 0.0


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
    auth_failures_per_minute: int = 100  # per client address, then 429 (SPEC, F6); 0 = no limit
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
    # Open connections to one upstream host at once; 0 = as many as requests in flight. A cap
    # makes the requests past it wait for a connection inside the gateway, unseen, their try's
    # time running: with 256 (the old fixed value) 1,000 streams to one provider ran in four waves.
    upstream_connections_per_host: int = 0
    shutdown_grace_s: float = 30.0
    ledger_flush_s: float = 0.5
    # Model aliases and fallback groups: "smart" -> ("anthropic/claude-sonnet-4-6", "openai/gpt-4.1", ...),
    # tried in that order with failover between them as between keys (TOML [model_aliases]).
    model_aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()
    responses_ttl_s: float = 30 * 86400.0  # stored Responses API responses expire after this (OpenAI keeps 30 days)
    responses_max_per_caller: int = 10_000  # stored responses per caller; past it the oldest go
    demo: str = "auto"  # auto: the demo provider serves when no real provider is configured
    providers: tuple[ProviderConfig, ...] = ()
    tiers: tuple[TierConfig, ...] = ()
    cors_origins: tuple[str, ...] = ()
    cookie_secure: bool = False  # console cookies carry Secure: set it when served behind TLS
    demo_data: bool = False  # seed 003's demo users and plans at start (make demo), passwords printed
    unpriced_models: str = "free"  # under a $ budget, a model without a price: "free" (costs 0) or "refuse"
    budget_alert_pct: float = 80.0  # a budget's soft threshold: one alert per period when crossed
    alert_webhooks: tuple[str, ...] = ()  # URLs that get each alert as a signed JSON POST
    alert_webhook_secret: str = field(default="", repr=False)  # HMAC key of X-Tollgate-Signature ("" = derived)
    test_hooks: bool = False
    log_level: str = "INFO"
    bridge_target: str = ""  # bridge alone: the remote gRPC address; "" = in-process
    # Seed 004's "open mode": inference, the model catalogue and /ws answer without a key, under
    # per-IP limits instead (docs/open-mode.md says the risks). Off unless set.
    open_mode: bool = False
    open_window_s: float = 900.0  # RATE_LIMIT_WINDOW_MS / 1000
    open_max_requests: int = 100  # RATE_LIMIT_MAX_REQUESTS: per IP per window, every open route
    open_inference_max: int = 50  # per IP per window, /api/v1/inference(/stream) and /ws requests
    open_ws_per_minute: int = 5  # new WebSocket connections per IP per minute
    ws_max_connections: int = 1000  # WS_MAX_CONNECTIONS: open WebSockets at once, all callers
    ws_heartbeat_s: float = 30.0  # WS_HEARTBEAT_INTERVAL / 1000
    max_concurrent_requests: int = 100  # MAX_CONCURRENT_REQUESTS: open-mode calls in flight at once (503 past it)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    environment: str = "development"  # NODE_ENV, reported in /health
    model_dir: str = ""  # where gguf sources are read from ("" = <data_dir>/models)
    workers: int = 1  # gateway processes on the same ports (SO_REUSEPORT), > 1 needs redis_url
    worker_id: int = 0  # set by the supervisor for each worker it starts (0 = no supervisor)
    # Traces (docs/operations.md): off unless an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT).
    otlp_endpoint: str = ""  # OTLP/HTTP base URL; spans go to <it>/v1/traces
    trace_content: bool = False  # prompts and completions in span attributes: off unless the operator turns it on
    trace_sample_ratio: float = 1.0  # of new traces (a caller's sampled flag is followed)
    source: str = "defaults"
