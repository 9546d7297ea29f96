"""`python -m services` (what `make run` starts): the gRPC server and the HTTP bridge in one
process on one event loop, the bridge calling the servicers in-process.

SIGTERM / SIGINT drain gracefully: health goes NOT_SERVING at once, new calls get 503 /
UNAVAILABLE with Retry-After, in-flight streams may finish within `shutdown_grace_s`, then
whatever is left is cancelled (its ledger rows say `shutdown`), the ledger is flushed and
the process exits 0.

With `workers = N` (or `--workers N`, N > 1) this process is instead the supervisor of N such
processes on the same ports (services/supervisor.py); it forwards SIGTERM and restarts a worker
that dies.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys

from services.auth.sealing import SealError
from services.auth.secrets import SecretMismatch
from services.config.load import check_workers, load_config, with_demo
from services.config.schema import Config, ConfigError
from tollgate.heap import FullCollections, settle_heap
from services.logs import setup_logging
from services.supervisor import Supervisor, die_with_parent, tell_ready

log = logging.getLogger("tollgate")


def secrets_of(cfg: Config) -> list[str]:
    out = [cfg.admin_key, cfg.secret_key] + [k.secret for k in cfg.static_keys]
    out += [k.secret for p in cfg.providers for k in p.keys]
    return [s for s in out if s]


def banner(http_addr: str, grpc_addr: str, admin: dict, cfg: Config, extra: str = "") -> str:
    """The start-up lines; `admin` says where the admin key came from (and holds a generated one)."""
    lines = [
        "",
        f"Tollgate is up: HTTP bridge http://{http_addr}  gRPC {grpc_addr}",
        "  providers: " + ", ".join(f"{p.name} ({p.kind}{', demo model, not a real LLM' if p.kind == 'demo' else ''})"
                                    for p in cfg.providers),
    ]
    lines.append(f"  console: open http://{http_addr}/ in a browser (the first account you create is the admin)")
    if extra:
        lines.append(extra)
    if admin.get("source") == "generated":
        lines += [
            f"  admin key (shown once; set TOLLGATE_ADMIN_KEY to choose your own): {admin.get('plaintext', '')}",
        ]
    elif admin.get("source") == "stored":
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


async def serve(cfg: Config, ready_fd: int = -1) -> int:
    """One gateway process; as a supervisor's worker (`ready_fd` >= 0) it tells the supervisor it
    is up instead of printing the banner."""
    from services.runtime import Runtime

    rt = Runtime(cfg)
    await rt.start()
    host = cfg.http_addr.rpartition(":")[0]
    settle_heap()
    collections = FullCollections()
    admin = {"source": rt.app.admin_key.source, "plaintext": rt.app.admin_key.plaintext}
    if ready_fd >= 0:
        tell_ready(ready_fd, {"pid": os.getpid(), **admin})
    else:
        extra = ""
        if rt.app.demo_users:
            from services.accounts.demo import demo_banner

            extra = demo_banner(rt.app.demo_users)
        print(banner(f"{host}:{rt.http_port}", f"{cfg.grpc_addr.rsplit(':', 1)[0]}:{rt.grpc_port}", admin, cfg, extra),
              flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining for up to %.0f s", cfg.shutdown_grace_s)
    cancelled = await rt.shutdown()
    collections.stop()
    log.info("stopped cleanly (%d requests cut at the grace limit)", cancelled)
    return 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="tollgate-server", description="Tollgate LLM gateway: gRPC server + HTTP bridge")
    ap.add_argument("--config", help="path to tollgate.toml (default: $TOLLGATE_CONFIG or ./tollgate.toml)")
    ap.add_argument("--workers", type=int, help="gateway processes on the same ports (default: the config's "
                    "`workers`, 1); more than 1 needs redis_url")
    ap.add_argument("--worker-of", type=int, default=0, help=argparse.SUPPRESS)  # set by services/supervisor.py
    ap.add_argument("--ready-fd", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker_of:
        die_with_parent(args.worker_of)
    try:
        cfg = with_demo(load_config(args.config))
        if args.workers is not None and not args.worker_of:
            cfg = dataclasses.replace(cfg, workers=args.workers)
            check_workers(cfg, "command line", "--workers")
    except ConfigError as e:
        print(f"tollgate: config error: {e}", file=sys.stderr)
        sys.exit(2)
    setup_logging(cfg.log_level, secrets_of(cfg))
    if cfg.workers > 1 and not args.worker_of:
        try:
            sys.exit(Supervisor(cfg, args.config, lambda h, g, admin, extra: banner(h, g, admin, cfg, extra)).run())
        except OSError as e:
            print(f"tollgate: cannot start: {e}", file=sys.stderr)
            sys.exit(1)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        code = asyncio.run(serve(cfg, args.ready_fd))
    except OSError as e:
        print(f"tollgate: cannot start: {e}", file=sys.stderr)
        sys.exit(1)
    except (SecretMismatch, SealError) as e:  # one line naming the secret's variable or file
        print(f"tollgate: cannot start: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
