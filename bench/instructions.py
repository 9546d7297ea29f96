#!/usr/bin/env python3
"""Instructions per request of the gateway process, under valgrind: a quiet A/B for hot-path changes.

CPU time per request moves ±20 % between runs on this shared 2-core machine; the number of
instructions the gateway executes for a request barely moves (±1 % between runs of one tree).
This starts the fake upstream of ../shared/bench, then each target under
`valgrind --tool=callgrind` (Tollgate as `make bench` runs it, with bench/tollgate.toml, from this
checkout or another tree; `--floor` adds the bare aiohttp proxy), sends a warm-up, zeroes the
counters (`callgrind_control -z`), sends N requests at concurrency C and dumps the counters. The
count covers every thread of the process (the ledger writer too), user space only.

  python bench/instructions.py                                  # this checkout and the floor
  python bench/instructions.py --variant base=/tmp/tg-base      # plus another tree, same run
  python bench/instructions.py --main-thread --kind stream --delay-ms 10 --requests 10 --warmup 10
                                    # paced streams: each of the 50 tokens its own read and write

Needs valgrind (apt-get install valgrind). Startup under valgrind takes ~20 s per target.
Everything listens on 127.0.0.1; only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run.py beside this script
from cpu_per_request import FAKE_UPSTREAM, FLOOR, load  # noqa: E402
from run import HERE, SERVICES_UP, Child, child_env, create_key  # noqa: E402

VALGRIND = ["valgrind", "--tool=callgrind", "--dump-instr=no"]


def wait_http(url: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.5)
    sys.exit(f"{url} did not answer within {timeout:.0f} s")


def dumped_total(tmp: str, pid: int, main_only: bool) -> int:
    """The dump's total: every thread's, or (--main-thread) thread 01's, the event loop's alone
    (the other threads wake on timers: their share per request grows with the machine's load)."""
    files = glob.glob(f"{tmp}/cg.{pid}.*-01" if main_only else f"{tmp}/cg.{pid}*")
    newest = max(files, key=os.path.getmtime)
    with open(newest) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    sys.exit(f"no totals in {newest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--kind", choices=["chat", "stream"], default="chat")
    ap.add_argument("--upstream-port", type=int, default=9001, help="the fake upstream's port (the config is rewritten to it)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--main-thread", action="store_true", help="count the main thread only (load-independent)")
    ap.add_argument("--tokens", type=int, default=50, help="the fake upstream's tokens per answer")
    ap.add_argument("--delay-ms", type=float, default=0.0,
                    help="the fake upstream's gap between tokens: with --kind stream, 10 makes every chunk its own read")
    ap.add_argument("--warmup", type=int, default=150, help="uncounted requests first")
    args = ap.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("valgrind is not installed: apt-get install -y valgrind")

    tmp = tempfile.mkdtemp(prefix="tollgate-instr-")
    admin_key = "tga_bench_" + os.urandom(12).hex()
    up = Child("upstream", [sys.executable, FAKE_UPSTREAM, "--port", str(args.upstream_port), "--tokens",
                                str(args.tokens), "--delay-ms", str(args.delay_ms)], dict(os.environ), tmp)
    out = [f"--callgrind-out-file={tmp}/cg.%p"] + (["--separate-threads=yes"] if args.main_thread else [])
    targets = [("tollgate", "")] + [tuple(v.split("=", 1)) for v in args.variant] + ([] if args.no_floor else [("floor", None)])
    rows = []
    try:
        time.sleep(1.0)
        for name, tree in targets:
            if tree is None:
                port = args.upstream_port + 1
                child = Child(name, VALGRIND + out + [sys.executable, FLOOR, "--port", str(port), "--upstream",
                                                       f"http://127.0.0.1:{args.upstream_port}"], dict(os.environ), tmp)
                base, key = f"http://127.0.0.1:{port}", "unused"
                wait_http(base + "/health", 300)
            else:
                config = os.path.join(HERE, "tollgate.toml")
                if args.upstream_port != 9001:  # the same config, pointed at this run's upstream
                    config = os.path.join(tmp, "tollgate.toml")
                    with open(config, "w") as f:
                        f.write(open(os.path.join(HERE, "tollgate.toml")).read().replace("127.0.0.1:9001", f"127.0.0.1:{args.upstream_port}"))
                env = child_env(config, os.path.join(tmp, name + "-data"), admin_key)
                cwd = os.path.abspath(tree) if tree else ""
                if cwd:
                    env["PYTHONPATH"] = os.path.join(cwd, "clients")
                child = Child(name, VALGRIND + out + [sys.executable, "-m", "services"], env, tmp, cwd=cwd)
                m = child.wait_for(SERVICES_UP, 300)
                base = f"http://{m.group(1)}:{m.group(2)}"
                key = create_key(base, admin_key, "instr-" + name)
            try:
                asyncio.run(load(base, key, args.kind, args.warmup, args.concurrency))  # imports, pools, caches
                subprocess.run(["callgrind_control", "-z", str(child.pid)], check=True, capture_output=True)
                errors = asyncio.run(load(base, key, args.kind, args.requests, args.concurrency))
                subprocess.run(["callgrind_control", "-d", str(child.pid)], check=True, capture_output=True)
                time.sleep(1.0)
                if errors:
                    sys.exit(f"{name}: {errors} errors")
                rows.append((name, dumped_total(tmp, child.pid, args.main_thread) / args.requests))
            finally:
                child.stop()
        print(f"| target | k instructions / {args.kind} request at c={args.concurrency} |")
        print("|---|---:|")
        for name, per in rows:
            print(f"| {name} | {per / 1e3:,.0f} |")
    finally:
        up.stop()


if __name__ == "__main__":
    main()
