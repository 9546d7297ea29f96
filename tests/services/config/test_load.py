"""load_config(path, env=...) with explicit environments: defaults, TOML, TOLLGATE_* overrides,
the seeds' variables, and one clear ConfigError (source, field, problem) for each bad value."""

from __future__ import annotations

import json

import pytest

from services.catalog.pricing import Catalog
from services.config.defaults import DEFAULT_TIERS
from services.config.load import load_config, with_demo
from services.config.schema import ConfigError
from services.routing.candidates import CandidateIndex


@pytest.fixture(autouse=True)
def _no_local_toml(tmp_path, monkeypatch):
    """load_config falls back to ./tollgate.toml: run where there is none."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path, text: str, name: str = "tollgate.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def bad(path: str | None, env: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config(path, env=env or {})
    return e.value


# --------------------------------------------------------------------------- defaults and sources

def test_defaults_without_file_or_env():
    cfg = load_config(None, env={})
    assert cfg.grpc_addr == "127.0.0.1:50051"
    assert cfg.http_addr == "127.0.0.1:8080"
    assert cfg.data_dir == ".tollgate"
    assert cfg.database_url == "" and cfg.redis_url == ""
    assert cfg.enable_auth is True
    assert cfg.providers == () and cfg.static_keys == ()
    assert cfg.max_body_bytes == 16 * 1024 * 1024 and cfg.max_messages == 2048
    assert cfg.request_timeout_s == 600.0
    assert {t.name for t in DEFAULT_TIERS} <= {t.name for t in cfg.tiers}
    assert {"basic", "pro", "enterprise", "explorer", "startup", "growth"} <= {t.name for t in cfg.tiers}
    assert cfg.source == "defaults"


def test_env_is_the_given_mapping_not_the_process_env(monkeypatch):
    monkeypatch.setenv("TOLLGATE_HTTP_ADDR", "127.0.0.1:1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-process")
    cfg = load_config(None, env={})
    assert cfg.http_addr == "127.0.0.1:8080" and cfg.providers == ()


def test_toml_sections_and_tables(tmp_path):
    path = write(tmp_path, """
[server]
grpc_addr = "127.0.0.1:6001"
http_addr = "127.0.0.1:6002"
data_dir = "/var/lib/tollgate"

[limits]
max_body_bytes = 4096
max_messages = 10

[routing]
strategy = "exhaust_first"
max_attempts = 2

[[providers]]
name = "main"
kind = "openai"
base_url = "http://127.0.0.1:9999/v1"
api_key = "sk-one"
models = ["gpt-4o-mini", "gpt-4o"]
priority = 2
rpm = 30
daily_quota = 500
timeout_s = 12.5

[[providers]]
kind = "ollama"
base_url = "http://127.0.0.1:11434"

[[tiers]]
name = "tiny"
requests_per_minute = 3
tokens_per_day = 100
""")
    cfg = load_config(path, env={})
    assert (cfg.grpc_addr, cfg.http_addr, cfg.data_dir) == ("127.0.0.1:6001", "127.0.0.1:6002", "/var/lib/tollgate")
    assert (cfg.max_body_bytes, cfg.max_messages, cfg.max_attempts) == (4096, 10, 2)
    assert cfg.strategy == "exhaust-first"
    main, ollama = cfg.providers
    assert (main.name, main.kind, main.base_url, main.models, main.default_model) == (
        "main", "openai", "http://127.0.0.1:9999/v1", ("gpt-4o-mini", "gpt-4o"), "gpt-4o-mini")
    assert (main.priority, main.rpm, main.daily_quota, main.timeout_s) == (2, 30, 500, 12.5)
    assert [k.secret for k in main.keys] == ["sk-one"] and main.keys[0].id == "main-k1"
    assert "sk-one" not in repr(main)
    assert (ollama.name, ollama.kind, [k.secret for k in ollama.keys]) == ("ollama", "ollama", [""])
    tiny = next(t for t in cfg.tiers if t.name == "tiny")
    assert (tiny.rpm, tiny.tpd) == (3, 100)
    assert cfg.source == path


def test_api_key_env_and_the_kinds_own_variable(tmp_path):
    path = write(tmp_path, """
[[providers]]
kind = "anthropic"
api_key_env = "MY_ANTHROPIC"

