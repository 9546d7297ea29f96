"""Builds the one Config from the TOML file, TOLLGATE_* variables and the seeds' own variables.

Precedence, lowest first: embedded defaults, the TOML file (--config / TOLLGATE_CONFIG /
./tollgate.toml if present), the seeds' variables (OPENAI_API_KEY, ROUTER_SERVICES, HOST,
PORT, ...), then TOLLGATE_<FIELD>. The only module besides the bridge's settings that reads
the environment. Every problem raises ConfigError naming source, field and what is wrong.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tomllib
from typing import Any, Callable, Mapping

from services.config.defaults import DEFAULT_TIERS, DEMO_PROVIDER
from services.config.schema import Config, ConfigError, ProviderConfig, ProviderKeyConfig, StaticKey, TierConfig
from services.config.kinds import KINDS, STRATEGY_NAMES, resolve

# TOML sections group fields for people; the fields themselves are flat and unique.
SECTIONS = ("server", "auth", "store", "limits", "routing", "logging", "open_mode")
ENV = "environment"  # the source named for a variable's error; the field is the variable itself
PROVIDER_FIELDS = {
    "name", "kind", "base_url", "api_key", "api_key_env", "api_keys", "models", "default_model",
    "priority", "weight", "rpm", "rate_window_s", "daily_quota", "timeout_s", "max_in_flight",
}
TIER_FIELDS = {"name", "rpm", "rpd", "tpd", "tpm_month", "description", "load_models",
               "requests_per_minute", "requests_per_day", "tokens_per_day", "tokens_per_month",
               "price_usd_month", "budget_usd_day", "budget_usd_month"}


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = dict(os.environ if env is None else env)
    path = path or env.get("TOLLGATE_CONFIG") or ("tollgate.toml" if os.path.exists("tollgate.toml") else None)
    values: dict[str, Any] = {}
    # field -> (source, the name the user wrote): every error names the setting as written
    # ("server.grpc_addr", "ROUTING_STRATEGY", "TOLLGATE_GRPC_ADDR"), never our field name.
    origin: dict[str, tuple[str, str]] = {}
    providers: list[ProviderConfig] = []
    tiers: dict[str, TierConfig] = {t.name: t for t in DEFAULT_TIERS}
    source = "defaults"

    if path:
        source = path
        data = _read_toml(path)
        for key, val in data.items():
            if key in SECTIONS and isinstance(val, dict):
                for k, v in val.items():
                    name = _field(path, f"{key}.{k}", k)
                    values[name] = v
                    origin[name] = (path, f"{key}.{k}")
            elif key == "providers":
                if not isinstance(val, list):
                    raise ConfigError(path, "providers", "must be an array of tables ([[providers]])")
                providers += [_provider(path, _dotted(f"providers[{i}]"), p, env) for i, p in enumerate(val)]
            elif key == "tiers":
                if not isinstance(val, list):
                    raise ConfigError(path, "tiers", "must be an array of tables ([[tiers]])")
                for i, t in enumerate(val):
                    tier = _tier(path, f"tiers[{i}]", t)
                    tiers[tier.name] = tier
            else:
                name = _field(path, key, key)
                values[name] = val
                origin[name] = (path, key)

    providers += _seed_providers(env, {p.name for p in providers})
    for name, (val, var) in _seed_values(env).items():
        values[name] = val
        origin[name] = (ENV, var)
    for f in dataclasses.fields(Config):
        var = "TOLLGATE_" + f.name.upper()
        if var in env and f.name not in ("providers", "tiers", "static_keys", "source"):
            values[f.name] = env[var]
            origin[f.name] = (ENV, var)

    names = [p.name for p in providers]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(source, "providers", f"duplicate provider name {sorted(dup)[0]!r}")
    values["providers"] = tuple(providers)
    values["tiers"] = tuple(tiers.values())
    values["static_keys"] = _static_keys(env)
    values["source"] = source
    cfg = _coerce(source, values, origin)
    return _validate(cfg, origin)


def with_demo(cfg: Config) -> Config:
    """Adds the demo provider when configured to (auto: only when no real provider exists)."""
    mode = cfg.demo
    if mode == "off" or (mode == "auto" and cfg.providers):
        return cfg
    if any(p.name == "demo" for p in cfg.providers):
        return cfg
    return dataclasses.replace(cfg, providers=cfg.providers + (DEMO_PROVIDER,))


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "-", "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "-", f"not valid TOML ({e})") from None


def _field(source: str, where: str, name: str) -> str:
    if name not in {f.name for f in dataclasses.fields(Config)} or name in ("providers", "tiers", "static_keys"):
        raise ConfigError(source, where, "unknown setting")
    return name


def _dotted(prefix: str, written: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """Names a provider field as the user wrote it: `providers[0].kind`, or through `written`
    (our field -> their key) `ROUTER_SERVICES[0].backend_type`; "" names the entry itself."""
    written = written or {}
    return lambda f: f"{prefix}.{written.get(f, f)}" if f else prefix


def _provider(source: str, where: Callable[[str], str], raw: Any, env: Mapping[str, str]) -> ProviderConfig:
    if not isinstance(raw, dict):
        raise ConfigError(source, where(""), "must be a table")
    unknown = set(raw) - PROVIDER_FIELDS
    if unknown:
        raise ConfigError(source, where(sorted(unknown)[0]), "unknown field")
    kind_name = str(raw.get("kind") or raw.get("name") or "")
    kind = resolve(kind_name)
    if kind is None:
        raise ConfigError(source, where("kind"), f"unknown kind {kind_name!r} (one of {', '.join(KINDS)})")
    name = str(raw.get("name") or kind.name)
    base_url = str(raw.get("base_url") or kind.base_url)
    if kind.wire != "demo" and not base_url:
        raise ConfigError(source, where("base_url"), f"required for kind {kind.name}")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(source, where("base_url"), "must start with http:// or https://")
    secrets: list[str] = []
    if raw.get("api_key"):
        secrets.append(str(raw["api_key"]))
    if raw.get("api_keys"):
        if not isinstance(raw["api_keys"], list):
            raise ConfigError(source, where("api_keys"), "must be a list of strings")
        secrets += [str(k) for k in raw["api_keys"]]
    if raw.get("api_key_env"):
        var = str(raw["api_key_env"])
        if not env.get(var):
            raise ConfigError(source, where("api_key_env"), f"environment variable {var} is not set")
        secrets.append(env[var])
    if not secrets and kind.key_env and env.get(kind.key_env):
        secrets.append(_secret_var(env, kind.key_env))
    if not secrets:
        if kind.needs_key:
            hint = f" or set {kind.key_env}" if kind.key_env else ""
            raise ConfigError(source, where("api_key"), f"provider {name!r} has no key (give api_key or api_key_env{hint})")
        secrets = [""]
    models = raw.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(source, where("models"), "must be a list of model names")
    weight = _num(source, where("weight"), raw.get("weight", 1.0), float)
    return ProviderConfig(
        name=name,
        kind=kind.name,
        base_url=base_url,
        keys=tuple(ProviderKeyConfig(id=f"{name}-k{i + 1}", secret=s, weight=weight) for i, s in enumerate(secrets)),
        models=tuple(models),
        default_model=str(raw.get("default_model") or (models[0] if models else "")),
        priority=_num(source, where("priority"), raw.get("priority", 0), int),
        weight=weight,
        rpm=_num(source, where("rpm"), raw.get("rpm", 0), int),
        rate_window_s=_num(source, where("rate_window_s"), raw.get("rate_window_s", 60.0), float),
        daily_quota=_num(source, where("daily_quota"), raw.get("daily_quota", 0), int),
        timeout_s=_num(source, where("timeout_s"), raw.get("timeout_s", 60.0), float),
        max_in_flight=_num(source, where("max_in_flight"), raw.get("max_in_flight", 0), int),
        source=source,
    )


def _tier(source: str, where: str, raw: Any) -> TierConfig:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise ConfigError(source, f"{where}.name", "a tier needs a name")
    unknown = set(raw) - TIER_FIELDS
    if unknown:
        raise ConfigError(source, f"{where}.{sorted(unknown)[0]}", "unknown field")

    def n(short: str, long: str) -> int:
        written = short if short in raw or long not in raw else long
        return _num(source, f"{where}.{written}", raw.get(short, raw.get(long, 0)), int)

    return TierConfig(
        name=str(raw["name"]),
        rpm=n("rpm", "requests_per_minute"),
        rpd=n("rpd", "requests_per_day"),
        tpd=n("tpd", "tokens_per_day"),
        tpm_month=n("tpm_month", "tokens_per_month"),
        description=str(raw.get("description", "")),
        load_models=_bool(source, f"{where}.load_models", raw.get("load_models", False)),
        price_usd_month=None if raw.get("price_usd_month") is None else _num(source, f"{where}.price_usd_month",
                                                                             raw["price_usd_month"], float),
        budget_usd_day=_num(source, f"{where}.budget_usd_day", raw.get("budget_usd_day", 0), float),
        budget_usd_month=_num(source, f"{where}.budget_usd_month", raw.get("budget_usd_month", 0), float),
    )


# ROUTER_SERVICES keys (seed 002) -> our provider fields; errors name the user's key.
ROUTER_SERVICE_KEYS = {
    "name": "name", "backend_type": "kind", "kind": "kind", "base_url": "base_url", "api_key": "api_key",
    "priority": "priority", "models": "models", "default_model": "default_model", "weight": "weight",
    "rate_limit_requests": "rpm", "rate_limit_window": "rate_window_s", "timeout": "timeout_s",
    "timeout_s": "timeout_s", "max_in_flight": "max_in_flight",
}


def _seed_providers(env: Mapping[str, str], taken: set[str]) -> list[ProviderConfig]:
    """ROUTER_SERVICES (seed 002) and the providers' own key variables (seeds 001-003)."""
    out: list[ProviderConfig] = []
    if env.get("ROUTER_SERVICES"):
        try:
            services = json.loads(env["ROUTER_SERVICES"])
        except json.JSONDecodeError as e:
            raise ConfigError(ENV, "ROUTER_SERVICES", f"not valid JSON ({e.msg} at char {e.pos})") from None
        if not isinstance(services, list):
            raise ConfigError(ENV, "ROUTER_SERVICES", "must be a JSON array of services")
        for i, s in enumerate(services):
            entry = f"ROUTER_SERVICES[{i}]"
            if not isinstance(s, dict):
                raise ConfigError(ENV, entry, "must be an object")
            unknown = sorted(k for k in s if k not in ROUTER_SERVICE_KEYS)
            if unknown:
                raise ConfigError(ENV, f"{entry}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(ROUTER_SERVICE_KEYS))})")
            kind_key = "backend_type" if "backend_type" in s or "kind" not in s else "kind"
            timeout_key = "timeout" if "timeout" in s else "timeout_s"
            raw = {
                "name": s.get("name") or s.get("backend_type"),
                "kind": s.get("backend_type") or s.get("kind") or "openai_compatible",
                "base_url": s.get("base_url", ""),
                "api_key": s.get("api_key", ""),
                "priority": s.get("priority", 0),
                "models": s.get("models", []),
                "default_model": s.get("default_model", ""),
                "rpm": s.get("rate_limit_requests", 0),
                "rate_window_s": s.get("rate_limit_window", 60),
                "timeout_s": s.get(timeout_key, 60),
                "max_in_flight": s.get("max_in_flight", 0),
            }
            if "weight" in s:
                raw["weight"] = s["weight"]
            written = {"kind": kind_key, "rpm": "rate_limit_requests", "rate_window_s": "rate_limit_window",
                       "timeout_s": timeout_key}
            p = _provider(ENV, _dotted(entry, written), {k: v for k, v in raw.items() if v not in ("", None)}, env)
            out.append(dataclasses.replace(p, source="ROUTER_SERVICES"))
        return out
    # Without ROUTER_SERVICES every provider whose key variable is set is routable (seed 002 auto router).
    priority = 0
    for kind in KINDS.values():
        if kind.key_env and env.get(kind.key_env) and kind.name not in taken:
            var = kind.key_env
            p = _provider(ENV, lambda f, var=var: var, {"kind": kind.name, "priority": priority}, env)
            out.append(dataclasses.replace(p, source=var))
            priority += 1
    if env.get("OLLAMA_BASE_URL") and "ollama" not in taken:
        p = _provider(ENV, lambda f: "OLLAMA_BASE_URL", {"kind": "ollama", "base_url": env["OLLAMA_BASE_URL"], "priority": priority}, env)
        out.append(dataclasses.replace(p, source="OLLAMA_BASE_URL"))
    return out


