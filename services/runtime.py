"""Runtime: the gateway's processes-worth of servers — App, gRPC server and HTTP bridge — with
start and graceful stop, shared by `python -m services` and the tests (which bind port 0)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from services.app import App, build_app
from services.config.schema import Config
from services.server import GrpcServer, local_channel

if TYPE_CHECKING:
    from gateway_http.site import ListeningSite

log = logging.getLogger("tollgate")


class Runtime:
    def __init__(self, cfg: Config, app: App | None = None) -> None:
        self.cfg = cfg
        self.app = app or build_app(cfg)
        self.grpc: GrpcServer | None = None
        self.runner: web.AppRunner | None = None
        self.site: ListeningSite | None = None
        self.bridge: web.Application | None = None
        self.http_port = 0
        self.grpc_port = 0

    @property
    def http_url(self) -> str:
        host = self.cfg.http_addr.rpartition(":")[0]
        return f"http://{host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.cfg.grpc_addr.rpartition(':')[0]}:{self.grpc_port}"

    async def start(self) -> None:
        from gateway_http.app import make_app
        from gateway_http.settings import KEEPALIVE_TIMEOUT_S, BridgeSettings
        from tollgate.client import TollgateClient

        await self.app.start()
        self.grpc = GrpcServer(self.app, self.cfg.grpc_addr, reuse_port=self.cfg.worker_id > 0)
        await self.grpc.start()
        self.grpc_port = self.grpc.port
        settings = BridgeSettings(http_addr=self.cfg.http_addr, max_body_bytes=self.cfg.max_body_bytes,
                                  request_timeout_s=self.cfg.request_timeout_s, cors_origins=self.cfg.cors_origins,
                                  stream_stall_s=self.cfg.stream_stall_s, cookie_secure=self.cfg.cookie_secure,
                                  environment=self.cfg.environment, ws_heartbeat_s=self.cfg.ws_heartbeat_s,
                                  ws_max_connections=self.cfg.ws_max_connections)
        self.bridge = make_app(settings, TollgateClient(local_channel(self.app)), ready=self.app.ready,
                               tracing=self.app.tracing,
                               metrics=self.app.metrics.render)
        self.runner = web.AppRunner(self.bridge, handler_cancellation=True, access_log=None,
                                    keepalive_timeout=KEEPALIVE_TIMEOUT_S,
                                    shutdown_timeout=self.cfg.shutdown_grace_s)
        await self.runner.setup()
        host, _, port = self.cfg.http_addr.rpartition(":")
        # A supervisor's workers share the port (SO_REUSEPORT: the kernel spreads connections).
        from gateway_http.site import ListeningSite

        self.site = ListeningSite(self.runner, host.strip("[]"), int(port), backlog=1024,
                                  reuse_port=self.cfg.worker_id > 0 or None)
        await self.site.start()
        self.http_port = self.runner.addresses[0][1]

    async def shutdown(self, grace_s: float | None = None) -> int:
        """Drain: NOT_SERVING and 503 for new calls at once, in-flight work gets `grace_s`,
        then the rest is cancelled; servers stop; the ledger is flushed. Returns how many
        requests had to be cancelled."""
        from gateway_http.state import BRIDGE

        grace = self.cfg.shutdown_grace_s if grace_s is None else grace_s
        self.app.draining = True
        if self.bridge is not None:
            self.bridge[BRIDGE].draining = True
        if self.grpc is not None:
            await self.grpc.enter_drain()
        cancelled = await self.app.pipeline.drain(grace)
        if self.site is not None:
            await self.site.stop()
        if self.grpc is not None:
            await self.grpc.stop(0.5)
        if self.runner is not None:
            await self.runner.cleanup()
        await self.app.close()
        return cancelled
