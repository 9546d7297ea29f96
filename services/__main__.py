"""`python -m services` (what `make run` starts): the gRPC server and the HTTP bridge in one
process on one event loop, the bridge calling the servicers in-process.

SIGTERM / SIGINT drain gracefully: health goes NOT_SERVING at once, new calls get 503 /
UNAVAILABLE with Retry-After, in-flight streams may finish within `shutdown_grace_s`, then
whatever is left is cancelled (its ledger rows say `shutdown`), the ledger is flushed and
the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from services.app import App
from services.config.load import load_config, with_demo
from services.config.schema import Config, ConfigError
from services.heap import settle_heap
from services.logs import setup_logging
from services.runtime import Runtime

log = logging.getLogger("tollgate")


def secrets_of(cfg: Config) -> list[str]:
    out = [cfg.admin_key, cfg.secret_key] + [k.secret for k in cfg.static_keys]
    out += [k.secret for p in cfg.providers for k in p.keys]
    return [s for s in out if s]


def banner(app: App, grpc_port: int, http_addr: str) -> str:
    cfg = app.config
    lines = [
        "",
        f"Tollgate is up: HTTP bridge http://{http_addr}  gRPC {cfg.grpc_addr.rsplit(':', 1)[0]}:{grpc_port}",
        "  providers: " + ", ".join(f"{p.name} ({p.kind}{', demo model, not a real LLM' if p.kind == 'demo' else ''})"
                                    for p in cfg.providers),
    ]
    if app.admin_key.source == "generated":
        lines += [
            f"  admin key (shown once; set TOLLGATE_ADMIN_KEY to choose your own): {app.admin_key.plaintext}",
        ]
    elif app.admin_key.source == "stored":
        lines += ["  admin key: the one printed on first start (set TOLLGATE_ADMIN_KEY to replace it)"]
    else:
        lines += ["  admin key: from TOLLGATE_ADMIN_KEY / ADMIN_API_KEY"]
    lines += [
        "  create an API key:",
        f"    curl -s -X POST http://{http_addr}/api/admin/keys -H 'X-Admin-Key: <admin key>' \\",
        "      -H 'Content-Type: application/json' -d '{\"name\":\"me\",\"email\":\"me@example.com\",\"tier\":\"basic\"}'",
        "",
    ]
    return "\n".join(lines)


async def serve(cfg: Config) -> int:
    rt = Runtime(cfg)
    await rt.start()
    host = cfg.http_addr.rpartition(":")[0]
    settle_heap()
    print(banner(rt.app, rt.grpc_port, f"{host}:{rt.http_port}"), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining for up to %.0f s", cfg.shutdown_grace_s)
    cancelled = await rt.shutdown()
    log.info("stopped cleanly (%d requests cut at the grace limit)", cancelled)
    return 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="tollgate-server", description="Tollgate LLM gateway: gRPC server + HTTP bridge")
    ap.add_argument("--config", help="path to tollgate.toml (default: $TOLLGATE_CONFIG or ./tollgate.toml)")
    args = ap.parse_args(argv)
    try:
        cfg = with_demo(load_config(args.config))
    except ConfigError as e:
        print(f"tollgate: config error: {e}", file=sys.stderr)
        sys.exit(2)
    setup_logging(cfg.log_level, secrets_of(cfg))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        code = asyncio.run(serve(cfg))
    except OSError as e:
        print(f"tollgate: cannot start: {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
