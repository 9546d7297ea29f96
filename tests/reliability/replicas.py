"""Real gateway processes for the multi-replica and crash scenarios (C2, B7).

`python -m services` as a subprocess with its own ports and data directory, configured by a
tollgate.toml written here plus TOLLGATE_* variables; stopped by its own PID when the context
ends (tests/support/procs.py). Replicas that share TOLLGATE_SECRET_KEY hash API keys alike, so a
key created on one authenticates on the other when they share DATABASE_URL.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from tests.support.gateway import ADMIN_KEY
from tests.support.procs import Proc, base_env, free_port, run_module, wait_http_ok

SECRET = "c2-shared-secret-0123456789abcdef0123456789"


@dataclass
class Replica:
    proc: Proc
    url: str
    grpc: str
    data_dir: Path


def write_config(path: Path, upstream: str, tiers: dict[str, dict[str, int]], **settings: object) -> Path:
    lines = [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in settings.items()]
    lines += ["", "[[providers]]", 'name = "primary"', 'kind = "openai"', f'base_url = "{upstream}"',
              'api_key = "sk-test-upstream"']
    for name, limits in tiers.items():
        lines += ["", "[[tiers]]", f'name = "{name}"'] + [f"{k} = {v}" for k, v in limits.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def replica_env(home: Path, config: Path, data_dir: Path, http_port: int, grpc_port: int, **extra: str) -> dict[str, str]:
    return base_env(home, TOLLGATE_CONFIG=str(config), TOLLGATE_SECRET_KEY=SECRET, TOLLGATE_ADMIN_KEY=ADMIN_KEY,
                    TOLLGATE_DATA_DIR=str(data_dir), TOLLGATE_HTTP_ADDR=f"127.0.0.1:{http_port}",
                    TOLLGATE_GRPC_ADDR=f"127.0.0.1:{grpc_port}", TOLLGATE_LEDGER_FLUSH_S="0.1",
                    TOLLGATE_LOG_LEVEL="WARNING", **extra)


@asynccontextmanager
async def replica(workdir: Path, config: Path, name: str, *, http_port: int = 0, grpc_port: int = 0,
                  data_dir: Path | None = None, module: str = "services", **extra: str) -> AsyncIterator[Replica]:
    """One gateway process; ready (GET /health/ready 200) when yielded."""
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = http_port or free_port(), grpc_port or free_port()
    data_dir = data_dir or workdir / "data"
    env = replica_env(workdir, config, data_dir, http_port, grpc_port, **extra)
    url = f"http://127.0.0.1:{http_port}"
    async with run_module(module, env=env, cwd=workdir, name=name) as proc:
        await wait_http_ok(url + "/health/ready", proc, timeout=30.0)
        yield Replica(proc, url, f"127.0.0.1:{grpc_port}", data_dir)


def _main_with_lease() -> None:
    """`python -m tests.reliability.replicas`: `python -m services` whose limiter leases last
    $B7_LEASE_S seconds. The product's lease is fixed at 120 s (RELIABILITY's default is 2 ×
    the request timeout), which a make-test scenario cannot wait out; only the number changes."""
    import functools
    import os

    import services.app
    import services.limits
    from services.__main__ import main

    services.app.make_limiter = functools.partial(services.limits.make_limiter, lease_s=float(os.environ["B7_LEASE_S"]))
    main()


if __name__ == "__main__":
    _main_with_lease()
