"""The bridge's long-lived state, hung off the aiohttp app under one typed AppKey."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

from gateway_http.settings import BridgeSettings
from gateway_http.stall import StallGuard


@dataclass
class Bridge:
    settings: BridgeSettings
    client: Any  # tollgate.client.TollgateClient over an in-process or real channel
    ready: Callable[[], Awaitable[dict[str, str]]] | None = None  # dependency states for /health/ready
    metrics: Callable[[], bytes] | None = None  # Prometheus text for /metrics
    auth_header: str = ""
    started_at: float = 0.0
    draining: bool = False
    inflight: int = 0
    stalls: StallGuard = field(default_factory=lambda: StallGuard(0.0))  # make_app sets the bound
    tracing: Any = None  # tollgate.tracing.Tracing when traces are on; None: no span, no traceparent


BRIDGE = web.AppKey("bridge", Bridge)
