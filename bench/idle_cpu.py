#!/usr/bin/env python3
"""A gateway's CPU with no request at all (issue 20 point 5): what an idle replica costs its host.

Starts `python -m services` (bench/gate.py's config: every feature on the request path on, SQLite
store) for each tree at once, side by side, sends a few requests (so every lazy path has run), then
reads the process's user + system CPU time from /proc over `--seconds` of idleness. Natively, no
valgrind; the timers' work (store pollers, the ledger's flush, the limiter's reaper) is all there is.

  python bench/idle_cpu.py --variant main=/tmp/tg-main --variant this=. --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.gate import ADMIN_KEY, CHAT_MODEL, CONFIG, STREAM_MODEL, UP, _load  # noqa: E402


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _start(tree: str, upstream: str, tmp: str) -> tuple[subprocess.Popen, str]:
    cfg = os.path.join(tmp, "tollgate.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(base_url=upstream, chat=CHAT_MODEL, stream=STREAM_MODEL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(TOLLGATE_CONFIG=cfg, TOLLGATE_DATA_DIR=os.path.join(tmp, "data"), TOLLGATE_ADMIN_KEY=ADMIN_KEY,
               TOLLGATE_HTTP_ADDR="127.0.0.1:0", TOLLGATE_GRPC_ADDR="127.0.0.1:0", TOLLGATE_LOG_LEVEL="WARNING",
               PYTHONUNBUFFERED="1", PYTHONPATH=os.path.join(os.path.abspath(tree), "clients"))
    log = os.path.join(tmp, "gateway.log")
    proc = subprocess.Popen([sys.executable, "-m", "services"], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=env, cwd=tree, start_new_session=True)
    end = time.monotonic() + 60
    while not (m := UP.search(open(log, errors="replace").read())):
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(open(log, errors="replace").read()[-2000:])
        await asyncio.sleep(0.1)
    return proc, f"http://{m.group(1)}:{m.group(2)}"


async def main(args: argparse.Namespace) -> None:
    from tests.support.fakes.openai import run_fake_openai

    procs: list[subprocess.Popen] = []
    try:
        async with run_fake_openai() as fake, aiohttp.ClientSession() as s:
            started = []
            for name, tree in args.variant:
                proc, base = await _start(tree, fake.base_url, tempfile.mkdtemp(prefix=f"tollgate-idle-{name}-"))
                procs.append(proc)
                async with s.post(base + "/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY},
                                  json={"name": "idle", "email": "idle@bench.invalid", "tier": "enterprise"}) as r:
                    key = (await r.json())["key"]
                await _load(s, base, key, CHAT_MODEL, False, 20)
                await _load(s, base, key, STREAM_MODEL, True, 5)
                started.append((name, proc))
            await asyncio.sleep(5)  # the last flushes
            before = {name: _cpu_s(p.pid) for name, p in started}
            t0 = time.monotonic()
            await asyncio.sleep(args.seconds)
            wall = time.monotonic() - t0
            for name, p in started:
                used = _cpu_s(p.pid) - before[name]
                print(f"{name}: {used * 1000 / wall:.2f} ms of CPU per second idle ({used:.2f} s over {wall:.0f} s)")
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                p.wait(timeout=30)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", type=lambda v: tuple(v.split("=", 1)), required=True,
                    help="name=tree (a source tree: git archive <commit> | tar -x -C DIR)")
    ap.add_argument("--seconds", type=float, default=60.0)
    asyncio.run(main(ap.parse_args()))
