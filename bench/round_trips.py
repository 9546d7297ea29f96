#!/usr/bin/env python3
"""Redis commands and PostgreSQL transactions per request, in the production shape: counted, not timed.

Starts a private redis-server on a free 127.0.0.1 port (so no other client's commands are
counted), a fresh PostgreSQL database on the server of DATABASE_URL (default: what
scripts/services-up starts; dropped afterwards), the fake upstream of ../shared/bench and
Tollgate with bench/tollgate.toml pointed at both. After a warm-up it resets Redis's command
statistics (CONFIG RESETSTAT) and notes the database's committed transactions
(pg_stat_database.xact_commit), sends N requests at concurrency C, waits for the ledger's flush
and reads both again. Redis commands are counted with MONITOR (only what clients send, not what a
script calls inside Redis); without pipelining every command is one round trip.

  python bench/round_trips.py                        # chat and stream, c=1 and c=32
  python bench/round_trips.py --variant base=/tmp/tg-base
  python bench/round_trips.py --budget               # the key's plan has a $ budget (issue 16)

Needs redis-server and a reachable PostgreSQL (`eval "$(bash scripts/services-up)"`).
Only 127.0.0.1 is targeted; only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run.py beside this script
from cpu_per_request import FAKE_UPSTREAM, load  # noqa: E402
from private_redis import PrivateRedis  # noqa: E402
from run import HERE, Child, FreshDatabase, create_key, services_up, start_services  # noqa: E402


async def one_trip_us(url: str, n: int = 2000) -> float:
    """The median wall time of one limiter-like call (redis-py asyncio, EVALSHA of a one-line
    script) at c=1: what "one Redis round trip" costs a request here."""
    import statistics

    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    script = client.register_script("return redis.call('TIME')")
    try:
        await script()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await script()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6
    finally:
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, action="append", help="default: 1 and 32")
    ap.add_argument("--kind", action="append", choices=["chat", "stream"], help="default: both")
    ap.add_argument("--upstream-port", type=int, default=9001)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--budget", action="store_true", help="the key's plan has a $ budget (issue 16), on a priced model")
    args = ap.parse_args()
    kinds, concurrencies = args.kind or ["chat", "stream"], args.concurrency or [1, 32]
    tmp = tempfile.mkdtemp(prefix="tollgate-rt-")
    admin_key = "tga_bench_" + secrets.token_urlsafe(24)
    config = os.path.join(HERE, "tollgate.toml")
    text = open(config).read().replace("127.0.0.1:9001", f"127.0.0.1:{args.upstream_port}")  # follows --upstream-port
    model = "bench-model"
    if args.budget:
        # A $ budget on the bench's plan (never reached), and a model the catalogue prices, so
        # every request holds its worst-case cost and settles the real one (issue 16).
        model = "gpt-4o-mini"
        text = text.replace('models = ["bench-model"]', f'models = ["bench-model", "{model}"]')
        text = text.replace('tpd = 1000000000000\n', 'tpd = 1000000000000\nbudget_usd_day = 1000000\n')
        assert "budget_usd_day" in text and model in text, "bench/tollgate.toml changed: update --budget"
    config = os.path.join(tmp, "tollgate.toml")
    with open(config, "w") as f:
        f.write(text)
    children: list[Child] = []
    dbs: list[FreshDatabase] = []
    rows = []
    try:
        children.append(Child("upstream", [sys.executable, FAKE_UPSTREAM, "--port", str(args.upstream_port)],
                              dict(os.environ), tmp))
        pg = os.environ.get("DATABASE_URL") or services_up()["DATABASE_URL"]
        for name, tree in [("tollgate", "")] + [tuple(v.split("=", 1)) for v in args.variant]:
            redis = PrivateRedis(tmp)
            children.append(redis.child)
            db = FreshDatabase(pg)
            dbs.append(db)
            svc, base, _ = start_services(name, config, tmp, admin_key, tree=os.path.abspath(tree) if tree else "",
                                          REDIS_URL=redis.url, DATABASE_URL=db.url)
            children.append(svc)
            key = create_key(base, admin_key, f"rt-{name}")
            for kind in kinds:
                for c in concurrencies:
                    asyncio.run(load(base, key, kind, 100, c, model))  # warm-up: pools, caches, scripts loaded
                    time.sleep(1.5)  # its ledger rows flushed
                    redis.count()
                    commits0, rows0 = db.commits(), db.rows()
                    errors = asyncio.run(load(base, key, kind, args.requests, c, model))
                    time.sleep(2.5)  # the ledger's flush (0.5 s) and PostgreSQL's statistics (≤ 1 s)
                    cmds = redis.commands()
                    commits, nrows = db.commits() - commits0, db.rows() - rows0
                    trips = cmds.pop("(reads)") / args.requests
                    per = {k: v / args.requests for k, v in sorted(cmds.items()) if k != "info"}
                    rows.append((name, kind, c, trips, per, commits / args.requests, nrows, errors))
            svc.stop()
            trip = asyncio.run(one_trip_us(redis.url))
        print(f"one Redis round trip (redis-py asyncio EVALSHA, c=1, from a quiet client): p50 {trip:.0f} µs\n")
        print("| target | scenario | Redis round trips / request | commands / request | PostgreSQL commits / request | ledger rows | errors |")
        print("|---|---|---:|---|---:|---:|---:|")
        for name, kind, c, total, per, commits, nrows, errors in rows:
            which = ", ".join(f"{k} {v:.2f}" for k, v in per.items())
            print(f"| {name} | {kind} c={c} | {total:.2f} | {which} | {commits:.3f} | {nrows} of {args.requests} | {errors} |")
    finally:
        for ch in reversed(children):
            ch.stop()
        for db in dbs:
            db.close()


if __name__ == "__main__":
    main()
