#!/usr/bin/env python3
"""RELIABILITY D1 at full size (a bounded soak, not a test): exactly one ledger row per request.

Runs a whole gateway (App + gRPC server + HTTP bridge, as tests/support/gateway.py does) against
a scripted OpenAI-shaped upstream, both on 127.0.0.1, and fires `--streams` concurrent streamed
chats per wave, a third of them dropped by the client after 3 tokens while the upstream holds the
answer open. After each wave it checks, and prints:

  - exactly one row per request (by X-Request-Id), none `in_flight` once the wave has ended;
  - completed rows carry the upstream's usage (7 + 12), not estimated;
  - aborted rows are `estimated`, cost > 0, completion tokens between what the client read and
    what the upstream sent;
  - the key's token counter equals the ledger's sum (quotas = ledger);
  - no request left in the pipeline.

  .venv/bin/python bench/soak_ledger.py                          # 1,000 streams, 1 wave, SQLite
  .venv/bin/python bench/soak_ledger.py --waves 5 --redis-url redis://127.0.0.1:6379/0 \\
      --database-url postgresql://postgres@127.0.0.1:5432/test

Exits 0 when every check held, 1 otherwise. Bounded by --waves and --timeout (per wave).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from services.config.defaults import DEFAULT_TIERS  # noqa: E402
from services.config.schema import TierConfig  # noqa: E402
from services.store.records import UsageFilter  # noqa: E402
from tests.reliability.scripted import Seen, ok, run_scripted, stall  # noqa: E402
from tests.support.gateway import config, provider, run_gateway  # noqa: E402

COMPLETE, SENT, READ = 12, 10, 3
CHAT = "/v1/chat/completions"


def answer(s: Seen):
    return stall(SENT, tokens=40) if s.model == "gpt-4o" else ok(COMPLETE)


async def one(s: aiohttp.ClientSession, url: str, key: str, abort: bool, timeout: float) -> tuple[str, int]:
    body = {"model": "gpt-4o" if abort else "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    resp = await s.post(url + CHAT, json=body, headers={"Authorization": "Bearer " + key})
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
    rid, read = resp.headers["X-Request-Id"], 0
    try:
        while line := await asyncio.wait_for(resp.content.readline(), timeout):
            if line.startswith(b"data: {"):
                read += sum(1 for c in orjson.loads(line[6:]).get("choices") or () if (c.get("delta") or {}).get("content"))
            if abort and read >= READ:
                resp.close()
                break
    finally:
        resp.release()
    return rid, read


class LoopLag:
    """The event loop's worst lateness (a 10 ms ticker), and whether the limiter left Redis."""

    def __init__(self, gw) -> None:
        self.gw, self.worst, self.limiter_down = gw, 0.0, False
        self._task: asyncio.Task | None = None

    async def _tick(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - t - 0.01)
            if not getattr(self.gw.app.limiter, "backend_up", True):
                self.limiter_down = True

    def __enter__(self) -> "LoopLag":
        self._task = asyncio.ensure_future(self._tick())
        return self

    def __exit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()


