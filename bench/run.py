#!/usr/bin/env python3
"""`make bench`: Tollgate side by side with direct, the bare-proxy floor and LiteLLM.

Starts Tollgate as `make run` does (`python -m services`: gRPC server and HTTP bridge in one
process, the bridge calling the servicers in-process) and, unless --no-bridge, the split
deployment too (a second `python -m services` plus `python -m gateway_http` pointed at its
gRPC port through TOLLGATE_BRIDGE_TARGET). Both read bench/tollgate.toml: auth, tier quotas,
routing, metering and metrics all on. For each it creates a real API key in the `enterprise`
tier (limits raised in bench/tollgate.toml) through POST /api/admin/keys, then runs
../shared/bench/compare.py with the targets, their keys and their PIDs (for CPU and RSS), and
stops what it started, by PID.

  python bench/run.py                      # the full run: 3 repeats, with LiteLLM
  python bench/run.py --no-litellm --repeats 1 -- --duration 5   # quick iteration

Everything listens on 127.0.0.1 (ports chosen by the OS, read back from the start-up lines).
Arguments after `--` go to compare.py unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "bench")
# ../shared/bench beside the checkout (a worktree may sit one level deeper: look upwards).
SHARED = next((os.path.join(d, "shared", "bench") for d in (os.path.dirname(ROOT), os.path.dirname(os.path.dirname(ROOT)))
               if os.path.isdir(os.path.join(d, "shared", "bench"))), os.path.join(os.path.dirname(ROOT), "shared", "bench"))
DEFAULT_COMPARE = os.path.join(SHARED, "compare.py")
# Variables that would change what the bench measures (seed variables add providers, keys,
# a database or Redis); the children get the caller's environment without them.
SCRUB = ("ROUTER_SERVICES", "DATABASE_URL", "REDIS_URL", "HOST", "PORT", "ENABLE_AUTH", "ADMIN_API_KEY",
         "KEY_SELECTION_STRATEGY", "ROUTING_STRATEGY", "JWT_SECRET", "REQUEST_TIMEOUT", "OLLAMA_BASE_URL")
SERVICES_UP = re.compile(r"HTTP bridge http://([\d.]+):(\d+)\s+gRPC ([\d.]+):(\d+)")
BRIDGE_UP = re.compile(r"Tollgate bridge on http://([\d.]+):(\d+)")


def log(*a: object) -> None:
    print("[bench]", *a, file=sys.stderr, flush=True)


class Child:
    """A process we started (own session), its log, and a stop by PID."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: str, cwd: str = "") -> None:
        self.name = name
        self.logpath = os.path.join(logdir, f"{name}.log")
        self._logf = open(self.logpath, "wb")
        self.p = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT, env=env, cwd=cwd or ROOT,
                                  start_new_session=True)
        self.pid = self.p.pid

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pattern.search(self.text())
            if m:
                return m
            if self.p.poll() is not None:
                sys.exit(f"{self.name} exited during start-up (log {self.logpath}):\n{self.text()[-3000:]}")
            time.sleep(0.1)
        sys.exit(f"{self.name} not up after {timeout:.0f}s (log {self.logpath}):\n{self.text()[-3000:]}")

    def text(self) -> str:
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        self._logf.close()


def http(method: str, url: str, body: dict | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def child_env(config: str, data_dir: str, admin_key: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in SCRUB and not k.startswith(("TOLLGATE_", "AUTH_KEY")) and not k.endswith("_API_KEY")}
    env.update(TOLLGATE_CONFIG=config, TOLLGATE_DATA_DIR=data_dir, TOLLGATE_ADMIN_KEY=admin_key,
               TOLLGATE_HTTP_ADDR="127.0.0.1:0", TOLLGATE_GRPC_ADDR="127.0.0.1:0", PYTHONUNBUFFERED="1", **extra)
    return env


def create_key(base: str, admin_key: str, name: str) -> str:
    """A real issued key in the `enterprise` tier (limits raised in bench/tollgate.toml), made
    the way an operator makes one: POST /api/admin/keys with the admin key."""
    status, raw = http("POST", base + "/api/admin/keys", {"name": name, "email": f"{name}@bench.invalid", "tier": "enterprise"},
                       {"X-Admin-Key": admin_key})
    if status != 201:
        sys.exit(f"creating the API key at {base} failed: {status} {raw[:500]!r}")
    key = json.loads(raw)["key"]
    status, raw = http("GET", base + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    if status != 200:
        sys.exit(f"the new key does not work at {base}: {status} {raw[:500]!r}")
    return key


def start_services(name: str, config: str, tmp: str, admin_key: str, tree: str = "", args: tuple[str, ...] = (),
                   **extra: str) -> tuple[Child, str, str]:
    """`python -m services` from this checkout, or from another source tree (--variant); `extra`
    adds environment (REDIS_URL, DATABASE_URL for the production shape), `args` command-line
    arguments (--workers N)."""
    data_dir = os.path.join(tmp, name + "-data")
    env = child_env(config, data_dir, admin_key, **extra)
    if tree:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(tree, "clients"), env.get("PYTHONPATH", "")) if p)
    child = Child(name, [sys.executable, "-m", "services", *args], env, tmp, cwd=tree)
    m = child.wait_for(SERVICES_UP, 120)
    return child, f"http://{m.group(1)}:{m.group(2)}", f"{m.group(3)}:{m.group(4)}"


