#!/usr/bin/env python3
"""What the routing decision costs per request, in µs: CandidateIndex.resolve + strategy.order.

Not a test: a micro-benchmark of the part of routing that runs before any upstream call, with a
large configuration (by default 100 providers × 10 keys, all serving the requested model, so
every request has 1,000 candidates). Two layouts:
  flat    every provider at priority 0 (one level of 1,000 keys: the worst case for strategies
          that shuffle or rotate the top level);
  tiered  priority = provider index // 10 (10 levels of 100 keys: a typical failover ladder).
Columns: `resolve` is the cached lookup (the first, uncached build is shown once per layout);
`order` is strategy.order() alone and `plan` is Router.plan() (resolve + the latency fill
least-latency needs + order), each with the first max_attempts (4) candidates read, which is what
a request pays: strategies hand out a lazy base.Order. `plan+obs` is one latency sample recorded
(a random key's) and then `plan`: in service every successful request records one, and
least-latency brings its sorted lists up to date from those. `plan+all` reads all 1,000 (what a
request whose every try is skipped would pay).
`--distinct-weights` gives every key its own weight (weighted's worst case: it works per distinct
weight of the top level; by default weights are per provider, 1–5).

  .venv/bin/python bench/routing_decision.py                 # 100 × 10
  .venv/bin/python bench/routing_decision.py --providers 10 --keys 2 --seconds 0.5
  .venv/bin/python bench/routing_decision.py --instructions   # instructions per decision (callgrind)
"""

from __future__ import annotations

import argparse
import glob
from itertools import islice
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from services.catalog.pricing import Catalog  # noqa: E402
from services.clock import SystemClock  # noqa: E402
from services.config.schema import Config, ProviderConfig, ProviderKeyConfig  # noqa: E402
from services.limits.memory import MemoryLimiter  # noqa: E402
from services.providers.upstreams import Upstreams  # noqa: E402
from services.routing.candidates import CandidateIndex  # noqa: E402
from services.routing.router import Router  # noqa: E402
from services.routing.strategies import NAMES  # noqa: E402

MODEL = "gpt-4o-mini"


def build(providers: int, keys: int, tiered: bool, distinct_weights: bool = False) -> Config:
    rng = random.Random(1)
    return Config(strategy="priority", providers=tuple(
        ProviderConfig(
            name=f"p{i:03d}", kind="openai", base_url=f"http://127.0.0.1:9/{i}/v1",
            keys=tuple(ProviderKeyConfig(id=f"p{i:03d}-k{j + 1}", secret=f"sk-{i}-{j}",
                                         weight=2.0 + i * keys + j if distinct_weights else 1.0)
                       for j in range(keys)),
            models=(MODEL, f"model-{i}"), priority=i // 10 if tiered else 0, weight=float(rng.randint(1, 5)),
        )
        for i in range(providers)
    ))


