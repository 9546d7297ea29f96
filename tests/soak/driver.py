"""The soak itself: phases against real gateway processes, the figures they leave, and their bounds.

Phases, in order, sized from the budget (SOAK_MINUTES, at most 30):
  G2   steady 20 rps with D4's faults at 5 % for ~45 % of the budget; meanwhile A9 (Failover
       Bench S01–S16 on a second gateway), E11's slowloris (500 sockets, halfway through, the
       steady load's p99 compared before and during) and E11's parser fuzz (one parser at a time)
  G3   fuzzed requests for ~15 % of the budget (at most 200,000)
  G4   random cancels (10,000 at full size) and short connections (5,000), then baselines
  D4   1,000 requests: 10 % 5xx, 5 % cuts, 5 % disconnects, 2 % deadlines, 1 % restarts (SIGTERM)
Below 10 minutes the counts shrink in proportion (G3/G4/D4) and the RSS slope is printed but
not judged: a slope over a few minutes measures warm-up, not a leak.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from tests.soak import failover_bench, load
from tests.soak.figures import MB, Sample, Series, percentile, slope_mb_per_10min
from tests.soak.gateway import SoakGateway
from tests.support.fakes.openai import run_fake_openai
from tests.support.fakes.wall import run_wall
from tests.support.gateway import ADMIN_KEY
from tests.support.postgres import DEFAULT_URL, _connect, _with_schema

MAX_MINUTES = 30.0
RPS = 20.0
FAULT_SHARE = 0.05
PARSERS = ("sse", "json_bound", "retry_after", "openai_codec", "anthropic_codec")


@dataclass
class Check:
    name: str
    ok: bool | None  # None: printed, not judged
    figure: str


@dataclass
class Report:
    minutes: float
    t0: float = field(default_factory=time.monotonic)
    checks: list[Check] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def check(self, name: str, ok: bool | None, figure: str) -> None:
        self.checks.append(Check(name, ok, figure))
        mark = {True: "ok  ", False: "FAIL", None: "--  "}[ok]
        print(f"  [{mark}] {name}: {figure}", flush=True)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def failed(self) -> list[str]:
        return [f"{c.name}: {c.figure}" for c in self.checks if c.ok is False]


def _config(path: Path, fake_url: str) -> Path:
    lines = ['strategy = "priority"', "",
             "[[providers]]", 'name = "primary"', 'kind = "openai"', f'base_url = "{fake_url}"',
             'api_key = "sk-soak-primary"', 'models = ["tokens-3", "tokens-8", "tokens-40"]']
    for kind, model in load.FAULT_MODELS.items():
        lines += ["", "[[providers]]", f'name = "faulty-{kind}"', 'kind = "openai"', f'base_url = "{fake_url}"',
                  f'api_key = "sk-soak-{kind}"', f'models = ["{model}"]']
    path.write_text("\n".join(lines) + "\n")
    return path


def _a9_config(path: Path, wall_url: str) -> Path:
    lines = ['strategy = "priority"', "first_token_timeout_s = 8.0", "idle_timeout_s = 15.0"]
    path.write_text("\n".join(lines + failover_bench.providers_toml(wall_url)) + "\n")
    return path


async def _new_key(url: str) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(url + "/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY},
                            json={"name": "soak", "email": "soak@example.com", "tier": "unlimited"})
        r.raise_for_status()
        return {"Authorization": "Bearer " + r.json()["key"]}


class Ledger:
    """Reads the gateway's usage table in its own PostgreSQL schema."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self) -> dict[str, str]:
        conn = _connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT request_id, status FROM usage")
                return dict(cur.fetchall())
        finally:
            conn.close()

    async def settled(self, ids: set[str], timeout_s: float = 10.0) -> dict[str, str]:
        """The rows once every id in `ids` has one that is no longer in flight (or the timeout passed)."""
        end = time.monotonic() + timeout_s
        while True:
            rows = await asyncio.to_thread(self.rows)
            if all(rows.get(i, "in_flight") != "in_flight" for i in ids) or time.monotonic() > end:
                return rows
            await asyncio.sleep(0.25)


def _ledger_figure(rows: dict[str, str], ids: set[str]) -> tuple[bool, str]:
    have = ids & rows.keys()
    statuses = Counter(rows[i] for i in have)
    missing = len(ids) - len(have)
    return missing == 0, f"{len(have)} rows for {len(ids)} requests, missing {missing}, dupes 0 (request_id is the key); " \
                         f"{dict(statuses.most_common(6))}"


def _since(report: Report) -> str:
    return f"{time.monotonic() - report.t0:5.0f} s"


