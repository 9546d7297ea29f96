"""One pooled aiohttp.ClientSession per upstream origin, built once and closed at shutdown.

Sessions are keyed by origin so every provider key of one provider shares a connection pool;
no session is ever built per request (STYLE.md). Adapters are stateless and shared too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiohttp

from services.providers.ssrf import guarded_socket_factory
from services.providers.anthropic import AnthropicAdapter
from services.providers.base import Adapter
from services.providers.demo import DemoAdapter
from services.providers.gemini import GeminiAdapter
from services.config.kinds import resolve
from services.providers.ollama import OllamaAdapter
from services.providers.openai_compatible import OpenAIAdapter


# One row per wire format: the adapter that speaks it (kinds.py maps every provider kind to one).
ADAPTER_TYPES: dict[str, type[Adapter]] = {
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "ollama": OllamaAdapter,
    "demo": DemoAdapter,
}


class Upstreams:
    def __init__(self, limit_per_host: int = 0, tracing: Any = None) -> None:
        """`limit_per_host`: open connections per upstream origin at once, 0 = no cap (config
        upstream_connections_per_host): each stream holds its connection for its whole length."""
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        # Traces on: every session carries a hook putting the current attempt's W3C traceparent on
        # the provider request. Off: no hook at all, so a request costs what it did.
        self._trace_configs = [_traceparent_hook(tracing)] if tracing is not None else None
        # Per request the router asks by base URL and the adapter by kind: both answers are
        # remembered, so neither the URL nor the kind name is parsed again per request.
        self._by_url: dict[tuple[str, bool], aiohttp.ClientSession] = {}
        self._wires: dict[str, str] = {}
        self._limit = limit_per_host
        self.adapters: dict[str, Adapter] = {wire: make() for wire, make in ADAPTER_TYPES.items()}

    def adapter(self, kind: str) -> Adapter:
        wire = self._wires.get(kind)
        if wire is None:
            k = resolve(kind)
            if k is None:
                raise KeyError(kind)
            wire = self._wires[kind] = k.wire  # kinds are a fixed table: a handful of names
        return self.adapters[wire]

    def session(self, base_url: str, guarded: bool = False) -> aiohttp.ClientSession:
        """`guarded`: a user-supplied URL; its own pool, whose sockets never open to a private,
        loopback or link-local address, whatever DNS says now or a redirect names (F8)."""
        s = self._by_url.get((base_url, guarded))
        if s is not None and not s.closed:
            return s
        s = self._origin_session(base_url, guarded)
        if len(self._by_url) >= 4096:
            self._by_url.clear()  # users' own base URLs come and go; the origins' pools stay
        self._by_url[(base_url, guarded)] = s
        return s

    def _origin_session(self, base_url: str, guarded: bool) -> aiohttp.ClientSession:
        parts = urlsplit(base_url) if base_url else None
        origin = f"{parts.scheme}://{parts.netloc}" if parts else "local"
        if guarded:
            origin = "user:" + origin
        s = self._sessions.get(origin)
        if s is None or s.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self._limit, ttl_dns_cache=300, keepalive_timeout=30,
                                             socket_factory=guarded_socket_factory if guarded else None)
            # Per-try timeouts are set on each request; the session-wide one is only a backstop.
            s = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                trace_configs=self._trace_configs,
            )
            self._sessions[origin] = s
        return s

    async def close(self) -> None:
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()
        self._by_url.clear()


def _traceparent_hook(tracing: Any) -> aiohttp.TraceConfig:
    """aiohttp's request-start hook: the attempt span's traceparent (set by the router) on the request."""
    upstream = tracing.upstream

    async def on_request_start(session, ctx, params: aiohttp.TraceRequestStartParams) -> None:
        tp = upstream.get()
        if tp:
            params.headers["traceparent"] = tp

    tc = aiohttp.TraceConfig()
    tc.on_request_start.append(on_request_start)
    return tc
