"""The bridge's settings: its own address, limits and where its gRPC backend is.

Read from the environment only when the bridge runs alone (`python -m gateway_http`); in the
default single-process deployment services/__main__.py builds them from the one Config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# RELIABILITY E11: a connection that has not finished a request's headers (slowloris), or sits idle
# between requests, is closed after this long. aiohttp's own default is an hour; its keep-alive
# timer runs from the moment a connection opens and only a completed request resets it.
KEEPALIVE_TIMEOUT_S = 15.0

@dataclass(frozen=True, slots=True)
class BridgeSettings:
    http_addr: str = "127.0.0.1:8080"
    grpc_target: str = ""  # "" = in-process servicers; "host:port" = a remote gateway over gRPC
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout_s: float = 600.0
    stream_stall_s: float = 60.0
    cors_origins: tuple[str, ...] = ()
    cookie_secure: bool = False  # the console's cookies carry Secure (behind TLS)
    version: str = "0.1.0"
    environment: str = "development"  # seed 004's NODE_ENV, shown in /health
    ws_heartbeat_s: float = 30.0  # seed 004's WS_HEARTBEAT_INTERVAL
    ws_max_connections: int = 1000  # seed 004's WS_MAX_CONNECTIONS: open sockets at once
    otlp_endpoint: str = ""  # the bridge alone: OTEL_EXPORTER_OTLP_ENDPOINT (traces off when empty)

    @classmethod
    def from_env(cls) -> "BridgeSettings":
        env = os.environ
        addr = env.get("TOLLGATE_HTTP_ADDR") or "127.0.0.1:8080"
        if env.get("HOST") or env.get("PORT"):
            addr = f"{env.get('HOST') or '127.0.0.1'}:{env.get('PORT') or '8080'}"
        return cls(
            http_addr=addr,
            grpc_target=env.get("TOLLGATE_BRIDGE_TARGET") or env.get("TOLLGATE_GRPC_ADDR") or "127.0.0.1:50051",
            max_body_bytes=int(env.get("TOLLGATE_MAX_BODY_BYTES") or 16 * 1024 * 1024),
            request_timeout_s=float(env.get("TOLLGATE_REQUEST_TIMEOUT_S") or 600.0),
            stream_stall_s=float(env.get("TOLLGATE_STREAM_STALL_S") or 60.0),
            cors_origins=tuple(o for o in (env.get("TOLLGATE_CORS_ORIGINS") or "").split(",") if o),
            environment=env.get("NODE_ENV") or env.get("TOLLGATE_ENVIRONMENT") or "development",
            ws_heartbeat_s=float(env.get("WS_HEARTBEAT_INTERVAL") or 30000) / 1000.0,
            ws_max_connections=int(env.get("WS_MAX_CONNECTIONS") or env.get("TOLLGATE_WS_MAX_CONNECTIONS") or 1000),
            cookie_secure=(env.get("TOLLGATE_COOKIE_SECURE") or "").lower() in ("1", "true", "yes", "on"),
            otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("TOLLGATE_OTLP_ENDPOINT") or "",
        )
