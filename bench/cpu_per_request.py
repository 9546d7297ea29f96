#!/usr/bin/env python3
"""CPU time the gateway process spends per request: a quick A/B check for hot-path changes.

Throughput on this shared 2-core machine moves ±20 % between runs; the CPU seconds a process
spends on a fixed number of requests move far less. This starts the fake upstream of
../shared/bench and Tollgate as `make bench` does (bench/tollgate.toml: auth, tier quotas,
routing, ledger, metrics on), sends N requests at concurrency C from this process, and reads
the gateway's utime + stime from /proc before and after. With --variant it starts a second
Tollgate from another source tree and alternates the two, so both are measured in one run.

  python bench/cpu_per_request.py                                  # chat and stream, 3 rounds
  python bench/cpu_per_request.py --variant new=/tmp/tg-new --rounds 5
  python bench/cpu_per_request.py --production --variant base=/tmp/tg-base --kind chat --concurrency 64
  python bench/cpu_per_request.py --kind stream --paced 100,20,200 --concurrency 500 --requests 3000 --rounds 2

--production: each target in the production shape (Redis limiter + PostgreSQL ledger), with its
own private redis-server (so its CPU is that target's alone) and a fresh database on the
PostgreSQL of DATABASE_URL (scripts/services-up); also reported: that redis-server's CPU, the
upstream's and this load generator's per request, and the ledger rows against the requests.

Reported: µs of gateway CPU per request (min and median over rounds). Everything listens on
127.0.0.1; only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run.py beside this script
from run import HERE, SHARED, Child, create_key, start_services  # noqa: E402

FAKE_UPSTREAM = os.path.join(SHARED, "fake_upstream.py")
FLOOR = os.path.join(SHARED, "direct_proxy.py")  # the bare aiohttp proxy: what any Python gateway pays
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU of `pid` and its children alive now (a supervisor's workers, --workers)."""
    total = cpu_seconds(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        kids = []
    for k in kids:
        try:
            total += cpu_seconds(k)
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


async def load(base: str, key: str, kind: str, n: int, c: int, model: str = "bench-model") -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello in five words."}]}
    if kind == "stream":
        body["stream"] = True
    headers = {"Authorization": f"Bearer {key}"}
    left = n
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            async with session.post(base + "/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                errors += r.status != 200

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(c)))
    return errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kind", action="append", choices=["chat", "stream"], help="default: both")
    ap.add_argument("--upstream-port", type=int, default=9001)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--floor", action="store_true", help="also measure the bare-proxy floor")
    ap.add_argument("--production", action="store_true", help="Redis limiter + PostgreSQL ledger (see above)")
    ap.add_argument("--workers", type=int, default=1, help="with --production: gateway worker processes")
    ap.add_argument("--profile", metavar="FILE", help="py-spy (GIL holder only) the first target's rounds into FILE")
    ap.add_argument("--paced", metavar="TOKENS,DELAY_MS,TTFT_MS",
                    help="the upstream paces its answers (e.g. 100,20,200: 200 ms to the first token, then 100 "
                         "tokens 20 ms apart): streams at a high --concurrency then measure a relayed chunk's cost")
    args = ap.parse_args()
    kinds = args.kind or ["chat", "stream"]

    tmp = tempfile.mkdtemp(prefix="tollgate-cpu-")
    config = os.path.join(HERE, "tollgate.toml")
    if args.upstream_port != 9001:
        text = open(config).read().replace("127.0.0.1:9001", f"127.0.0.1:{args.upstream_port}")
        config = os.path.join(tmp, "tollgate.toml")
        with open(config, "w") as f:
            f.write(text)
    admin_key = "tga_bench_" + secrets.token_urlsafe(24)
    children: list[Child] = []
    dbs = []
    try:
        pacing: list[str] = []
        if args.paced:
            tokens, delay_ms, ttft_ms = args.paced.split(",")
            pacing = ["--tokens", tokens, "--delay-ms", delay_ms, "--ttft-ms", ttft_ms]
        up = Child("upstream", [sys.executable, FAKE_UPSTREAM, "--port", str(args.upstream_port), *pacing],
                   dict(os.environ), tmp)
        children.append(up)
        targets: list[tuple[str, str, str, int]] = []
        side: dict[str, int] = {}  # target -> its private redis-server's PID (--production)
        if args.production:
            from run import FreshDatabase, services_up
            from private_redis import PrivateRedis

            pg = os.environ.get("DATABASE_URL") or services_up()["DATABASE_URL"]
        for name, tree in [("tollgate", "")] + [tuple(v.split("=", 1)) for v in args.variant]:
            extra: dict[str, str] = {}
            if args.production:
                redis = PrivateRedis(tmp)
                children.append(redis.child)
                side[name] = redis.child.pid
                db = FreshDatabase(pg)
                dbs.append((name, db))
                extra = {"REDIS_URL": redis.url, "DATABASE_URL": db.url}
            svc, base, _ = start_services(name, config, tmp, admin_key, tree=os.path.abspath(tree) if tree else "",
                                          args=("--workers", str(args.workers)) if args.workers > 1 else (), **extra)
            children.append(svc)
            targets.append((name, base, create_key(base, admin_key, f"cpu-{name}"), svc.pid))
        if args.floor:
            port = str(args.upstream_port + 1)
            floor = Child("floor", [sys.executable, FLOOR, "--port", port, "--upstream",
                                    f"http://127.0.0.1:{args.upstream_port}"], dict(os.environ), tmp)
            children.append(floor)
            targets.append(("floor", f"http://127.0.0.1:{port}", "unused", floor.pid))
        time.sleep(1.0)
        results: dict[tuple[str, str], list[float]] = {}
        others: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}  # redis, upstream, client, rps
        sent = {name: 0 for name, *_ in targets}
        for kind in kinds:
            for name, base, key, pid in targets:  # warm-up: imports, pools, caches
                asyncio.run(load(base, key, kind, 500, args.concurrency))
                sent[name] += 500
            for _ in range(args.rounds):
                for name, base, key, pid in targets:
                    spy = None
                    if args.profile and name == targets[0][0]:
                        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--gil",
                                                "-p", str(pid), "-r", "1000", "-f", "raw", "-o", f"{args.profile}.{kind}.{_}",
                                                "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(0.5)
                    rpid = side.get(name)
                    before, up0, r0, me0, t0 = (tree_cpu(pid), cpu_seconds(up.pid), cpu_seconds(rpid) if rpid else 0.0,
                                                time.process_time(), time.perf_counter())
                    errors = asyncio.run(load(base, key, kind, args.requests, args.concurrency))
                    used = tree_cpu(pid) - before
                    n = args.requests
                    sent[name] += n
                    others.setdefault((kind, name), []).append((
                        ((cpu_seconds(rpid) - r0) if rpid else 0.0) / n * 1e6, (cpu_seconds(up.pid) - up0) / n * 1e6,
                        (time.process_time() - me0) / n * 1e6, n / (time.perf_counter() - t0)))
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(timeout=30)
                    if errors:
                        sys.exit(f"{name}: {errors} errors during {kind}")
                    results.setdefault((kind, name), []).append(used / args.requests * 1e6)
        print(f"| scenario | target | CPU µs / request, min | median | rounds |"
              + (" redis-server µs | upstream µs | load generator µs | rps (median) |" if args.production else ""))
        print("|---|---|---:|---:|---:|" + ("---:|---:|---:|---:|" if args.production else ""))
        for (kind, name), vals in results.items():
            row = f"| {kind} c={args.concurrency} | {name} | {min(vals):.0f} | {statistics.median(vals):.0f} | {len(vals)} |"
            if args.production:
                o = others[(kind, name)]
                row += " " + " | ".join(f"{statistics.median(x[i] for x in o):.0f}" for i in range(4)) + " |"
            print(row)
        if dbs:
            time.sleep(2.0)  # the ledgers' last flush
            for name, db in dbs:
                print(f"{name}: ledger rows {db.rows()}, requests sent {sent[name]}")
    finally:
        for c in reversed(children):
            c.stop()
        for _, db in dbs:
            db.close()


if __name__ == "__main__":
    main()
