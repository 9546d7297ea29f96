"""`python -m gateway_http`: the bridge alone, in front of a remote gateway over a real gRPC channel.

The same handlers as the default single-process deployment; only the channel differs
(TOLLGATE_BRIDGE_TARGET / TOLLGATE_GRPC_ADDR, default 127.0.0.1:50051). Costs a gRPC hop
per request (bench/README.md has the number), in exchange for scaling the bridge apart.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway_http.app import make_app
from gateway_http.settings import KEEPALIVE_TIMEOUT_S, BridgeSettings
from gateway_http.site import ListeningSite
from gateway_http.state import BRIDGE
from tollgate.tracing import make_tracing
from tollgate.heap import FullCollections, settle_heap
from tollgate.client import TollgateClient


def remote_ready(client: TollgateClient):
    stub = health_pb2_grpc.HealthStub(client.channel)

    async def ready() -> dict[str, str]:
        try:
            r = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
            return {"backend": "ok" if r.status == health_pb2.HealthCheckResponse.SERVING else "unavailable"}
        except Exception:
            return {"backend": "unreachable"}

    return ready


async def serve(settings: BridgeSettings) -> int:
    client = TollgateClient.connect(settings.grpc_target)
    tracing = make_tracing(settings.otlp_endpoint, "tollgate-bridge")
    app = make_app(settings, client, ready=remote_ready(client), tracing=tracing)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    host, _, port = settings.http_addr.rpartition(":")
    site = ListeningSite(runner, host.strip("[]"), int(port))
    await site.start()
    settle_heap()
    collections = FullCollections()
    print(f"Tollgate bridge on http://{host}:{runner.addresses[0][1]} -> gRPC {settings.grpc_target}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    app[BRIDGE].draining = True
    await site.stop()
    await runner.cleanup()
    await client.close()
    collections.stop()
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(serve(BridgeSettings.from_env())))


if __name__ == "__main__":
    main()
