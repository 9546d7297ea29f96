#!/usr/bin/env python3
"""The production limiter's own cost per request, client side: CPU µs and Redis round trips.

What a request pays the shared limiter, without the rest of the gateway: `Quotas.admit` (the
fused hit + token reservation, plus a $ budget with --budget) and its settle, through
FailoverLimiter -> RedisLimiter -> redis-py, as the pipeline makes them, against a private
redis-server on a free 127.0.0.1 port. Reported per request: this process's CPU (best of
--rounds; the load of other processes moves it far less than wall time) and the round trips
Redis read (`INFO total_reads_processed`: a pipeline's commands arrive in one read).

  python bench/limiter_cost.py                        # c=1 and c=64, this tree
  python bench/limiter_cost.py --tree /tmp/tg-base    # the same against another source tree (A/B)
  python bench/limiter_cost.py --layer redis          # RedisLimiter alone (no FailoverLimiter)
  python bench/limiter_cost.py --no-hiredis           # redis-py's Python reply parser

Prints | tree | layer | parser | concurrency | CPU µs per request | Redis round trips per request |.

Only the redis-server started here is stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=os.path.dirname(HERE), help="the source tree to measure (default: this one)")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, action="append", help="default: 1 and 64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", action="store_true", help="the caller also has a $ budget (issue 16)")
    ap.add_argument("--layer", choices=["quotas", "redis"], default="quotas",
                    help="quotas: Quotas.admit/finish over FailoverLimiter (what the pipeline calls); redis: RedisLimiter.admit/settle")
    ap.add_argument("--no-hiredis", action="store_true", help="redis-py's pure-Python reply parser (A/B for hiredis)")
    args = ap.parse_args()
    if args.no_hiredis:
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py then finds no hiredis
    sys.path.insert(0, os.path.abspath(args.tree))
    sys.path.insert(1, HERE)
    from private_redis import PrivateRedis  # noqa: E402  (the bench's private redis-server)

    redis = PrivateRedis(tempfile.mkdtemp(prefix="tollgate-lc-"))
    try:
        for c in args.concurrency or [1, 64]:
            cpu, trips = asyncio.run(measure(redis, args, c))
            from redis.utils import HIREDIS_AVAILABLE

            print(f"| {os.path.basename(os.path.abspath(args.tree))} | {args.layer}{' + budget' if args.budget else ''} "
                  f"| {'hiredis' if HIREDIS_AVAILABLE else 'Python parser'} "
                  f"| c={c} | {cpu:.1f} | {trips:.2f} |", flush=True)
    finally:
        redis.child.stop()


async def measure(redis, args, c: int) -> tuple[float, float]:
    from services.core.principal import Principal
    from services.clock import SystemClock
    from services.config.schema import TierConfig
    from services.limits.degraded import FailoverLimiter
    from services.limits.memory import MemoryLimiter
    from services.limits.quotas import Quotas
    from services.limits.redis import RedisLimiter, connect

    clock = SystemClock()
    primary = RedisLimiter(connect(redis.url), prefix=f"lc{c}:", clock=clock, owns_client=True)
    limiter = FailoverLimiter(primary, MemoryLimiter(clock), clock=clock)
    tier = TierConfig(name="bench", rpm=100_000_000, rpd=1_000_000_000, tpd=1_000_000_000_000,
                      budget_usd_day=1e9 if args.budget else 0.0)
    quotas = Quotas(limiter, {"bench": tier}, "UTC")
    budgets = None
    if args.budget:
        from services.accounts.budgets import Budgets
        from services.catalog.pricing import Catalog

        catalog = Catalog.builtin()
        model = next(m.id for m in catalog.all() if m.prompt_per_mtok > 0)
        budgets = Budgets(limiter, catalog, {"bench": tier})
    p = Principal(key_id="k1", kind="api_key", tier="bench")
    lines = budgets.lines(p) if budgets is not None else ()

    async def one() -> None:
        # As services/pipeline.py does it (before issue 20 a budget was a second limiter call).
        if budgets is not None and hasattr(budgets, "plan"):
            plan = budgets.plan(p, lines, model, 20, 256)
            adm = await quotas.admit(p, 300, None, plan)
            adm.budget, _ = await budgets.complete(p, plan, adm.budget_held)
        else:
            adm = await quotas.admit(p, 300)
            if budgets is not None:
                adm.budget, _ = await budgets.admit_with_decision(p, lines, model, 20, 256)
        if adm.budget is not None:
            await asyncio.gather(quotas.finish(adm, 120), budgets.finish(adm.budget, 0.0003))
        else:
            await quotas.finish(adm, 120)

    async def one_redis() -> None:
        rules, tok = quotas.rules_for(p)
        _, _, res = await primary.admit(p.subject, rules, tok, 300)
        await primary.settle(res, 120)

    call = one if args.layer == "quotas" else one_redis
    for _ in range(200):  # warm-up: connections, scripts loaded
        await call()
    best_cpu, best_trips = float("inf"), 0.0
    for _ in range(args.rounds):
        left = args.requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call()

        reads0 = int(redis.client.info("stats")["total_reads_processed"])
        t0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(c)))
        cpu = (time.process_time() - t0) / args.requests * 1e6
        trips = (int(redis.client.info("stats")["total_reads_processed"]) - reads0 - 1) / args.requests
        if cpu < best_cpu:
            best_cpu, best_trips = cpu, trips
    await limiter.close()
    return best_cpu, best_trips


if __name__ == "__main__":
    main()
