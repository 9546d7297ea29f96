"""Builds the one Config from the TOML file, TOLLGATE_* variables and the seeds' own variables.

Precedence, lowest first: embedded defaults, the TOML file (--config / TOLLGATE_CONFIG /
./tollgate.toml if present), the seeds' variables (OPENAI_API_KEY, ROUTER_SERVICES, HOST,
PORT, ...), then TOLLGATE_<FIELD>. The only module besides the bridge's settings that reads
the environment. Every problem raises ConfigError naming source, field and what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from typing import Any, Mapping

from services.config.defaults import DEFAULT_TIERS, DEMO_PROVIDER
from services.config.schema import Config, ConfigError, ProviderConfig, ProviderKeyConfig, StaticKey, TierConfig
from services.providers.kinds import KINDS, resolve
from services.routing.strategies import NAMES as STRATEGY_NAMES

# TOML sections group fields for people; the fields themselves are flat and unique.
SECTIONS = ("server", "auth", "store", "limits", "routing", "logging")
PROVIDER_FIELDS = {
    "name", "kind", "base_url", "api_key", "api_key_env", "api_keys", "models", "default_model",
    "priority", "weight", "rpm", "rate_window_s", "daily_quota", "timeout_s", "max_in_flight",
}
TIER_FIELDS = {"name", "rpm", "rpd", "tpd", "tpm_month", "description",
               "requests_per_minute", "requests_per_day", "tokens_per_day", "tokens_per_month"}


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = dict(os.environ if env is None else env)
    path = path or env.get("TOLLGATE_CONFIG") or ("tollgate.toml" if os.path.exists("tollgate.toml") else None)
    values: dict[str, Any] = {}
    providers: list[ProviderConfig] = []
    tiers: dict[str, TierConfig] = {t.name: t for t in DEFAULT_TIERS}
    source = "defaults"

    if path:
        source = path
        data = _read_toml(path)
        for key, val in data.items():
            if key in SECTIONS and isinstance(val, dict):
                for k, v in val.items():
                    values[_field(path, f"{key}.{k}", k)] = v
            elif key == "providers":
                if not isinstance(val, list):
                    raise ConfigError(path, "providers", "must be an array of tables ([[providers]])")
                providers += [_provider(path, f"providers[{i}]", p, env) for i, p in enumerate(val)]
            elif key == "tiers":
                if not isinstance(val, list):
                    raise ConfigError(path, "tiers", "must be an array of tables ([[tiers]])")
                for i, t in enumerate(val):
                    tier = _tier(path, f"tiers[{i}]", t)
                    tiers[tier.name] = tier
            else:
                values[_field(path, key, key)] = val

    providers += _seed_providers(env, {p.name for p in providers})
    seeded = _seed_values(env)
    values.update({k: v for k, (v, _) in seeded.items()})
    for f in dataclasses.fields(Config):
        var = "TOLLGATE_" + f.name.upper()
        if var in env and f.name not in ("providers", "tiers", "static_keys", "source"):
            values[f.name] = env[var]
            seeded[f.name] = (env[var], var)

    names = [p.name for p in providers]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(source, "providers", f"duplicate provider name {sorted(dup)[0]!r}")
    values["providers"] = tuple(providers)
    values["tiers"] = tuple(tiers.values())
    values["static_keys"] = _static_keys(env)
    values["source"] = source
    cfg = _coerce(source, values, env, seeded)
    return _validate(cfg, env, seeded)


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


def _provider(source: str, where: str, raw: Any, env: Mapping[str, str]) -> ProviderConfig:
    if not isinstance(raw, dict):
        raise ConfigError(source, where, "must be a table")
    unknown = set(raw) - PROVIDER_FIELDS
    if unknown:
        raise ConfigError(source, f"{where}.{sorted(unknown)[0]}", "unknown field")
    kind_name = str(raw.get("kind") or raw.get("name") or "")
    kind = resolve(kind_name)
    if kind is None:
        raise ConfigError(source, f"{where}.kind", f"unknown kind {kind_name!r} (one of {', '.join(KINDS)})")
    name = str(raw.get("name") or kind.name)
    base_url = str(raw.get("base_url") or kind.base_url)
    if kind.wire != "demo" and not base_url:
        raise ConfigError(source, f"{where}.base_url", f"required for kind {kind.name}")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(source, f"{where}.base_url", "must start with http:// or https://")
    secrets: list[str] = []
    if raw.get("api_key"):
        secrets.append(str(raw["api_key"]))
    if raw.get("api_keys"):
        if not isinstance(raw["api_keys"], list):
            raise ConfigError(source, f"{where}.api_keys", "must be a list of strings")
        secrets += [str(k) for k in raw["api_keys"]]
    if raw.get("api_key_env"):
        var = str(raw["api_key_env"])
        if not env.get(var):
            raise ConfigError(source, f"{where}.api_key_env", f"environment variable {var} is not set")
        secrets.append(env[var])
    if not secrets and kind.key_env and env.get(kind.key_env):
        secrets.append(env[kind.key_env])
    if not secrets:
        if kind.needs_key:
            hint = f" or set {kind.key_env}" if kind.key_env else ""
            raise ConfigError(source, f"{where}.api_key", f"provider {name!r} has no key (give api_key or api_key_env{hint})")
        secrets = [""]
    models = raw.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(source, f"{where}.models", "must be a list of model names")
    weight = _num(source, f"{where}.weight", raw.get("weight", 1.0), float)
    return ProviderConfig(
        name=name,
        kind=kind.name,
        base_url=base_url,
        keys=tuple(ProviderKeyConfig(id=f"{name}-k{i + 1}", secret=s, weight=weight) for i, s in enumerate(secrets)),
        models=tuple(models),
        default_model=str(raw.get("default_model") or (models[0] if models else "")),
        priority=_num(source, f"{where}.priority", raw.get("priority", 0), int),
        weight=weight,
        rpm=_num(source, f"{where}.rpm", raw.get("rpm", 0), int),
        rate_window_s=_num(source, f"{where}.rate_window_s", raw.get("rate_window_s", 60.0), float),
        daily_quota=_num(source, f"{where}.daily_quota", raw.get("daily_quota", 0), int),
        timeout_s=_num(source, f"{where}.timeout_s", raw.get("timeout_s", 60.0), float),
        max_in_flight=_num(source, f"{where}.max_in_flight", raw.get("max_in_flight", 0), int),
        source=source,
    )


def _tier(source: str, where: str, raw: Any) -> TierConfig:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise ConfigError(source, f"{where}.name", "a tier needs a name")
    unknown = set(raw) - TIER_FIELDS
    if unknown:
        raise ConfigError(source, f"{where}.{sorted(unknown)[0]}", "unknown field")

    def n(short: str, long: str) -> int:
        return _num(source, f"{where}.{short}", raw.get(short, raw.get(long, 0)), int)

    return TierConfig(
        name=str(raw["name"]),
        rpm=n("rpm", "requests_per_minute"),
        rpd=n("rpd", "requests_per_day"),
        tpd=n("tpd", "tokens_per_day"),
        tpm_month=n("tpm_month", "tokens_per_month"),
        description=str(raw.get("description", "")),
    )


def _seed_providers(env: Mapping[str, str], taken: set[str]) -> list[ProviderConfig]:
    """ROUTER_SERVICES (seed 002) and the providers' own key variables (seeds 001-003)."""
    out: list[ProviderConfig] = []
    if env.get("ROUTER_SERVICES"):
        try:
            services = json.loads(env["ROUTER_SERVICES"])
        except json.JSONDecodeError as e:
            raise ConfigError("ROUTER_SERVICES", "-", f"not valid JSON ({e.msg} at char {e.pos})") from None
        if not isinstance(services, list):
            raise ConfigError("ROUTER_SERVICES", "-", "must be a JSON array of services")
        for i, s in enumerate(services):
            if not isinstance(s, dict):
                raise ConfigError("ROUTER_SERVICES", f"[{i}]", "must be an object")
            raw = {
                "name": s.get("name") or s.get("backend_type"),
                "kind": s.get("backend_type") or s.get("kind") or "openai_compatible",
                "base_url": s.get("base_url", ""),
                "api_key": s.get("api_key", ""),
                "priority": s.get("priority", 0),
                "models": s.get("models", []),
                "rpm": s.get("rate_limit_requests", 0),
                "rate_window_s": s.get("rate_limit_window", 60),
                "timeout_s": s.get("timeout", s.get("timeout_s", 60)),
                "max_in_flight": s.get("max_in_flight", 0),
            }
            if "weight" in s:
                raw["weight"] = s["weight"]
            out.append(_provider("ROUTER_SERVICES", f"[{i}]", {k: v for k, v in raw.items() if v not in ("", None)}, env))
        return out
    # Without ROUTER_SERVICES every provider whose key variable is set is routable (seed 002 auto router).
    priority = 0
    for kind in KINDS.values():
        if kind.key_env and env.get(kind.key_env) and kind.name not in taken:
            out.append(_provider(kind.key_env, kind.name, {"kind": kind.name, "priority": priority}, env))
            priority += 1
    if env.get("OLLAMA_BASE_URL") and "ollama" not in taken:
        out.append(_provider("OLLAMA_BASE_URL", "ollama", {"kind": "ollama", "base_url": env["OLLAMA_BASE_URL"], "priority": priority}, env))
    return out