[[providers]]
kind = "gemini"
""")
    cfg = load_config(path, env={"MY_ANTHROPIC": "sk-ant-1", "GEMINI_API_KEY": "g-1"})
    a, g = cfg.providers
    assert (a.base_url, a.keys[0].secret) == ("https://api.anthropic.com", "sk-ant-1")
    assert (g.base_url, g.keys[0].secret) == ("https://generativelanguage.googleapis.com", "g-1")


def test_tollgate_env_overrides_the_file(tmp_path):
    path = write(tmp_path, '[server]\nhttp_addr = "127.0.0.1:6002"\n[limits]\nmax_messages = 10\n')
    cfg = load_config(path, env={"TOLLGATE_HTTP_ADDR": "127.0.0.1:7002", "TOLLGATE_MAX_MESSAGES": "20",
                                 "TOLLGATE_ENABLE_AUTH": "false", "TOLLGATE_REQUEST_TIMEOUT_S": "30.5",
                                 "TOLLGATE_DATA_DIR": "/tmp/x", "TOLLGATE_CORS_ORIGINS": "https://a.example,https://b.example"})
    assert cfg.http_addr == "127.0.0.1:7002"
    assert cfg.max_messages == 20 and cfg.enable_auth is False and cfg.request_timeout_s == 30.5
    assert cfg.data_dir == "/tmp/x"
    assert cfg.cors_origins == ("https://a.example", "https://b.example")


def test_config_path_from_tollgate_config(tmp_path):
    path = write(tmp_path, '[server]\ngrpc_addr = "127.0.0.1:6101"\n', name="elsewhere.toml")
    assert load_config(None, env={"TOLLGATE_CONFIG": path}).grpc_addr == "127.0.0.1:6101"


def test_host_and_port_set_the_http_address():
    assert load_config(None, env={"PORT": "3000"}).http_addr == "127.0.0.1:3000"
    assert load_config(None, env={"HOST": "0.0.0.0", "PORT": "3001"}).http_addr == "0.0.0.0:3001"
    assert load_config(None, env={"HOST": "127.0.0.2"}).http_addr == "127.0.0.2:8080"
    # TOLLGATE_HTTP_ADDR is the more specific setting.
    assert load_config(None, env={"PORT": "3000", "TOLLGATE_HTTP_ADDR": "127.0.0.1:4000"}).http_addr == "127.0.0.1:4000"


def test_router_services_become_routable_providers():
    services = [
        {"name": "fast", "backend_type": "openai_compatible", "base_url": "http://127.0.0.1:9001/v1", "api_key": "sk-a",
         "priority": 1, "models": ["llama-3"], "rate_limit_requests": 10, "rate_limit_window": 30},
        {"name": "backup", "backend_type": "groq", "api_key": "gsk-b", "priority": 2},
        {"backend_type": "custom", "base_url": "http://127.0.0.1:9003/v1"},
    ]
    cfg = load_config(None, env={"ROUTER_SERVICES": json.dumps(services)})
    fast, backup, custom = cfg.providers
    assert (fast.kind, fast.base_url, fast.priority, fast.models) == ("openai_compatible", "http://127.0.0.1:9001/v1", 1, ("llama-3",))
    assert (fast.rpm, fast.rate_window_s) == (10, 30.0)
    assert fast.keys[0].secret == "sk-a"
    assert (backup.kind, backup.base_url, backup.priority) == ("groq", "https://api.groq.com/openai/v1", 2)
    assert (custom.name, custom.kind) == ("custom", "openai_compatible")
    assert all(p.source == "ROUTER_SERVICES" for p in cfg.providers)
    # Routable exactly like a provider from the file: the index resolves models to them.
    index = CandidateIndex(cfg, Catalog.builtin())
    targets = {(v.target.provider, v.target.base_url, v.target.model) for v in index.resolve("llama-3")}
    assert ("fast", "http://127.0.0.1:9001/v1", "llama-3") in targets
    assert {t[0] for t in targets} == {"fast", "backup", "custom"}
    assert {v.target.provider for v in index.resolve("other-model")} == {"backup", "custom"}


def test_openai_api_key_alone_makes_an_openai_provider():
    cfg = load_config(None, env={"OPENAI_API_KEY": "sk-solo"})
    (p,) = cfg.providers
    assert (p.name, p.kind, p.base_url) == ("openai", "openai", "https://api.openai.com/v1")
    assert [k.secret for k in p.keys] == ["sk-solo"]
    assert with_demo(cfg).providers == cfg.providers  # a real provider: no demo


def test_seed_provider_variables_in_priority_order():
    cfg = load_config(None, env={"ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o", "OLLAMA_BASE_URL": "http://127.0.0.1:11434"})
    assert [(p.kind, p.priority) for p in cfg.providers] == [("openai", 0), ("anthropic", 1), ("ollama", 2)]


def test_auth_keys_from_auth_key_variables():
    env = {"AUTH_KEY": "k-main", "AUTH_KEY_01": "k-one", "AUTH_KEY_07": "k-seven", "AUTH_KEY_99": "k-last",
           "AUTH_KEY_100": "ignored", "AUTH_KEY_1": "ignored-too"}
    cfg = load_config(None, env=env)
    assert [(k.id, k.secret) for k in cfg.static_keys] == [
        ("AUTH_KEY", "k-main"), ("AUTH_KEY_01", "k-one"), ("AUTH_KEY_07", "k-seven"), ("AUTH_KEY_99", "k-last")]
    assert "k-main" not in repr(cfg)


def test_enable_auth_false_and_other_seed_variables():
    cfg = load_config(None, env={"ENABLE_AUTH": "false", "ADMIN_API_KEY": "adm-x", "KEY_SELECTION_STRATEGY": "round_robin",
                                 "REDIS_URL": "redis://127.0.0.1:6379/0", "DATABASE_URL": "postgresql://u@127.0.0.1/db"})
    assert cfg.enable_auth is False
    assert cfg.admin_key == "adm-x" and "adm-x" not in repr(cfg)
    assert cfg.strategy == "round-robin"
    assert cfg.redis_url == "redis://127.0.0.1:6379/0" and cfg.database_url.startswith("postgresql://")
    assert load_config(None, env={"ENABLE_AUTH": "true"}).enable_auth is True


# --------------------------------------------------------------------------- errors

def test_unknown_kind_names_file_field_and_problem(tmp_path):
    path = write(tmp_path, '[[providers]]\nname = "x"\nkind = "nope"\nbase_url = "http://127.0.0.1:1/v1"\n')
    e = bad(path)
    assert (e.source, e.field_name) == (path, "providers[0].kind")
    assert "nope" in e.problem and "openai" in e.problem
    assert str(e).startswith(path) and "providers[0].kind" in str(e) and "\n" not in str(e)


def test_negative_priority(tmp_path):
    path = write(tmp_path, '[[providers]]\nkind = "openai"\napi_key = "sk"\n\n[[providers]]\nname = "b"\nkind = "openai"\n'
                           'api_key = "sk"\npriority = -1\n')
    e = bad(path)
    assert (e.source, e.field_name) == (path, "providers[1].priority")
    assert "negative" in e.problem


def test_bad_address_in_the_file(tmp_path):
    path = write(tmp_path, '[server]\ngrpc_addr = "localhost"\n')
    e = bad(path)
    assert (e.source, e.field_name) == (path, "server.grpc_addr")
    assert "host:port" in e.problem and "localhost" in e.problem


def test_bad_address_from_the_environment_names_the_variable():
    e = bad(None, {"TOLLGATE_GRPC_ADDR": "not-an-address"})
    assert (e.source, e.field_name) == ("environment", "TOLLGATE_GRPC_ADDR")


def test_bad_number_from_the_environment_names_the_variable(tmp_path):
    path = write(tmp_path, "[limits]\nmax_messages = 10\n")
    e = bad(path, {"TOLLGATE_MAX_MESSAGES": "many"})
    assert (e.source, e.field_name) == ("environment", "TOLLGATE_MAX_MESSAGES")


def test_bad_port_number(tmp_path):
    e = bad(write(tmp_path, '[server]\nhttp_addr = "127.0.0.1:70000"\n'))
    assert e.field_name == "server.http_addr"


def test_unknown_strategy(tmp_path):
    path = write(tmp_path, '[routing]\nstrategy = "fastest"\n')
    e = bad(path)
    assert (e.source, e.field_name) == (path, "routing.strategy")
    assert "fastest" in e.problem and "priority" in e.problem


def test_unknown_strategy_from_seed_variable_names_the_variable():
    e = bad(None, {"ROUTING_STRATEGY": "fastest"})
    assert (e.source, e.field_name) == ("environment", "ROUTING_STRATEGY")


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "[server\ngrpc_addr = \n")
    e = bad(path)
    assert e.source == path and "TOML" in e.problem
    assert "\n" not in str(e)


def test_missing_file(tmp_path):
    e = bad(str(tmp_path / "absent.toml"))
    assert "not found" in e.problem


def test_missing_api_key_for_openai(tmp_path):
    path = write(tmp_path, '[[providers]]\nname = "oai"\nkind = "openai"\n')
    e = bad(path)
    assert (e.source, e.field_name) == (path, "providers[0].api_key")
    assert "oai" in e.problem and "OPENAI_API_KEY" in e.problem


def test_api_key_env_not_set(tmp_path):
    path = write(tmp_path, '[[providers]]\nkind = "openai"\napi_key_env = "NOT_SET_HERE"\n')
    e = bad(path)
    assert e.field_name == "providers[0].api_key_env" and "NOT_SET_HERE" in e.problem


@pytest.mark.parametrize("toml,field", [
    ('[server]\nnot_a_setting = 1\n', "server.not_a_setting"),
    ('[[providers]]\nkind = "openai"\napi_key = "x"\ncolour = "red"\n', "providers[0].colour"),
    ('[[providers]]\nkind = "openai_compatible"\n', "providers[0].base_url"),
    ('[[providers]]\nkind = "openai_compatible"\nbase_url = "ftp://x"\n', "providers[0].base_url"),
    ('[[providers]]\nkind = "openai"\napi_key = "x"\nrpm = "lots"\n', "providers[0].rpm"),
    ('[[providers]]\nkind = "openai"\napi_key = "x"\n[[providers]]\nkind = "openai"\napi_key = "y"\n', "providers"),
    ('[limits]\nmax_messages = -5\n', "limits.max_messages"),
    ('[auth]\nenable_auth = "maybe"\n', "auth.enable_auth"),
    ('[store]\nredis_url = "http://127.0.0.1:6379"\n', "store.redis_url"),
    ('max_messages = "lots"\n', "max_messages"),
    ('[[tiers]]\nname = "t"\nrequests_per_minute = "x"\n', "tiers[0].requests_per_minute"),
    ('[[tiers]]\nname = "t"\nload_models = "sometimes"\n', "tiers[0].load_models"),
    ('[open_mode]\ntrusted_proxies = ["10.0.0.0/33"]\n', "open_mode.trusted_proxies"),
    ('[[tiers]]\nrpm = 5\n', "tiers[0].name"),
])
def test_other_bad_values_name_their_field(tmp_path, toml, field):
    path = write(tmp_path, toml)
    e = bad(path)
    assert (e.source, e.field_name) == (path, field), str(e)
    assert e.problem and "\n" not in str(e)


def test_router_services_errors_name_the_variable():
    e = bad(None, {"ROUTER_SERVICES": "[{not json"})
    assert (e.source, e.field_name) == ("environment", "ROUTER_SERVICES") and "JSON" in e.problem
    # Issue 19 point 5: the user's own key (backend_type), not our field name (kind).
    e = bad(None, {"ROUTER_SERVICES": json.dumps([{"backend_type": "nope", "base_url": "http://127.0.0.1:1/v1"}])})
    assert (e.source, e.field_name) == ("environment", "ROUTER_SERVICES[0].backend_type")
    assert str(e).startswith("environment: ROUTER_SERVICES[0].backend_type: unknown kind 'nope'")
    e = bad(None, {"ROUTER_SERVICES": json.dumps([{"backend_type": "openai_compatible", "base_url": "http://127.0.0.1:1/v1",
                                                   "priority": -3}])})
    assert (e.source, e.field_name) == ("environment", "ROUTER_SERVICES[0].priority")


# --------------------------------------------------------------------------- the demo provider

def test_with_demo_only_when_no_provider_is_configured(tmp_path):
    bare = with_demo(load_config(None, env={}))
    assert [(p.name, p.kind) for p in bare.providers] == [("demo", "demo")]
    real = load_config(None, env={"OPENAI_API_KEY": "sk"})
    assert [p.name for p in with_demo(real).providers] == ["openai"]
    off = with_demo(load_config(None, env={"TOLLGATE_DEMO": "off"}))
    assert off.providers == ()
    on = with_demo(load_config(None, env={"TOLLGATE_DEMO": "on", "OPENAI_API_KEY": "sk"}))
    assert [p.name for p in on.providers] == ["openai", "demo"]
    e = bad(None, {"TOLLGATE_DEMO": "sometimes"})
    assert e.field_name == "TOLLGATE_DEMO"


# --------------------------------------------------------------------------- issue 19 point 5

RS_GOOD = {"name": "s", "backend_type": "openai_compatible", "base_url": "http://127.0.0.1:1/v1"}


@pytest.mark.parametrize("entry,field", [
    ({**RS_GOOD, "backend_type": 7}, "ROUTER_SERVICES[0].backend_type"),
    ({**RS_GOOD, "base_url": "ftp://x"}, "ROUTER_SERVICES[0].base_url"),
    ({"backend_type": "openai_compatible"}, "ROUTER_SERVICES[0].base_url"),
    ({**RS_GOOD, "rate_limit_requests": "lots"}, "ROUTER_SERVICES[0].rate_limit_requests"),
    ({**RS_GOOD, "rate_limit_window": -1}, "ROUTER_SERVICES[0].rate_limit_window"),
    ({**RS_GOOD, "timeout": "soon"}, "ROUTER_SERVICES[0].timeout"),
    ({**RS_GOOD, "models": "gpt-4o"}, "ROUTER_SERVICES[0].models"),
    ({**RS_GOOD, "backend": "openai"}, "ROUTER_SERVICES[0].backend"),
    ({"backend_type": "openai", "name": "o"}, "ROUTER_SERVICES[0].api_key"),
])
def test_router_services_errors_name_the_users_key(entry, field):
    e = bad(None, {"ROUTER_SERVICES": json.dumps([entry])})
    assert (e.source, e.field_name) == ("environment", field), str(e)
    assert str(e).startswith(f"environment: {field}: ") and "\n" not in str(e)
    # The second entry is named by its own index.
    e = bad(None, {"ROUTER_SERVICES": json.dumps([RS_GOOD, {**entry, "name": "second"}])})
    assert e.field_name == field.replace("[0]", "[1]")


# Every seed variable with one bad value: the error names the variable as written.
@pytest.mark.parametrize("var,value", [
    ("PORT", "eighty"), ("PORT", "70000"), ("HOST", "bad host"),
    ("DATABASE_URL", "mysql://db/x"), ("REDIS_URL", "http://127.0.0.1:6379"),
    ("ENABLE_AUTH", "maybe"), ("KEY_SELECTION_STRATEGY", "fastest"), ("ROUTING_STRATEGY", "fastest"),
    ("REQUEST_TIMEOUT", "soon"), ("REQUEST_TIMEOUT", "60"), ("RATE_LIMIT_WINDOW_MS", "-5"),
    ("RATE_LIMIT_MAX_REQUESTS", "many"), ("WS_MAX_CONNECTIONS", "-1"), ("WS_HEARTBEAT_INTERVAL", "often"),
    ("MAX_CONCURRENT_REQUESTS", "1.5x"), ("LOG_LEVEL", "loud"), ("NODE_ENV", "staging"),
    ("OLLAMA_BASE_URL", "localhost:11434"), ("ROUTER_SERVICES", "{}"),
    ("TOLLGATE_OPEN_MODE", "perhaps"), ("TOLLGATE_TRUSTED_PROXIES", "10.0.0.0/8,proxy"),
    ("TOLLGATE_GRPC_ADDR", "nowhere"),
    ("AUTH_KEY", "sk-key with space"), ("AUTH_KEY_07", "sk-key\n"), ("ADMIN_API_KEY", "adm\tin"),
    ("JWT_SECRET", "two words"), ("OPENAI_API_KEY", "sk-abc\n"), ("ANTHROPIC_API_KEY", " sk-ant"),
    ("GEMINI_API_KEY", "AIza x"), ("CEREBRAS_API_KEY", "c k"), ("DEEPINFRA_TOKEN", "t\x00k"),
    ("OPENROUTER_API_KEY", "or k"),
])
def test_each_seed_variable_with_a_bad_value_names_itself(var, value):
    e = bad(None, {var: value})
    assert (e.source, e.field_name) == ("environment", var), str(e)
    assert e.problem and "\n" not in str(e)


def test_seed_004_variables_in_their_units():
    cfg = load_config(None, env={"RATE_LIMIT_WINDOW_MS": "900000", "RATE_LIMIT_MAX_REQUESTS": "100",
                                 "WS_MAX_CONNECTIONS": "1000", "WS_HEARTBEAT_INTERVAL": "30000",
                                 "MAX_CONCURRENT_REQUESTS": "100", "REQUEST_TIMEOUT": "30000",
                                 "LOG_LEVEL": "warn", "NODE_ENV": "production"})
    assert (cfg.open_window_s, cfg.open_max_requests, cfg.ws_max_connections, cfg.ws_heartbeat_s) == (900.0, 100, 1000, 30.0)
    assert (cfg.max_concurrent_requests, cfg.request_timeout_s, cfg.log_level, cfg.environment) == (100, 30.0, "WARNING", "production")
    assert load_config(None, env={"REQUEST_TIMEOUT": "60s"}).request_timeout_s == 60.0
    assert load_config(None, env={}).open_mode is False