def services_up() -> dict[str, str]:
    """REDIS_URL and DATABASE_URL as `make test` gets them: scripts/services-up starts Redis and
    PostgreSQL on 127.0.0.1 unless they run already (then it only prints their URLs)."""
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "services-up")], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split("=", 1) for line in out.split() if "=" in line)


class FreshDatabase:
    """A new PostgreSQL database on the server of `url` for one target (dropped at close), so the
    ledger rows counted afterwards are that target's alone."""

    def __init__(self, url: str) -> None:
        import psycopg2
        from urllib.parse import urlsplit, urlunsplit

        self.name = "tgbench_" + secrets.token_hex(6)
        self.admin = psycopg2.connect(url)
        self.admin.autocommit = True
        with self.admin.cursor() as c:
            c.execute(f"CREATE DATABASE {self.name}")
        p = urlsplit(url)
        self.url = urlunsplit((p.scheme, p.netloc, "/" + self.name, "", ""))

    def commits(self) -> int:
        with self.admin.cursor() as c:
            c.execute("SELECT pg_stat_clear_snapshot()")
            c.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self.name,))
            return int(c.fetchone()[0])

    def rows(self, where: str = "") -> int:
        import psycopg2

        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as c:
                c.execute("SELECT count(*) FROM usage" + (f" WHERE {where}" if where else ""))
                return int(c.fetchone()[0])
        finally:
            conn.close()

    def close(self) -> None:
        with self.admin.cursor() as c:
            c.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        self.admin.close()


def metered_total(base: str, admin_key: str) -> int:
    status, raw = http("GET", base + "/metrics", headers={"X-Admin-Key": admin_key})
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in raw.decode().splitlines()
                   if line.startswith("tollgate_requests_total{"))) if status == 200 else -1


