#!/usr/bin/env python3
"""A thousand paced streams, two ways: all opened in one instant (burst), and arriving over a
ramp as a population of clients does, then held open (ramp). Issue 20 point 4.

Each target gets the same load in the same run: direct (the fake upstream itself), the floor
(../shared/bench's bare aiohttp proxy), Tollgate (as `make run` starts it, and with --workers N
the production shape on Redis + PostgreSQL), and LiteLLM (compare.py's cached venv). The
upstream is ../shared/bench/fake_upstream.py: --ttft-ms to the first token, then --tokens tokens
--delay-ms apart (defaults 200 ms, 100, 20 ms: ~2.2 s per stream, ~45,000 chunks/s at 1,000 open).

  burst  N streams started at the same instant, each once (load.py's `stream:c=N:n=N` without
         its c=N warm-up); a few streams at c=8 warm the target up first.
  ramp   N clients; client i starts at i * ramp / N, then opens its next stream as soon as one
         ends, until ramp + hold seconds: about N open from the ramp's end on. TTFT is reported
         for the streams begun after the ramp ("held": all N clients active) and for those begun
         during it ("arriving"), separately.

Per target and scenario: TTFT p50/p90/p99/max, TTFT added over direct at the same percentile,
streams completed, errors by kind, the most streams open at once, CPU of the target's process
tree, of the upstream and of the load generator (100 % = one core), and the target's RSS: idle
(after start-up and 8 warm-up streams, before any run), peak during the run, and
(peak - idle) / most open.

The load runs in ../shared/bench's venv (aiohttp + uvloop, compare.py builds it) as
`streams.py load ...`, built on load.py's Client and Result: the same client, body, TTFT rule
(the first non-empty content token) and error kinds as every other bench row.

  python bench/streams.py --streams 200 --no-litellm          # a quick check
  python bench/streams.py --streams 1000 --workers 2 --out bench/results/streams.json

Everything listens on and targets 127.0.0.1; only processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import SHARED  # noqa: E402  (../shared/bench, wherever the checkout sits)

sys.path.insert(0, SHARED)


# ------------------------------------------------------------------ the load (bench venv)


async def _one(client, res, starts: list, open_: list) -> None:
    open_[0] += 1
    open_[1] = max(open_[1], open_[0])
    starts.append(time.perf_counter())
    try:
        await client.stream(res)
    finally:
        open_[0] -= 1


async def run_load(a: argparse.Namespace) -> dict:
    from load import Client, Result

    client = Client(a.url, a.api_key, a.model, a.timeout, a.streams)
    open_ = [0, 0]  # open now, most open at once
    try:
        warm = Result()
        await asyncio.gather(*(client.stream(warm) for _ in range(8)))  # imports, caches, a few connections
        cpu0, t0 = time.process_time(), time.perf_counter()
        if a.mode == "burst":
            res, starts = Result(), []
            await asyncio.gather(*(_one(client, res, starts, open_) for _ in range(a.streams)))
            phases = {"all": res}
        else:
            ramp_res, steady_res, starts = Result(), Result(), []
            ramp_end, end = t0 + a.ramp_s, t0 + a.ramp_s + a.hold_s

            async def population_member(i: int) -> None:
                await asyncio.sleep(max(0.0, t0 + a.ramp_s * i / a.streams - time.perf_counter()))
                while (now := time.perf_counter()) < end:
                    await _one(client, steady_res if now >= ramp_end else ramp_res, starts, open_)

            await asyncio.gather(*(population_member(i) for i in range(a.streams)))
            phases = {"held": steady_res, "arriving": ramp_res}
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await client.close()
    out = {"mode": a.mode, "streams": a.streams, "elapsed_s": round(elapsed, 3), "max_open": open_[1],
           "started": len(starts), "client_cpu_pct": round(100 * cpu / elapsed, 1), "warmup_errors": sum(warm.errors.values())}
    for name, r in phases.items():
        out[name] = summary(r, elapsed)
    return out


def summary(r, elapsed: float) -> dict:
    from load import pct

    ttft, lat = sorted(r.ttft), sorted(r.lat)
    q = lambda v, p: None if not v else round(pct(v, p), 1)  # noqa: E731
    return {"ok": len(lat), "errors": sum(r.errors.values()), "error_kinds": r.errors,
            "streams_per_s": round(len(lat) / elapsed, 1),
            "ttft_p50_ms": q(ttft, 0.5), "ttft_p90_ms": q(ttft, 0.9), "ttft_p99_ms": q(ttft, 0.99),
            "ttft_max_ms": q(ttft, 1.0), "total_p50_ms": q(lat, 0.5), "total_p99_ms": q(lat, 0.99),
            "events_per_stream": round(r.events / len(lat), 1) if lat else None}


def load_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="streams.py load")
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key", default="sk-bench")
    ap.add_argument("--model", default="bench-model")
    ap.add_argument("--mode", choices=("burst", "ramp"), required=True)
    ap.add_argument("--streams", type=int, required=True)
    ap.add_argument("--ramp-s", type=float, default=1.5)
    ap.add_argument("--hold-s", type=float, default=6.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    from load import LOOPBACK, new_loop
    from urllib.parse import urlsplit

    if urlsplit(a.url).hostname not in LOOPBACK:
        sys.exit("streams.py only targets loopback")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * a.streams + 256)), hard))
    loop = new_loop()
    try:
        print(json.dumps(loop.run_until_complete(run_load(a))), flush=True)
    finally:
        loop.close()


# ------------------------------------------------------------------ the run (project venv)


def measure(py: str, target: dict, mode: str, a: argparse.Namespace, watched: dict, sampler, idle: dict) -> dict:
    import subprocess

    import compare

    argv = [py, os.path.abspath(__file__), "load", "--url", target["url"], "--api-key", target["key"],
            "--mode", mode, "--streams", str(a.streams), "--ramp-s", str(a.ramp_s), "--hold-s", str(a.hold_s),
            "--timeout", str(a.timeout)]
    cpu0 = {n: compare.tree_cpu_s(r) for n, r in watched.items()}
    sampler.reset()
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=a.ramp_s + a.hold_s + 4 * a.timeout + 120)
    wall = time.monotonic() - t0
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not rows:
        sys.exit(f"the load failed for {target['name']} {mode} (rc {r.returncode}):\n{r.stderr[-3000:]}")
    row = rows[0]
    row["target"] = target["name"]
    # CPU over the whole load process (warm-up included), 100 = one core.
    for n in watched:
        if n == target["name"] or n == "upstream":
            row[f"{'target' if n == target['name'] else 'upstream'}_cpu_pct"] = round(
                100 * (compare.tree_cpu_s(watched[n]) - cpu0[n]) / wall, 1)
    if target["name"] in idle:  # growth over the RSS it had idle after start-up, before any load
        base = idle[target["name"]]
        peak = max(sampler.peak(target["name"]) or 0.0, base)
        row.update(rss_idle_mib=round(base, 1), rss_peak_mib=round(peak, 1),
                   kib_per_open_stream=round((peak - base) * 1024 / max(row["max_open"], 1), 1))
    return row


PHASES = {"all": "", "held": ", held (begun after the ramp)", "arriving": ", arriving (begun during the ramp)"}


def prewarm(py: str, target: dict) -> None:
    import subprocess

    subprocess.run([py, os.path.abspath(__file__), "load", "--url", target["url"], "--api-key", target["key"],
                    "--mode", "burst", "--streams", "8"], capture_output=True, timeout=300)


def table(rows: list[dict]) -> str:
    direct = {(r["mode"], ph): r[ph] for r in rows if r["target"] == "direct" for ph in PHASES if ph in r}
    f = lambda v, sign=False: "-" if v is None else (f"{v:+,.1f}" if sign else f"{v:,.1f}")  # noqa: E731
    out = ["| scenario | target | streams ok | errors | streams/s | most open | TTFT p50 / p99 / max ms "
           "| added TTFT p50 / p99 ms | target CPU % | upstream CPU % | client CPU % | RSS idle → peak MiB | KiB per open stream |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for ph in PHASES:
            if ph not in r:
                continue
            s, d = r[ph], direct.get((r["mode"], ph), {})
            add = lambda k: (s[k] - d[k]) if s.get(k) is not None and d.get(k) is not None else None  # noqa: E731
            errs = f"{s['errors']}" + (f" ({', '.join(f'{k} {v}' for k, v in s['error_kinds'].items())})" if s["errors"] else "")
            rss = f"{r['rss_idle_mib']:.0f} → {r['rss_peak_mib']:.0f}" if "rss_idle_mib" in r else "-"
            out.append(
                f"| {r['mode']}{PHASES[ph]} | {r['target']} | {s['ok']} | {errs} | "
                f"{f(s['streams_per_s'])} | {r['max_open']} | {f(s['ttft_p50_ms'])} / {f(s['ttft_p99_ms'])} / "
                f"{f(s['ttft_max_ms'])} | {f(add('ttft_p50_ms'), True)} / {f(add('ttft_p99_ms'), True)} | "
                f"{f(r.get('target_cpu_pct'))} | {f(r.get('upstream_cpu_pct'))} | {f(r['client_cpu_pct'])} | {rss} | "
                f"{f(r.get('kib_per_open_stream'))} |")
    return "\n".join(out)


def main() -> None:
    if sys.argv[1:2] == ["load"]:
        return load_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000, help="streams open at once")
    ap.add_argument("--scenario", action="append", choices=("burst", "ramp"), help="default: both")
    ap.add_argument("--ramp-s", type=float, default=1.5, help="ramp: arrivals spread over this many seconds")
    ap.add_argument("--hold-s", type=float, default=6.0, help="ramp: then every client keeps a stream open this long")
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--ttft-ms", type=float, default=200.0)
    ap.add_argument("--timeout", type=float, default=60.0, help="per stream")
    ap.add_argument("--upstream-port", type=int, default=9161)
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--no-default", action="store_true", help="leave the default Tollgate (1 process) out")
    ap.add_argument("--workers", type=int, action="append", default=[], metavar="N",
                    help="also the production shape (Redis + PostgreSQL) with N workers (repeatable)")
    ap.add_argument("--litellm-version", default=None, help="default: compare.py's")
    ap.add_argument("--litellm-workers", type=int, default=1)
    ap.add_argument("--pause", type=float, default=3.0, help="seconds of rest between two runs")
    ap.add_argument("--out", help="raw rows and the table as JSON")
    a = ap.parse_args()
    a.scenario = a.scenario or ["burst", "ramp"]
    a.api_key = "sk-bench"

    import compare
    import run

    a.litellm_version = a.litellm_version or compare.LITELLM_DEFAULT
    a.python = None
    py = compare.bench_python(a)
    tmp = tempfile.mkdtemp(prefix="tollgate-streams-")
    started: list = []  # compare.Proc and run.Child: both stop() by PID
    dbs: list = []
    watched: dict[str, list[int]] = {}
    sampler = None

    def on_term(signum, frame):
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        up, upstream_url = compare.start_upstream(py, a, tmp)
        started.append(up)
        watched["upstream"] = [up.pid]
        targets = [{"name": "direct", "url": upstream_url, "key": a.api_key}]
        if not a.no_floor:
            p, url = compare.start_direct_proxy(py, upstream_url[: -len("/v1")], tmp)
            started.append(p)
            watched["floor"] = [p.pid]
            targets.append({"name": "floor", "url": url, "key": a.api_key})
        config = os.path.join(tmp, "tollgate.toml")
        with open(config, "w") as f:
            f.write(open(os.path.join(HERE, "tollgate.toml")).read().replace("127.0.0.1:9001", f"127.0.0.1:{a.upstream_port}"))
        admin_key = "tga_bench_" + secrets.token_urlsafe(24)
        shapes = ([("tollgate", 1, {})] if not a.no_default else [])
        if a.workers:
            urls = run.services_up()
            for n in a.workers:
                db = run.FreshDatabase(urls["DATABASE_URL"])
                dbs.append(db)
                shapes.append((f"tollgate-prod-{n}w", n, {"REDIS_URL": urls["REDIS_URL"], "DATABASE_URL": db.url}))
        for name, n, env in shapes:
            svc, base, _ = run.start_services(name, config, tmp, admin_key, args=("--workers", str(n)) if env else (), **env)
            started.append(svc)
            watched[name] = [svc.pid]
            targets.append({"name": name, "url": base + "/v1", "key": run.create_key(base, admin_key, f"bench-{name}")})
        if not a.no_litellm:
            # LiteLLM turns on its Prisma database when DATABASE_URL is set (the shell that ran
            # scripts/services-up has it) and exits without the prisma CLI: it gets neither URL.
            saved = {k: os.environ.pop(k) for k in ("DATABASE_URL", "REDIS_URL") if k in os.environ}
            try:
                p, url, version = compare.start_litellm(a, upstream_url, tmp)
            finally:
                os.environ.update(saved)
            started.append(p)
            watched["litellm"] = [p.pid]
            targets.append({"name": f"litellm {version}", "url": url, "key": a.api_key})
            watched[f"litellm {version}"] = watched.pop("litellm")
        run.log(f"targets: {', '.join(t['name'] + '=' + t['url'] for t in targets)}; logs in {tmp}")
        # The RSS baseline: each target after 8 streams at once (imports, caches, pools warm), so
        # what a run adds over it is what open streams hold, not what a first request loads.
        for t in targets:
            prewarm(py, t)
        idle = {n: compare.tree_rss_mb(r) for n, r in watched.items() if n != "upstream"}
        sampler = compare.Sampler(watched)
        sampler.start()
        rows = []
        # Target by target, both scenarios each: LiteLLM (last) still works off its timed-out
        # streams for a while after its runs, and must not do so during another target's.
        for t in targets:
            for mode in a.scenario:
                time.sleep(a.pause)
                row = measure(py, t, mode, a, watched, sampler, idle)
                rows.append(row)
                s = row.get("held") or row["all"]
                run.log(f"{mode:>5} {t['name']:>18}: {s['ok']} ok, {s['errors']} errors, TTFT p50 {s['ttft_p50_ms']} "
                        f"p99 {s['ttft_p99_ms']} ms, most open {row['max_open']}, CPU {row.get('target_cpu_pct')} %")
        rows.sort(key=lambda r: a.scenario.index(r["mode"]))  # the table by scenario, targets in order
        head = (f"{a.streams} streams; upstream: {a.ttft_ms:g} ms to the first token, then {a.tokens} tokens "
                f"{a.delay_ms:g} ms apart; ramp {a.ramp_s:g} s then {a.hold_s:g} s held; {os.cpu_count()} CPUs, "
                f"load average {os.getloadavg()[0]:.1f} at the end")
        text = head + "\n\n" + table(rows)
        print(text)
        if a.out:
            with open(a.out, "w") as f:
                json.dump({"args": {k: v for k, v in vars(a).items() if k != "api_key"}, "rows": rows, "table": text}, f, indent=1)
            run.log(f"raw rows in {a.out}")
    finally:
        if sampler is not None:
            sampler.stopping.set()
        for p in reversed(started):
            p.stop()
        for db in dbs:
            db.close()


if __name__ == "__main__":
    main()