def per_call_us(fn, seconds: float) -> float:
    """The fastest of 5 timed batches, each about seconds / 5 long, in µs per call (the minimum,
    as timeit advises: slower batches measure the machine's other work, not this code)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.02:  # calibrate
        fn()
        n += 1
    batch = max(1, int(n * (seconds / 5) / 0.02))
    samples = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter_ns() - t0) / batch / 1000.0)
    return min(samples)


def setup(providers: int, keys: int, tiered: bool, distinct_weights: bool):
    """(config, index, router, the model's candidates, an rng for latency samples); every key measured."""
    cfg = build(providers, keys, tiered, distinct_weights)
    index = CandidateIndex(cfg, Catalog.builtin())
    clock = SystemClock()
    router = Router(cfg, index, Upstreams(), MemoryLimiter(clock), clock, random.Random(7))
    lat_rng = random.Random(3)
    for v in index.resolve(MODEL):  # every key measured, so least-latency and balanced have real work to do
        router.latency.observe(v.target.key_id, lat_rng.uniform(50.0, 900.0))
    return cfg, index, router, index.resolve(MODEL), lat_rng


def plans(router: Router, views: list, name: str, tries: int, lat_rng: random.Random):
    """(plan, plan+obs): one request's routing decision with `tries` candidates read, without and
    with a latency sample recorded first (a random key's, as a finished request records one)."""
    keys = [v.target.key_id for v in views]

    def plan() -> None:
        list(islice(router.plan(MODEL, "", name)[1], tries))

    def observed_plan() -> None:
        router.latency.observe(keys[lat_rng.randrange(len(keys))], lat_rng.uniform(50.0, 900.0))
        list(islice(router.plan(MODEL, "", name)[1], tries))

    return plan, observed_plan


def run_layout(providers: int, keys: int, tiered: bool, seconds: float, distinct_weights: bool,
               args_reads: int = 0) -> None:
    t0 = time.perf_counter_ns()
    cfg, index, router, views, lat_rng = setup(providers, keys, tiered, distinct_weights)
    cold_us = (time.perf_counter_ns() - t0) / 1000.0
    layout = f"{'tiered' if tiered else 'flat'}: {providers} providers × {keys} keys = {len(views)} candidates"
    print(f"\n{layout}; set-up with the first (uncached) resolve {cold_us:,.0f} µs")
    print(f"{'strategy':<15}{'resolve µs':>12}{'order µs':>12}{'plan µs':>12}{'plan+obs µs':>12}{'plan+all µs':>12}")
    resolve_us = per_call_us(lambda: index.resolve(MODEL), seconds)
    rng = random.Random(7)
    for name in NAMES:
        strategy = router.strategy(name)
        for v in views:
            v.latency_ewma_ms = router.latency.get(v.target.key_id)
        tries = args_reads or cfg.max_attempts
        order_us = per_call_us(lambda: list(islice(strategy.order(views, rng), tries)), seconds)
        plan, observed_plan = plans(router, views, name, tries, lat_rng)
        plan_us = per_call_us(plan, seconds)
        obs_us = per_call_us(observed_plan, seconds)
        all_us = per_call_us(lambda: list(router.plan(MODEL, "", name)[1]), seconds)
        print(f"{name:<15}{resolve_us:>12.2f}{order_us:>12.1f}{plan_us:>12.1f}{obs_us:>12.1f}{all_us:>12.1f}")


def instructions(args: argparse.Namespace) -> None:
    """Instructions per decision under callgrind (deterministic, unlike µs on a busy machine): a
    child holds the set-up; per strategy it runs 50 decisions (so what the strategies measured
    before left behind, such as latency samples to catch up on, is not counted), then the counters
    are zeroed, it runs --calls decisions, they are dumped; an empty run of the loop is subtracted."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("valgrind is not installed: apt-get install -y valgrind")
    tmp = tempfile.mkdtemp(prefix="tollgate-routing-")
    for tiered in (False, True):
        cmd = ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={tmp}/cg.%p",
               sys.executable, os.path.abspath(__file__), "--child", "--providers", str(args.providers),
               "--keys", str(args.keys), "--reads", str(args.reads)] + (["--tiered"] if tiered else []) + (["--distinct-weights"] if args.distinct_weights else [])
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            counts = {}
            for name in ("-", *NAMES):
                for kind in ("plan", "obs"):
                    child.stdin.write(f"{name} {kind} {args.calls}\n")
                    child.stdin.flush()
                    assert child.stdout.readline().strip() == "warm"
                    subprocess.run(["callgrind_control", "-z", str(child.pid)], check=True, capture_output=True)
                    child.stdin.write("go\n")
                    child.stdin.flush()
                    assert child.stdout.readline().strip() == "done"
                    subprocess.run(["callgrind_control", "-d", str(child.pid)], check=True, capture_output=True)
                    counts[name, kind] = _dumped_total(tmp, child.pid)
        finally:
            child.stdin.close()
            child.wait()
        layout = "tiered" if tiered else "flat"
        print(f"\n{layout}: {args.providers} providers × {args.keys} keys; instructions per decision "
              f"({args.calls} decisions, the empty loop's subtracted)")
        print(f"{'strategy':<15}{'plan k':>10}{'plan+obs k':>12}")
        for name in NAMES:
            per = [(counts[name, k] - counts["-", k]) / args.calls / 1000 for k in ("plan", "obs")]
            print(f"{name:<15}{per[0]:>10.1f}{per[1]:>12.1f}")


def _dumped_total(tmp: str, pid: int) -> int:
    newest = max(glob.glob(f"{tmp}/cg.{pid}*"), key=os.path.getmtime)
    with open(newest) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    sys.exit(f"no totals in {newest}")


def child(args: argparse.Namespace) -> None:
    cfg, index, router, views, lat_rng = setup(args.providers, args.keys, args.tiered, args.distinct_weights)
    noop_keys = [v.target.key_id for v in views]

    def noop_plan() -> None:  # the loop alone
        pass

    def noop_obs() -> None:  # the loop and the sample alone
        router.latency.observe(noop_keys[lat_rng.randrange(len(noop_keys))], lat_rng.uniform(50.0, 900.0))

    print("ready", flush=True)
    while line := sys.stdin.readline():
        name, kind, calls = line.split()
        if name == "-":
            fn = noop_plan if kind == "plan" else noop_obs
        else:
            fn = plans(router, views, name, args.reads or cfg.max_attempts, lat_rng)[kind == "obs"]
        for _ in range(50):  # per-list caches built, state past its start, samples caught up on
            fn()
        print("warm", flush=True)
        assert sys.stdin.readline().strip() == "go"
        for _ in range(int(calls)):
            fn()
        print("done", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--providers", type=int, default=100)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=0.5, help="timing per cell")
    ap.add_argument("--distinct-weights", action="store_true", help="every key its own weight")
    ap.add_argument("--instructions", action="store_true", help="count instructions under callgrind instead of timing")
    ap.add_argument("--calls", type=int, default=200, help="decisions per strategy with --instructions")
    ap.add_argument("--reads", type=int, default=0, help="candidates read per decision (default: max_attempts, 4)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tiered", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.instructions:
        instructions(args)
        return
    print(f"Python {sys.version.split()[0]}; routing decision cost per request (best of 5 batches)")
    for tiered in (False, True):
        run_layout(args.providers, args.keys, tiered, args.seconds, args.distinct_weights, args.reads)


if __name__ == "__main__":
    main()
