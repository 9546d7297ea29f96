"""Where G2's memory goes: what a gateway process keeps between quiet moments of the soak's steady load.

  python -m tests.soak.heap [minutes] [rps] [collect] [notrace] [nocollector]
                                        (default 4 minutes at 20 rps, D4's faults at 5 %)

Starts the fake OpenAI upstream and one gateway process (`python -m tests.soak.heap probe`: `python
-m services` that answers SIGUSR1) on PostgreSQL (a schema of its own) and Redis like the soak's,
and runs tests/soak/load.py's steady load in a warm-up and PHASES equal phases. After each, once
the load has been quiet for QUIET_S seconds (every request answered, every row written), the
gateway turns tracemalloc on (after the warm-up) or dumps a snapshot and its live objects by type.
What one quiet moment holds more than the one before is what the requests between them left
behind: the report prints it by file, by allocation site and by type, with RSS at each moment.
With `collect`, each snapshot is followed by a full gc.collect() and what it freed is printed
(cyclic garbage, not a leak: a leak survives it). `notrace` leaves tracemalloc off (RSS and
live objects only); `nocollector` runs the gateway without tollgate.heap.FullCollections (the
A/B's other side: run both at once, so both see the same machine).
Tracing runs only after the warm-up, and no snapshot is taken under load (a snapshot stops the
event loop for seconds on a busy machine, and the backlog it makes would look like a leak).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path

FRAMES = 8
PHASES = 3  # load phases after the warm-up, a snapshot at the quiet moment after each
QUIET_S = 12.0


# ----------------------------------------------------------------------------- inside the gateway

def _snapshot(directory: Path, n: int) -> None:
    """SIGUSR1: the first turns tracemalloc on, each later one dumps a snapshot and live objects by type."""
    if os.environ.get("SOAK_HEAP_TRACE") == "0":
        pass
    elif not tracemalloc.is_tracing():
        tracemalloc.start(FRAMES)
    else:
        snap = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
        snap.dump(str(directory / f".snap-{n:03d}"))
        os.replace(directory / f".snap-{n:03d}", directory / f"snap-{n:03d}")
        # With `collect`: what a full collection frees now (cycles the raised thresholds leave for later,
        # clients/tollgate/heap.py). It changes what the next snapshot holds: without it, the snapshots show
        # the process as it runs.
        held, t0 = tracemalloc.get_traced_memory()[0], time.perf_counter()
        found = gc.collect() if os.environ.get("SOAK_HEAP_COLLECT") == "1" else 0
        took = time.perf_counter() - t0
        (directory / f"collect-{n:03d}").write_text(f"{found} {held} {tracemalloc.get_traced_memory()[0]} {took}")
    # A type whose live count climbs from one quiet moment to the next is a leak, even when its bytes are small.
    types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
    (directory / f".types-{n:03d}.json").write_text(json.dumps(types))
    os.replace(directory / f".types-{n:03d}.json", directory / f"types-{n:03d}.json")


def probe() -> None:
    import services.__main__ as entry
    from tests.soak.probe import _die_with_parent, _report

    _die_with_parent()
    serve = entry.serve
    if os.environ.get("SOAK_HEAP_COLLECTOR") == "0":  # the A/B's "before": no timed full collections
        class NoCollections:
            def stop(self) -> None:
                pass

        entry.FullCollections = NoCollections

    async def serve_with_heap(*args, **kwargs):
        directory, count = Path(os.environ["SOAK_HEAP_DIR"]), [0]

        def on_signal() -> None:
            _snapshot(directory, count[0])
            count[0] += 1

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_signal)
        task = asyncio.create_task(_report(os.environ["SOAK_PROBE"]))
        try:
            return await serve(*args, **kwargs)
        finally:
            task.cancel()

    entry.serve = serve_with_heap
    entry.main()


# ----------------------------------------------------------------------------- the driver

def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def drive(minutes: float, rps: float, flags: set[str]) -> None:
    from tests.reliability.replicas import replica_env
    from tests.soak import load
    from tests.soak.driver import FAULT_SHARE, _config, _new_key
    from tests.support.fakes.openai import run_fake_openai
    from tests.support.postgres import DEFAULT_URL, _connect, _with_schema
    from tests.support.procs import REPO, free_port, run_module, wait_http_ok

    db_base = os.environ.get("DATABASE_URL") or DEFAULT_URL
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    schema = f"tg_heap_{uuid.uuid4().hex[:12]}"
    admin = _connect(db_base)
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    try:
        with tempfile.TemporaryDirectory(prefix="tollgate-heap-") as tmp:
            work, snaps = Path(tmp) / "gw", Path(tmp) / "snaps"
            work.mkdir()
            snaps.mkdir()
            async with run_fake_openai() as fake:
                http_port, grpc_port = free_port(), free_port()
                env = replica_env(work, _config(Path(tmp) / "heap.toml", fake.base_url), work / "data", http_port,
                                  grpc_port, PYTHONPATH=str(REPO), SOAK_PROBE=str(work / "tasks"),
                                  SOAK_HEAP_DIR=str(snaps), SOAK_HEAP_COLLECT="1" if "collect" in flags else "0",
                                  SOAK_HEAP_TRACE="0" if "notrace" in flags else "1",
                                  SOAK_HEAP_COLLECTOR="0" if "nocollector" in flags else "1",
                                  DATABASE_URL=_with_schema(db_base, schema), REDIS_URL=redis_url,
                                  TOLLGATE_REQUEST_TIMEOUT_S="4")
                url = f"http://127.0.0.1:{http_port}"
                async with run_module("tests.soak.heap", "probe", env=env, cwd=work, name="heap") as proc:
                    await wait_http_ok(url + "/health/ready", proc, timeout=180.0)
                    auth = await _new_key(url)
                    n = 0

                    async def quiet_snapshot(label: str) -> None:
                        nonlocal n
                        await asyncio.sleep(QUIET_S)  # every request answered, every row written
                        proc.signal(signal.SIGUSR1)
                        want = snaps / f"types-{n:03d}.json"
                        while not want.exists():
                            await asyncio.sleep(0.2)
                        print(f"snapshot {n} ({label}): RSS {_rss_mib(proc.pid):.1f} MiB", flush=True)
                        n += 1

                    requests = 0
                    for phase in range(PHASES + 1):  # phase 0 is the warm-up
                        tally = load.Tally()
                        await load.steady(url, auth, rps, minutes * 60 / (PHASES + 1), FAULT_SHARE, seed=phase, tally=tally)
                        print(f"phase {phase}: {len(tally.results)} requests; unearned "
                              f"{dict(tally.errors_by_kind().most_common(6)) or 0}", flush=True)
                        requests += len(tally.results) if phase >= 2 else 0  # between the first snapshot and the last
                        await quiet_snapshot("after the warm-up, tracing on" if phase == 0 else f"after phase {phase}")
            if "notrace" not in flags:
                report(sorted(snaps.glob("snap-*")), requests)
            type_report(sorted(snaps.glob("types-*.json")))
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def report(paths: list[Path], requests: int, top: int = 12) -> None:
    for p in paths:
        found, before, after, took = (float(x) for x in (p.parent / p.name.replace("snap", "collect")).read_text().split())
        print(f"{p.name}: traced {before / 2**20:.2f} MiB; a full gc.collect() then frees {found:.0f} objects, "
              f"{(before - after) / 2**10:.0f} KiB, in {took * 1000:.1f} ms (tracemalloc on)")
    snaps = [tracemalloc.Snapshot.load(str(p)) for p in paths]
    print("traced MiB at each quiet moment after the first: " +
          ", ".join(f"{sum(s.size for s in snap.statistics('filename')) / 2**20:.2f}" for snap in snaps))
    if len(snaps) < 2:
        print("too few snapshots to compare")
        return
    first, last = snaps[0], snaps[-1]
    print(f"\ngrowth by file, snapshot 1 -> {len(snaps)}:")
    for st in last.compare_to(first, "filename")[:top]:
        print(f"  {st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks  {st.traceback[0].filename}")
    print(f"\ngrowth by allocation site ({requests} requests in all):")
    for st in last.compare_to(first, "traceback")[:top]:
        if st.size_diff <= 0:
            break
        print(f"\n  {st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks")
        for fr in list(st.traceback)[-FRAMES:]:
            print(f"      {fr.filename}:{fr.lineno}")


def type_report(paths: list[Path], top: int = 15) -> None:
    counts = [Counter(json.loads(p.read_text())) for p in paths]
    if len(counts) < 3:
        return
    first, last = counts[1], counts[-1]
    grew = sorted(((last[t] - first[t], t) for t in last), reverse=True)[:top]
    print(f"\nlive objects by type, snapshot 1 -> {len(counts) - 1} (each snapshot's count):")
    for d, t in grew:
        if d <= 0:
            break
        print(f"  {d:+7d}  {t}: " + " ".join(str(c[t]) for c in counts))


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe"]:
        sys.argv = [sys.argv[0]]
        probe()
    else:
        flags = {a for a in sys.argv[1:] if not a[0].isdigit()}
        args = [a for a in sys.argv[1:] if a[0].isdigit()]
        asyncio.run(drive(float(args[0]) if args else 4.0, float(args[1]) if len(args) > 1 else 20.0, flags))