def _seed_values(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """field -> (value, the variable it came from), for the seeds' own variables."""
    v: dict[str, tuple[Any, str]] = {}
    if env.get("HOST") or env.get("PORT"):
        host = env.get("HOST") or "127.0.0.1"
        v["http_addr"] = (f"{host}:{env.get('PORT') or '8080'}", "HOST/PORT")
    for seed_var, field_name in (
        ("ADMIN_API_KEY", "admin_key"), ("DATABASE_URL", "database_url"), ("REDIS_URL", "redis_url"),
        ("ENABLE_AUTH", "enable_auth"), ("KEY_SELECTION_STRATEGY", "strategy"), ("ROUTING_STRATEGY", "strategy"),
        ("JWT_SECRET", "secret_key"), ("REQUEST_TIMEOUT", "request_timeout_s"),
    ):
        if env.get(seed_var):
            v[field_name] = (env[seed_var], seed_var)
    return v


def _static_keys(env: Mapping[str, str]) -> tuple[StaticKey, ...]:
    keys = []
    if env.get("AUTH_KEY"):
        keys.append(StaticKey("AUTH_KEY", env["AUTH_KEY"]))
    for i in range(1, 100):
        var = f"AUTH_KEY_{i:02d}"
        if env.get(var):
            keys.append(StaticKey(var, env[var]))
    return tuple(keys)


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


def _coerce(source: str, values: dict[str, Any], env: Mapping[str, str], seeded: dict[str, tuple[Any, str]]) -> Config:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.name not in values:
            continue
        val = values[f.name]
        default = f.default
        src = seeded[f.name][1] if f.name in seeded else source
        if isinstance(default, bool):
            if isinstance(val, str):
                if val.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ConfigError(src, f.name, f"must be true or false, got {val!r}")
                val = val.lower() in ("1", "true", "yes", "on")
            out[f.name] = bool(val)
        elif isinstance(default, int) and not isinstance(default, bool):
            out[f.name] = _num(src, f.name, val, int)
        elif isinstance(default, float):
            out[f.name] = _num(src, f.name, val, float)
        elif f.name == "cors_origins":
            out[f.name] = tuple(val.split(",")) if isinstance(val, str) else tuple(val)
        else:
            out[f.name] = val
    return Config(**out)


def _validate(cfg: Config, env: Mapping[str, str], seeded: dict[str, tuple[Any, str]]) -> Config:
    def src(field_name: str) -> str:
        return seeded[field_name][1] if field_name in seeded else cfg.source

    for name in ("grpc_addr", "http_addr"):
        addr = getattr(cfg, name)
        host, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(src(name), name, f"must be host:port, got {addr!r}")
    strategy = cfg.strategy.replace("_", "-").lower()
    if strategy not in STRATEGY_NAMES:
        raise ConfigError(src("strategy"), "strategy", f"unknown strategy {cfg.strategy!r} (one of {', '.join(STRATEGY_NAMES)})")
    if cfg.limiter_fail_mode not in ("open", "closed"):
        raise ConfigError(src("limiter_fail_mode"), "limiter_fail_mode", "must be 'open' or 'closed'")
    if cfg.demo not in ("auto", "on", "off"):
        raise ConfigError(src("demo"), "demo", "must be auto, on or off")
    if cfg.database_url and not cfg.database_url.startswith(("sqlite", "postgres")):
        raise ConfigError(src("database_url"), "database_url", "must be sqlite:///path or postgresql://...")
    if cfg.redis_url and not cfg.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(src("redis_url"), "redis_url", "must be redis://host:port/db")
    check_workers(cfg, src("workers"))
    tiers = {t.name for t in cfg.tiers}
    if cfg.auth_key_tier and cfg.auth_key_tier not in tiers:
        raise ConfigError(src("auth_key_tier"), "auth_key_tier", f"unknown tier {cfg.auth_key_tier!r}")
    if cfg.default_tier not in tiers:
        raise ConfigError(src("default_tier"), "default_tier", f"unknown tier {cfg.default_tier!r}")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(cfg.quota_timezone)
    except Exception:
        raise ConfigError(src("quota_timezone"), "quota_timezone", f"unknown time zone {cfg.quota_timezone!r}") from None
    return dataclasses.replace(cfg, strategy=strategy)


def check_workers(cfg: Config, source: str) -> None:
    """`workers = N` shares one machine's ports between N processes; their limits must be one."""
    if cfg.workers < 1:
        raise ConfigError(source, "workers", "must be at least 1")
    if cfg.workers > 1 and not cfg.redis_url:
        raise ConfigError(source, "workers", f"workers = {cfg.workers} needs redis_url (REDIS_URL): without a shared "
                          "limiter each process would admit a caller's whole limit on its own")