LOG_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "warning": "WARNING", "error": "ERROR",
              "critical": "CRITICAL"}


def _seed_values(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """field -> (value, the variable it came from), for the seeds' own variables. Values in the
    seeds' units (milliseconds) are converted here, and a bad one names its variable."""
    v: dict[str, tuple[Any, str]] = {}
    if env.get("HOST") or env.get("PORT"):
        host = env.get("HOST") or "127.0.0.1"
        port = env.get("PORT") or "8080"
        if not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(ENV, "PORT", f"must be a port number (0-65535), got {port!r}")
        if not host or any(c.isspace() or c in "/:@" for c in host.strip("[]")) and not host.startswith("["):
            raise ConfigError(ENV, "HOST", f"must be a host name or address, got {host!r}")
        v["http_addr"] = (f"{host}:{port}", "HOST" if env.get("HOST") else "PORT")
    for var in ("ADMIN_API_KEY", "JWT_SECRET"):
        if env.get(var):
            _secret_var(env, var)
    for seed_var, field_name in (
        ("ADMIN_API_KEY", "admin_key"), ("DATABASE_URL", "database_url"), ("REDIS_URL", "redis_url"),
        ("ENABLE_AUTH", "enable_auth"), ("KEY_SELECTION_STRATEGY", "strategy"), ("ROUTING_STRATEGY", "strategy"),
        ("JWT_SECRET", "secret_key"), ("RATE_LIMIT_MAX_REQUESTS", "open_max_requests"),
        ("WS_MAX_CONNECTIONS", "ws_max_connections"), ("MAX_CONCURRENT_REQUESTS", "max_concurrent_requests"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "otlp_endpoint"),
    ):
        if env.get(seed_var):
            v[field_name] = (env[seed_var], seed_var)
    for seed_var, field_name in (("REQUEST_TIMEOUT", "request_timeout_s"), ("RATE_LIMIT_WINDOW_MS", "open_window_s"),
                                 ("WS_HEARTBEAT_INTERVAL", "ws_heartbeat_s")):
        if env.get(seed_var):
            v[field_name] = (_millis(seed_var, env[seed_var]), seed_var)
    if env.get("LOG_LEVEL"):
        level = LOG_LEVELS.get(env["LOG_LEVEL"].strip().lower())
        if level is None:
            raise ConfigError(ENV, "LOG_LEVEL", f"must be debug, info, warn or error, got {env['LOG_LEVEL']!r}")
        v["log_level"] = (level, "LOG_LEVEL")
    if env.get("NODE_ENV"):
        if env["NODE_ENV"] not in ("development", "production", "test"):
            raise ConfigError(ENV, "NODE_ENV", f"must be development, production or test, got {env['NODE_ENV']!r}")
        v["environment"] = (env["NODE_ENV"], "NODE_ENV")
    return v


def _millis(var: str, raw: str) -> float:
    """Seed 004's durations are milliseconds ("30000"); "30s" is taken too. A bare number under
    1000 is refused rather than guessed: seed 002 wrote REQUEST_TIMEOUT=60 meaning seconds."""
    text = raw.strip().lower()
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000.0 if float(text[:-2]) > 0 else _bad_ms(var, raw)
        if text.endswith("s"):
            return float(text[:-1]) if float(text[:-1]) > 0 else _bad_ms(var, raw)
        ms = float(text)
    except ValueError:
        raise ConfigError(ENV, var, f"must be milliseconds (e.g. 30000) or seconds with an s (30s), got {raw!r}") from None
    if ms < 1000:
        raise ConfigError(ENV, var, f"is in milliseconds: {raw!r} would be {ms / 1000:g} s; write {ms * 1000:g} or {raw}s")
    return ms / 1000.0


def _bad_ms(var: str, raw: str) -> float:
    raise ConfigError(ENV, var, f"must be a positive duration, got {raw!r}")


def _static_keys(env: Mapping[str, str]) -> tuple[StaticKey, ...]:
    keys = []
    if env.get("AUTH_KEY"):
        keys.append(StaticKey("AUTH_KEY", _secret_var(env, "AUTH_KEY")))
    for i in range(1, 100):
        var = f"AUTH_KEY_{i:02d}"
        if env.get(var):
            keys.append(StaticKey(var, _secret_var(env, var)))
    return tuple(keys)


def _secret_var(env: Mapping[str, str], var: str) -> str:
    """A key from a variable: a space, newline or control character in it is a copy-paste slip
    that would only show up later as a refused key; said now, naming the variable (never its value)."""
    value = env[var]
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(ENV, var, "must not contain spaces, newlines or control characters (a copy-paste slip?)")
    return value


def _num(source: str, where: str, value: Any, typ: type) -> Any:
    if isinstance(value, bool):
        raise ConfigError(source, where, f"must be a number, got {value!r}")
    try:
        out = typ(value)
    except (TypeError, ValueError):
        raise ConfigError(source, where, f"must be a number, got {value!r}") from None
    if out < 0:
        raise ConfigError(source, where, "must not be negative")
    return out


def _bool(source: str, where: str, val: Any) -> bool:
    if isinstance(val, str):
        if val.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError(source, where, f"must be true or false, got {val!r}")
        return val.lower() in ("1", "true", "yes", "on")
    if not isinstance(val, (bool, int)):
        raise ConfigError(source, where, f"must be true or false, got {val!r}")
    return bool(val)


def _aliases(source: str, where: str, val: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """[model_aliases] smart = ["anthropic/claude-sonnet-4-6", "openai/gpt-4.1"] (or the same as JSON in
    TOLLGATE_MODEL_ALIASES): each alias an ordered, non-empty list of model names."""
    if isinstance(val, str):
        try:
            val = json.loads(val)
        except ValueError:
            raise ConfigError(source, where, "must be a JSON object of alias -> list of models") from None
    if isinstance(val, (list, tuple)):
        val = dict(val)
    if not isinstance(val, dict):
        raise ConfigError(source, where, "must be a table of alias = [models, in order]")
    out = []
    for alias, members in val.items():
        if isinstance(members, str):
            members = [members]
        if (not isinstance(alias, str) or not alias or not isinstance(members, (list, tuple)) or not members
                or not all(isinstance(m, str) and m and m != alias for m in members)):
            raise ConfigError(source, f"{where}.{alias}", "must be a non-empty list of other model names")
        out.append((alias, tuple(members)))
    return tuple(out)


def _coerce(source: str, values: dict[str, Any], origin: dict[str, tuple[str, str]]) -> Config:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.name not in values:
            continue
        val = values[f.name]
        default = f.default
        src, where = origin.get(f.name, (source, f.name))
        if isinstance(default, bool):
            out[f.name] = _bool(src, where, val)
        elif isinstance(default, int) and not isinstance(default, bool):
            out[f.name] = _num(src, where, val, int)
        elif isinstance(default, float):
            out[f.name] = _num(src, where, val, float)
        elif f.name == "model_aliases":
            out[f.name] = _aliases(src, where, val)
        elif f.name in ("cors_origins", "trusted_proxies", "alert_webhooks"):
            out[f.name] = tuple(x.strip() for x in val.split(",") if x.strip()) if isinstance(val, str) else tuple(val)
        else:
            out[f.name] = val
    return Config(**out)


def _validate(cfg: Config, origin: dict[str, tuple[str, str]]) -> Config:
    def bad(field_name: str, problem: str) -> ConfigError:
        src, where = origin.get(field_name, (cfg.source, field_name))
        return ConfigError(src, where, problem)

    for name in ("grpc_addr", "http_addr"):
        addr = getattr(cfg, name)
        host, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise bad(name, f"must be host:port, got {addr!r}")
    strategy = cfg.strategy.replace("_", "-").lower()
    if strategy not in STRATEGY_NAMES:
        raise bad("strategy", f"unknown strategy {cfg.strategy!r} (one of {', '.join(STRATEGY_NAMES)})")
    if cfg.limiter_fail_mode not in ("open", "closed"):
        raise bad("limiter_fail_mode", "must be 'open' or 'closed'")
    if cfg.auth_failures_per_minute < 0:
        raise bad("auth_failures_per_minute", "must be >= 0 (0 = no limit)")
    if cfg.demo not in ("auto", "on", "off"):
        raise bad("demo", "must be auto, on or off")
    if cfg.database_url and not cfg.database_url.startswith(("sqlite", "postgres")):
        raise bad("database_url", "must be sqlite:///path or postgresql://...")
    if cfg.redis_url and not cfg.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise bad("redis_url", "must be redis://host:port/db")
    if not 0.0 <= cfg.trace_sample_ratio <= 1.0:
        raise bad("trace_sample_ratio", f"must be between 0 and 1, got {cfg.trace_sample_ratio!r}")
    if cfg.otlp_endpoint and not cfg.otlp_endpoint.startswith(("http://", "https://")):
        raise bad("otlp_endpoint", f"must be an http(s):// URL (OTLP/HTTP), got {cfg.otlp_endpoint!r}")
    check_workers(cfg, *origin.get("workers", (cfg.source, "workers")))
    tiers = {t.name for t in cfg.tiers}
    if cfg.auth_key_tier and cfg.auth_key_tier not in tiers:
        raise bad("auth_key_tier", f"unknown tier {cfg.auth_key_tier!r}")
    if cfg.unpriced_models not in ("free", "refuse"):
        raise ConfigError(src("unpriced_models"), "unpriced_models", "must be 'free' or 'refuse'")
    if cfg.default_tier not in tiers:
        raise bad("default_tier", f"unknown tier {cfg.default_tier!r}")
    if str(cfg.log_level).upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise bad("log_level", f"must be DEBUG, INFO, WARNING or ERROR, got {cfg.log_level!r}")
    if cfg.environment not in ("development", "production", "test"):
        raise bad("environment", f"must be development, production or test, got {cfg.environment!r}")
    for cidr in cfg.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise bad("trusted_proxies", f"{cidr!r} is not an address or CIDR range") from None
    for name in ("open_window_s", "ws_heartbeat_s", "request_timeout_s"):
        if getattr(cfg, name) <= 0:
            raise bad(name, "must be more than 0")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(cfg.quota_timezone)
    except Exception:
        raise bad("quota_timezone", f"unknown time zone {cfg.quota_timezone!r}") from None
    return dataclasses.replace(cfg, strategy=strategy, log_level=str(cfg.log_level).upper())


def check_workers(cfg: Config, source: str, where: str = "workers") -> None:
    """`workers = N` shares one machine's ports between N processes; their limits must be one.
    `where` is the setting as the user wrote it (server.workers, TOLLGATE_WORKERS, --workers)."""
    if cfg.workers < 1:
        raise ConfigError(source, where, "must be at least 1")
    if cfg.workers > 1 and not cfg.redis_url:
        raise ConfigError(source, where, f"workers = {cfg.workers} needs redis_url (REDIS_URL): without a shared "
                          "limiter each process would admit a caller's whole limit on its own")
