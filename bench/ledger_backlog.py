"""How far the usage ledger's writer falls behind under chat load (RELIABILITY D6).

Starts the fake upstream of ../shared/bench and Tollgate as `make bench` does (bench/tollgate.toml,
the SQLite ledger), sends chat requests at concurrency 64 from a child process for about
--seconds, and polls `tollgate_ledger_pending_rows` on /metrics every 50 ms meanwhile. At 10,000
pending rows new requests get 503 LEDGER_BACKLOG, so the maximum here is the headroom left.

  python bench/ledger_backlog.py                      # this checkout, ~40 s
  python bench/ledger_backlog.py --tree /work/tg-base # another source tree (before/after)

Everything listens on 127.0.0.1; only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_per_request import FAKE_UPSTREAM  # noqa: E402
from run import HERE, Child, create_key, start_services  # noqa: E402

PENDING = re.compile(r"^tollgate_ledger_pending_rows ([0-9.e+]+)", re.M)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40.0, help="roughly how long the load runs")
    ap.add_argument("--tree", default="", help="run Tollgate from this source tree")
    ap.add_argument("--upstream-port", type=int, default=9171)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="tollgate-ledger-")
    config = os.path.join(tmp, "tollgate.toml")
    with open(os.path.join(HERE, "tollgate.toml")) as src, open(config, "w") as dst:
        dst.write(src.read().replace("127.0.0.1:9001", f"127.0.0.1:{args.upstream_port}"))
    admin_key = "tga_bench_" + secrets.token_urlsafe(24)
    children: list[Child] = []
    try:
        children.append(Child("upstream", [sys.executable, FAKE_UPSTREAM, "--port", str(args.upstream_port)],
                              dict(os.environ), tmp))
        svc, base, _ = start_services("tollgate", config, tmp, admin_key,
                                      tree=os.path.abspath(args.tree) if args.tree else "")
        children.append(svc)
        key = create_key(base, admin_key, "ledger-backlog")
        n = int(args.seconds * 3500)  # about --seconds at this machine's rate
        code = ("import asyncio, sys, time; sys.path.insert(0, sys.argv[1]); from cpu_per_request import load\n"
                "t = time.time(); e = asyncio.run(load(sys.argv[2], sys.argv[3], 'chat', int(sys.argv[4]), 64))\n"
                "print(f'{int(sys.argv[4])} requests in {time.time() - t:.1f} s, {e} not 200')")
        loader = subprocess.Popen([sys.executable, "-c", code, HERE, base, key, str(n)])
        samples: list[float] = []
        while loader.poll() is None:
            m = PENDING.search(urllib.request.urlopen(base + "/metrics", timeout=5).read().decode())
            if m:
                samples.append(float(m.group(1)))
            time.sleep(0.05)
        if loader.returncode != 0:
            sys.exit(f"the load generator failed (rc {loader.returncode})")
        if not samples:
            sys.exit("no tollgate_ledger_pending_rows on /metrics")
        print(f"ledger pending rows, {len(samples)} samples: max {max(samples):,.0f}; "
              f">= 2,000 in {sum(s >= 2000 for s in samples)}; >= 5,000 in {sum(s >= 5000 for s in samples)} "
              f"(503 LEDGER_BACKLOG at 10,000)")
    finally:
        for child in reversed(children):
            child.stop()


if __name__ == "__main__":
    main()