async def wave(gw, key: str, n: int, timeout: float) -> list[str]:
    """Returns the problems found (empty: all checks held)."""
    problems: list[str] = []
    aborted = {i for i in range(n) if i % 3 == 0}
    before = {r.request_id for r in await gw.ledger()}
    t0 = time.monotonic()
    with LoopLag(gw) as lag:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            got = await asyncio.gather(*(one(s, gw.url, key, i in aborted, timeout) for i in range(n)),
                                       return_exceptions=True)
    errors = [g for g in got if isinstance(g, BaseException)]
    read = dict(g for g in got if not isinstance(g, BaseException))
    took = time.monotonic() - t0
    end = time.monotonic() + timeout
    while True:
        rows = [r for r in await gw.ledger() if r.request_id not in before]
        if (len(rows) >= n and gw.app.pipeline.active == 0 and not any(r.status == "in_flight" for r in rows)) \
                or time.monotonic() > end:
            break
        await asyncio.sleep(0.1)
    statuses = Counter(r.status for r in rows)
    ids = [r.request_id for r in rows]
    print(f"  {n} streams ({len(aborted)} aborted) in {took:.1f} s; client errors {len(errors)}; rows {len(rows)} "
          f"{dict(statuses)}; worst event-loop lag {lag.worst * 1000:.0f} ms", flush=True)
    if lag.limiter_down:
        problems.append("the limiter fell back to per-gateway counters during the wave (a Redis call outlived "
                        "FailoverLimiter's 0.25 s timeout: loop lag, not a dead Redis); shared counters then miss usage")
    if errors:
        problems.append(f"{len(errors)} client errors, first: {errors[0]!r}")
    if len(rows) != n or len(set(ids)) != len(ids):
        problems.append(f"rows: {len(rows)} for {n} requests ({len(set(ids))} distinct)")
    if set(read) - set(ids):
        problems.append(f"{len(set(read) - set(ids))} requests without a row")
    for r in rows:
        if r.status == "ok":
            if (r.prompt_tokens, r.completion_tokens, r.estimated) != (7, COMPLETE, False):
                problems.append(f"completed row {r.request_id}: {r.prompt_tokens}+{r.completion_tokens} est={r.estimated}")
        elif r.status == "client_cancelled":
            got_read = read.get(r.request_id, READ)
            if not (r.estimated and r.cost_usd > 0 and got_read <= r.completion_tokens <= SENT):
                problems.append(f"aborted row {r.request_id}: {r.completion_tokens} tokens (client read {got_read}, "
                                f"upstream sent {SENT}) est={r.estimated} cost={r.cost_usd}")
        else:
            problems.append(f"row {r.request_id}: status {r.status}")
    est = Counter(r.completion_tokens for r in rows if r.status == "client_cancelled")
    print(f"  aborted rows' completion tokens: {dict(sorted(est.items()))}", flush=True)
    return problems[:20]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--waves", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per wave before it counts as hung")
    ap.add_argument("--database-url", default="", help="PostgreSQL URL (default: SQLite in a temp dir)")
    ap.add_argument("--redis-url", default="", help="Redis URL (default: the in-process limiter)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8 * args.streams + 1024)), hard))

    tiers = DEFAULT_TIERS + (TierConfig("soak", tpd=1_000_000_000),)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tollgate-soak-") as tmp:
        async with run_scripted() as up:
            up.answer = answer
            cfg = config(Path(tmp), providers=(provider("primary", up.base_url),), tiers=tiers,
                         database_url=args.database_url, redis_url=args.redis_url)
            cfg = dataclasses.replace(cfg, ledger_flush_s=0.2)
            async with run_gateway(cfg) as gw:
                key = await gw.new_key("soak")
                print(f"soak_ledger: {args.waves} wave(s) of {args.streams} streams; store "
                      f"{gw.app.store.dialect}, limiter {'redis' if args.redis_url else 'memory'}; pid {os.getpid()}",
                      flush=True)
                for i in range(args.waves):
                    print(f"wave {i + 1}:", flush=True)
                    problems += await wave(gw, key, args.streams, args.timeout)
                rows = await gw.ledger()
                key_id = rows[0].key_id
                totals = await gw.app.store.usage_totals(UsageFilter(key_id=key_id))
                spent = totals["prompt_tokens"] + totals["completion_tokens"]
                d = await gw.app.limiter.peek("ak:" + key_id, gw.app.quotas.token_rules("soak"))
                print(f"quotas = ledger: counter {d.used}, ledger {spent}; rows {len(rows)}; "
                      f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB", flush=True)
                if d.used != spent:
                    problems.append(f"token counter {d.used} != ledger sum {spent}")
                if gw.app.pipeline.active:
                    problems.append(f"{gw.app.pipeline.active} requests still in the pipeline")
    for p in problems:
        print("FAIL:", p)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