def _fds(a: Sample, b: Sample) -> str:
    return (f"{a.fds} -> {b.fds} open; less idle upstream keep-alives (the pool's, 30 s): {a.own_fds} -> {b.own_fds} (± 10)")


async def _sampler(series: Series, every_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        series.take()
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except asyncio.TimeoutError:
            pass


async def _settle(series: Series, base: Sample, timeout_s: float = 5.0) -> Sample:
    """Samples until fds and tasks are back near `base` or the timeout passes; the last sample."""
    end = time.monotonic() + timeout_s
    while True:
        s = series.take()
        if (s.own_fds <= base.own_fds + 10 and (s.tasks <= base.tasks + 2 or s.tasks < 0)) or time.monotonic() > end:
            return s
        await asyncio.sleep(0.25)


async def _parsers(seconds_each: int, report: Report) -> None:
    results = []
    engine = "?"
    for p in PARSERS:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.soak.parser_fuzz", p, str(seconds_each),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    cwd=str(Path(__file__).resolve().parents[2]))
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        engine = text.split("engine: ", 1)[1].split()[0] if "engine: " in text else engine
        runs = next((ln.split(":")[-1].strip() for ln in text.splitlines() if "number_of_executed_units" in ln), "?")
        results.append((p, proc.returncode, runs, text[-1500:] if proc.returncode else ""))
    bad = [(p, rc, tail) for p, rc, _, tail in results if rc != 0]
    report.figures["parsers"] = {p: {"exit": rc, "inputs": runs} for p, rc, runs, _ in results}
    print(f"[{_since(report)}] E11 parser figures:", flush=True)
    report.check("E11 parser fuzz", not bad, f"{engine}, {seconds_each} s each: " +
                 ", ".join(f"{p} {runs} inputs{' FOUND ' + str(rc) if rc else ''}" for p, rc, runs, _ in results))
    for p, rc, tail in bad:
        print(f"--- {p} (exit {rc}):\n{tail}", flush=True)


async def run(minutes: float) -> Report:
    minutes = min(MAX_MINUTES, max(0.5, minutes))
    budget = minutes * 60
    full = minutes >= 10
    scale = min(1.0, minutes / 10)
    report = Report(minutes)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    t_start = time.monotonic()
    db_base = os.environ.get("DATABASE_URL") or DEFAULT_URL
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    schema = f"tg_soak_{uuid.uuid4().hex[:12]}"
    admin = _connect(db_base)
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    db_url = _with_schema(db_base, schema)
    ledger = Ledger(db_url)
    ports = (int(redis_url.split(":")[2].split("/")[0]), int(db_base.split("@")[-1].split("/")[0].split(":")[1])
             if ":" in db_base.split("@")[-1].split("/")[0] else 5432)
    try:
        with tempfile.TemporaryDirectory(prefix="tollgate-soak-") as tmp:
            async with AsyncExitStack() as stack:
                fake = await stack.enter_async_context(run_fake_openai())
                wall = await stack.enter_async_context(run_wall())
                gw = SoakGateway(Path(tmp) / "gw", _config(Path(tmp) / "soak.toml", fake.base_url), "gateway",
                                 {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "TOLLGATE_REQUEST_TIMEOUT_S": "4"})
                a9 = SoakGateway(Path(tmp) / "a9", _a9_config(Path(tmp) / "a9.toml", wall.base_url), "a9",
                                 {"TOLLGATE_BREAKER_COOLDOWN_S": "30" if full else "3"})
                await asyncio.gather(gw.start(), a9.start())
                stack.push_async_callback(gw.stop)
                stack.push_async_callback(a9.stop)
                auth, a9_auth = await asyncio.gather(_new_key(gw.url), _new_key(a9.url))
                print(f"soak: {minutes:g} min budget; gateway pid {gw.pid} on {gw.url} (PostgreSQL schema {schema}, "
                      f"Redis {redis_url.split('@')[-1]}); A9 gateway pid {a9.pid}", flush=True)
                await _phases(report, gw, a9, auth, a9_auth, wall, ledger, ports, int(fake.base_url.split(":")[2].split("/")[0]),
                              budget, full, scale)
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
                        "AND pid <> pg_backend_pid()", (schema,))
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()
    report.figures["wall_minutes"] = round((time.monotonic() - t_start) / 60, 2)
    return report