def metered(base: str, admin_key: str) -> str:
    """What the gateway itself counted (Prometheus), so a run shows metering was on."""
    status, raw = http("GET", base + "/metrics", headers={"X-Admin-Key": admin_key})
    if status != 200:
        return f"/metrics answered {status}"
    by_status: dict[str, float] = {}
    for line in raw.decode().splitlines():
        if line.startswith("tollgate_requests_total{"):
            st = re.search(r'status="([^"]*)"', line)
            by_status[st.group(1) if st else "?"] = by_status.get(st.group(1) if st else "?", 0) + float(line.rsplit(" ", 1)[1])
    return ", ".join(f"{k}: {v:.0f}" for k, v in sorted(by_status.items())) or "no tollgate_requests_total samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", default=os.environ.get("TOLLGATE_BENCH_COMPARE", DEFAULT_COMPARE),
                    help="path to compare.py (default ../shared/bench/compare.py)")
    ap.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out (quick iteration)")
    ap.add_argument("--no-bridge", action="store_true", help="leave the separate-process bridge out")
    ap.add_argument("--no-default", action="store_true", help="leave the default single-process deployment out")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--upstream-port", type=int, default=9001, help="the fake upstream's port (compare.py's)")
    ap.add_argument("--out", help="raw rows as JSON (default bench/results/<time>.json)")
    ap.add_argument("--hold", type=float, default=0.0, help="seconds to keep the gateways up before compare (profiling)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                    help="also bench the default deployment run from another source tree (a patched copy), side by side")
    ap.add_argument("--production", action="store_true",
                    help="also the production shape: Redis limiter + PostgreSQL ledger (scripts/services-up), 1 worker")
    ap.add_argument("--workers", type=int, action="append", default=[], metavar="N",
                    help="also the production shape with N worker processes (repeatable)")
    ap.add_argument("--production-variant", action="append", default=[], metavar="NAME=DIR",
                    help="also the production shape (1 worker) run from another source tree: a before/after A/B")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then arguments for compare.py")
    args = ap.parse_args()
    extra = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if not os.path.exists(args.compare):
        sys.exit(f"compare.py not found at {args.compare}: give --compare or TOLLGATE_BENCH_COMPARE")

    tmp = tempfile.mkdtemp(prefix="tollgate-bench-run-")
    config = os.path.join(HERE, "tollgate.toml")
    if args.upstream_port != 9001:
        text = open(config).read().replace("127.0.0.1:9001", f"127.0.0.1:{args.upstream_port}")
        config = os.path.join(tmp, "tollgate.toml")
        with open(config, "w") as f:
            f.write(text)
    out = args.out or os.path.join(HERE, "results", time.strftime("%Y-%m-%d-%H%M%S") + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    admin_key = "tga_bench_" + secrets.token_urlsafe(24)
    children: list[Child] = []
    targets: list[str] = []  # NAME=URL positionals (compare.py wants them together)
    options: list[str] = []  # their --key / --pid
    peek: list[str] = []
    dbs: list[tuple[str, FreshDatabase]] = []
    prod_bases: dict[str, str] = {}

    def on_term(signum, frame):
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        if not args.no_default:
            svc, base, _ = start_services("tollgate", config, tmp, admin_key)
            children.append(svc)
            key = create_key(base, admin_key, "bench-default")
            targets.append(f"tollgate={base}/v1")
            options += ["--key", f"tollgate={key}", "--pid", f"tollgate={svc.pid}"]
            peek.append(base)
            log(f"tollgate (single process, in-process bridge) on {base}, pid {svc.pid}")
        for spec in args.variant:
            name, _, tree = spec.partition("=")
            if not name or not os.path.isdir(os.path.join(tree, "services")):
                sys.exit(f"--variant {spec!r}: expected NAME=DIR with DIR a Tollgate source tree")
            svc, base, _ = start_services(name, config, tmp, admin_key, tree=os.path.abspath(tree))
            children.append(svc)
            key = create_key(base, admin_key, f"bench-{name}")
            targets.append(f"{name}={base}/v1")
            options += ["--key", f"{name}={key}", "--pid", f"{name}={svc.pid}"]
            peek.append(base)
            log(f"{name} (single process, from {tree}) on {base}, pid {svc.pid}")
        prod = ([("tollgate-prod", 1, "")] if args.production else []) + \
            [(f"tollgate-prod-{n}w", n, "") for n in args.workers]
        for spec in args.production_variant:
            name, _, tree = spec.partition("=")
            if not name or not os.path.isdir(os.path.join(tree, "services")):
                sys.exit(f"--production-variant {spec!r}: expected NAME=DIR with DIR a Tollgate source tree")
            prod.append((name, 1, os.path.abspath(tree)))
        urls = services_up() if prod else {}
        for name, n, tree in prod:
            db = FreshDatabase(urls["DATABASE_URL"])
            dbs.append((name, db))
            svc, base, _ = start_services(name, config, tmp, admin_key, tree=tree, args=("--workers", str(n)),
                                          REDIS_URL=urls["REDIS_URL"], DATABASE_URL=db.url)
            children.append(svc)
            key = create_key(base, admin_key, f"bench-{name}")
            targets.append(f"{name}={base}/v1")
            options += ["--key", f"{name}={key}", "--pid", f"{name}={svc.pid}"]
            peek.append(base)
            prod_bases[name] = base
            log(f"{name} (Redis {urls['REDIS_URL']}, PostgreSQL database {db.name}, {n} worker(s)) on {base}, pid {svc.pid}")
        if not args.no_bridge:
            core, core_base, grpc_target = start_services("tollgate-core", config, tmp, admin_key)
            children.append(core)
            bridge = Child("tollgate-bridge", [sys.executable, "-m", "gateway_http"],
                           child_env(config, os.path.join(tmp, "bridge-data"), admin_key, TOLLGATE_BRIDGE_TARGET=grpc_target),
                           tmp)
            children.append(bridge)
            m = bridge.wait_for(BRIDGE_UP, 60)
            base = f"http://{m.group(1)}:{m.group(2)}"
            key = create_key(base, admin_key, "bench-bridge")
            targets.append(f"tollgate-bridge={base}/v1")
            options += ["--key", f"tollgate-bridge={key}", "--pid", f"tollgate-bridge={core.pid},{bridge.pid}"]
            peek.append(core_base)
            log(f"tollgate-bridge (python -m gateway_http -> gRPC {grpc_target}) on {base}, pids {core.pid},{bridge.pid}")
        if args.hold:
            log(f"holding {args.hold:.0f}s before compare (pids: {', '.join(str(c.pid) for c in children)})")
            time.sleep(args.hold)
        argv = [sys.executable, args.compare, "--peer", "direct-proxy"]
        if not args.no_litellm:
            argv += ["--peer", "litellm"]
        argv += targets + options + ["--repeats", str(args.repeats), "--upstream-port", str(args.upstream_port), "--out", out] + extra
        log("running: " + " ".join(a if " " not in a else repr(a) for a in argv))
        rc = subprocess.run(argv).returncode
        for base in peek:
            log(f"metered by {base}: {metered(base, admin_key)}")
        served = {name: metered_total(base, admin_key) for name, base in prod_bases.items()}
        for c in reversed(children):  # stopped first: each flushes its ledger on the way out
            c.stop()
        for name, db in dbs:
            rows, final = db.rows(), db.rows("status NOT IN ('in_flight', 'interrupted')")
            # With N workers /metrics is one worker's (whichever took the connection): not all requests.
            what = (f"requests metered: {served[name]} -> {'EQUAL' if served[name] == rows else 'DIFFERENT'}"
                    if not name.endswith("w") else "one worker's /metrics does not count all requests")
            log(f"{name}: {rows} ledger rows in PostgreSQL ({final} final), {db.commits()} transactions committed; {what}")
        if rc != 0:
            sys.exit(f"compare.py failed (rc {rc}); gateway logs in {tmp}")
        log(f"raw rows in {out}; gateway logs in {tmp}")
    finally:
        for c in reversed(children):
            c.stop()
        for _, db in dbs:
            db.close()


if __name__ == "__main__":
    main()