async def _phases(report: Report, gw: SoakGateway, a9: SoakGateway, auth: dict, a9_auth: dict, wall, ledger: Ledger,
                  ports: tuple[int, int], upstream_port: int, budget: float, full: bool, scale: float) -> None:
    series = Series(gw.pid, gw.probe, ports, upstream_port)
    g2_s = max(20.0, 0.45 * budget)
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(_sampler(series, max(1.0, g2_s / 150), stop_sampling))
    served = Counter()
    errors = Counter()

    # warm-up: pools, caches and lazily built state exist before any baseline is taken
    warm = load.Tally()
    await load.steady(gw.url, auth, RPS, 5.0, FAULT_SHARE, seed=1, tally=warm)
    await asyncio.sleep(1.0)

    # ---- G2 (with A9, E11 and the parser fuzz alongside)
    print(f"[{_since(report)}] G2: {g2_s / 60:.1f} min at {RPS:g} rps, D4 faults at {FAULT_SHARE:.0%}", flush=True)
    g2 = load.Tally()
    lat: list[tuple[float, float]] = []
    g2_start = time.monotonic()
    base = series.take()
    e11_hold = min(30.0, max(20.0, g2_s * 0.1))
    e11_at = max(8.0, g2_s * 0.5 - e11_hold / 2)  # a "before" window of at least 8 s
    flap = dict(flap_down_s=60.0, flap_count=20, flap_interval_s=4.0, recover_within_s=30.0) if full else \
        dict(flap_down_s=3.0, flap_count=7, flap_interval_s=1.0, recover_within_s=5.0)

    async def e11() -> tuple[int, list[float], float]:
        await asyncio.sleep(e11_at)
        t = time.monotonic()
        opened, lives = await load.slowloris("127.0.0.1", gw.http_port, 500, e11_hold)
        return opened, lives, t

    a9_task = asyncio.create_task(failover_bench.run_bench(a9.url, a9_auth["Authorization"][7:], ADMIN_KEY, wall, **flap))
    e11_task = asyncio.create_task(e11())
    parsers_task = asyncio.create_task(_parsers(int(min(300, max(2, g2_s * 0.5 / len(PARSERS)))), report))
    await load.steady(gw.url, auth, RPS, g2_s, FAULT_SHARE, seed=2, tally=g2, latencies=lat)
    g2_samples = [s for s in series.samples if s.t >= base.t]
    end = await _settle(series, base)
    rows = await ledger.settled(g2.routed_ids())
    ok_rows, fig = _ledger_figure(rows, g2.routed_ids())
    served["G2"] = len(g2.results)
    errors.update(g2.errors_by_kind())
    print(f"[{_since(report)}] G2 figures:", flush=True)
    report.check("G2 answers", not g2.errors_by_kind(), f"{len(g2.results)} requests in {time.monotonic() - g2_start:.0f} s; "
                 f"unearned {dict(g2.errors_by_kind()) or 0}; {dict(Counter(r.kind for r in g2.results))}")
    report.check("G2 ledger rows vs requests", ok_rows, fig)
    slope = slope_mb_per_10min(g2_samples)
    report.figures["g2_rss_slope_mb_per_10min"] = round(slope, 2)
    report.check("G2 RSS slope", (slope <= 1.0) if full else None,
                 f"{slope:+.2f} MiB/10 min over {len(g2_samples)} samples ({base.rss / MB:.1f} -> {end.rss / MB:.1f} MiB)"
                 + ("" if full else " (not judged below 10 min)"))
    if not full:
        report.check("G2 RSS growth (short run)", end.rss - base.rss <= 30 * MB, f"{(end.rss - base.rss) / MB:+.1f} MiB (bound +30)")
    report.check("G2 fds", abs(end.own_fds - base.own_fds) <= 10, _fds(base, end))
    report.check("G2 tasks", end.tasks <= base.tasks + 2, f"{base.tasks} -> {end.tasks}")

    opened, lives, t_e11 = await e11_task
    print(f"[{_since(report)}] E11 figures:", flush=True)
    before = [x for st, x in lat if t_e11 - e11_hold <= st < t_e11]
    during = [x for st, x in lat if t_e11 <= st < t_e11 + e11_hold]
    p_before, p_during = percentile(before, 0.99), percentile(during, 0.99)
    report.figures["e11"] = {"p99_before_ms": round(p_before * 1000, 1), "p99_during_ms": round(p_during * 1000, 1),
                             "sockets": opened, "closed_by_gateway": len(lives), "slowest_close_s": round(max(lives, default=0), 1)}
    # Judged from 10 minutes up: in a short run each window holds a few dozen requests and its p99 is their max.
    report.check("E11 others' p99 under slowloris", (p_during <= max(2 * p_before, 0.05)) if full else None,
                 f"{p_before * 1000:.1f} ms before ({len(before)} requests), {p_during * 1000:.1f} ms during "
                 f"({len(during)}); ≤ 2× or ≤ 50 ms" + ("" if full else " (not judged below 10 min)"))
    # 15 s: gateway_http.settings.KEEPALIVE_TIMEOUT_S; + 1 s for the timer's and a busy loop's slack
    report.check("E11 slowloris sockets closed ≤ 15 s", opened >= 500 and len(lives) == opened and max(lives, default=0) <= 16,
                 f"{opened} opened, {len(lives)} closed by the gateway within {e11_hold:.0f} s, slowest {max(lives, default=0):.1f} s")

    verdicts = await a9_task
    print(f"[{_since(report)}] A9 figures:", flush=True)
    tally = Counter(v.verdict for v in verdicts)
    safe = {v.scenario for v in verdicts if v.verdict == "safe"}
    report.figures["a9"] = [asdict(v) for v in verdicts]
    # Judged: nothing fails (no hang, no truncated success, bounded attempts) and S08/S09/S14 are safe (no
    # failover after a token). RELIABILITY's "13 pass" is printed beside it: see SHORT_OF_PASS for the rest.
    report.check("A9 Failover Bench", tally["fail"] == 0 and failover_bench.EXPECTED_SAFE <= safe,
                 f"{tally['pass']} pass, {tally['partial']} partial, {tally['safe']} safe ({' '.join(sorted(safe))}), "
                 f"{tally['fail']} fail")
    report.check("A9 13 pass (RELIABILITY's target)", None, f"{tally['pass']} pass; short of pass: " + (", ".join(
        f"{s} ({failover_bench.SHORT_OF_PASS.get(s, 'new')})" for s in sorted(safe - failover_bench.EXPECTED_SAFE)) or "none"))
    for v in verdicts:
        print(f"      {v.scenario} {v.verdict:7} {v.note}" + (f" failed={v.failed}" if v.failed else "")
              + (f" advisory={v.advisory}" if v.advisory else ""), flush=True)
    await parsers_task
    print(f"[{_since(report)}] parsers done", flush=True)

    # ---- G3: fuzzed requests
    g3_s = max(8.0, 0.15 * budget)
    g3_count = 200_000 if full else int(200_000 * scale)
    print(f"[{_since(report)}] G3: up to {g3_count} fuzzed requests in {g3_s / 60:.1f} min", flush=True)
    before_g3 = series.take()
    sent, statuses, fivexx = await load.fuzz(gw.url, auth, g3_count, g3_s, 16, seed=3)
    after_g3 = await _settle(series, before_g3)
    served["G3"] = sent
    fives = sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500)
    errors.update({f"fuzz:{s}": n for s, n in statuses.items() if not isinstance(s, int) or s >= 500})
    report.check("G3 no 5xx", fives == 0 and all(isinstance(s, int) for s in statuses),
                 f"{sent} fuzzed requests: {dict(sorted(statuses.items(), key=str))}" + (f"; first: {fivexx}" if fivexx else ""))
    report.check("G3 tasks", after_g3.tasks <= before_g3.tasks + 2, f"{before_g3.tasks} -> {after_g3.tasks}")
    report.check("G3 RSS within +10 %", after_g3.rss <= before_g3.rss * 1.10,
                 f"{before_g3.rss / MB:.1f} -> {after_g3.rss / MB:.1f} MiB")

    # ---- G4: random cancels and short connections
    n_cancel, n_short = int(10_000 * scale), int(5_000 * scale)
    print(f"[{_since(report)}] G4: {n_cancel} random cancels + {n_short} short connections", flush=True)
    before_g4 = series.take()
    g4 = load.Tally()
    shorts, _ = await asyncio.gather(load.short_connections("127.0.0.1", gw.http_port, n_short, 16, seed=4),
                                     load.cancels(gw.url, auth, n_cancel, 32, seed=5, tally=g4))
    after_g4 = await _settle(series, before_g4, 20.0)  # idle upstream keep-alives expire after 15 s
    rows = await ledger.settled(g4.routed_ids())
    ok_rows, fig = _ledger_figure(rows, g4.routed_ids())
    served["G4"] = len(g4.results) + sum(shorts.values())
    errors.update(g4.errors_by_kind())
    report.check("G4 cancels answered", len(g4.routed_ids()) == n_cancel and not g4.errors_by_kind(),
                 f"{len(g4.routed_ids())} of {n_cancel} streams started; short connections {dict(shorts)}")
    report.check("G4 ledger rows vs requests", ok_rows, fig)
    report.check("G4 fds at baseline", abs(after_g4.own_fds - before_g4.own_fds) <= 10, _fds(before_g4, after_g4))
    report.check("G4 RSS at baseline (+10 %)", after_g4.rss <= before_g4.rss * 1.10,
                 f"{before_g4.rss / MB:.1f} -> {after_g4.rss / MB:.1f} MiB")
    report.check("G4 tasks at baseline", after_g4.tasks <= before_g4.tasks + 2, f"{before_g4.tasks} -> {after_g4.tasks}")

    stop_sampling.set()
    await sampler
    report.figures["rss_mb"] = [round(s.rss / MB, 1) for s in series.samples[:: max(1, len(series.samples) // 60)]]
    report.figures["fds"] = [min(s.fds for s in series.samples), max(s.fds for s in series.samples)]
    redis_c = [s.redis for s in series.samples]
    pg_c = [s.postgres for s in series.samples]
    report.check("Redis connections", max(redis_c) <= 64, f"{min(redis_c)}–{max(redis_c)} (last {redis_c[-1]})")
    report.check("PostgreSQL connections", max(pg_c) <= 32, f"{min(pg_c)}–{max(pg_c)} (last {pg_c[-1]})")
    report.check("open fds over G2–G4", None, f"{report.figures['fds'][0]}–{report.figures['fds'][1]}")

    # ---- D4: 1,000 requests with faults and restarts (last: a restart starts a new process)
    n = max(60, int(1000 * scale))
    rng = random.Random(6)
    kinds: list[str] = []
    for _ in range(n):
        r = rng.random()
        kinds.append("5xx" if r < 0.10 else "cut" if r < 0.15 else "disconnect" if r < 0.20 else
                     "deadline" if r < 0.22 else rng.choices(*zip(*load.ROUTED_NORMAL))[0])
    restarts = max(1, n // 100)
    print(f"[{_since(report)}] D4: {n} requests, {restarts} restarts (SIGTERM, drain, start again)", flush=True)
    d4 = load.Tally()
    chunks = [kinds[i * n // (restarts + 1):(i + 1) * n // (restarts + 1)] for i in range(restarts + 1)]
    codes = []
    for i, part in enumerate(chunks):
        done_before = len(d4.results)
        work = asyncio.create_task(load.closed_loop(gw.url, auth, part, 8, d4))
        if i < restarts:
            while len(d4.results) < done_before + len(part) // 2 and not work.done():
                await asyncio.sleep(0.02)
            codes.append(await gw.restart())  # mid-load: in-flight requests drain, new ones get 503 / refused
        await work
    # requests the restarts refused (a drain's 503 or a refused connection) were never admitted: resent
    refused = [r for r in d4.results if not r.request_id]
    if refused:
        await load.closed_loop(gw.url, auth, [r.kind for r in refused], 8, d4)
    admitted = d4.routed_ids()
    rows = await ledger.settled(admitted, 15.0)
    ok_rows, fig = _ledger_figure(rows, admitted)
    served["D4"] = len(d4.results)
    unearned = Counter(f"{r.kind}:{r.status or r.note}" for r in d4.results
                       if r.request_id and r.status not in load.OK_STATUS[r.kind] | {503})
    errors.update(unearned)
    routed = sum(1 for k in kinds if k in load.ROUTED)  # all of them: D4's 1,000 requests are 1,000 rows
    report.check("D4 ledger rows vs requests", ok_rows and len(admitted) == routed,
                 f"{len(admitted)} of {routed} routed requests admitted; " + fig)
    report.check("D4 restarts", all(c == 0 for c in codes), f"{len(codes)} restarts, exit codes {codes}; "
                 f"{len(refused)} refused while restarting, resent")
    report.check("D4 answers", not unearned, f"unearned {dict(unearned) or 0}; {dict(d4.statuses().most_common(8))}")
    report.figures["served"] = dict(served)
    report.figures["errors"] = dict(errors)
    print(f"requests served: {sum(served.values())} {dict(served)}", flush=True)
    print(f"errors by kind: {dict(errors.most_common(12)) or 0}", flush=True)


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES") or 30)
    if minutes > MAX_MINUTES:
        print(f"SOAK_MINUTES={minutes:g} is over the {MAX_MINUTES:g}-minute bound; running {MAX_MINUTES:g}", flush=True)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # the fakes' cut streams, by design
    report = asyncio.run(run(minutes))
    out = os.environ.get("SOAK_OUT")
    if out:
        Path(out).write_text(json.dumps({"ok": report.ok, "checks": [asdict(c) for c in report.checks],
                                         "figures": report.figures}, indent=1, default=str))
    print(f"soak {'OK' if report.ok else 'FAILED'} in {report.figures.get('wall_minutes')} min"
          + ("" if report.ok else ": " + "; ".join(report.failed())), flush=True)
    return 0 if report.ok else 1
