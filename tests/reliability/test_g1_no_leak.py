"""RELIABILITY G1: 2,000 mixed requests with 5 % faults leave nothing behind.

Chat (streamed and not), embeddings, Anthropic messages, model lists, and the errors callers
make (malformed JSON, a bad key, an unknown model), plus 5 % upstream faults from the fake's
fault models (503, reset before headers, garbage, a stream cut after two tokens, a 400), at 16
in flight. The faulty models have their own provider key, with a 0.2 s breaker cool-down so the
faults keep reaching the upstream instead of stopping at an open circuit. Within 2 s of the
last answer (the load's client closed): asyncio tasks are back at the baseline, open fds at the
baseline give or take a few, no upstream connection is checked out and the pools hold no more
than their size; every routed request has exactly one ledger row, and no answer was a 5xx the
request did not earn.

Baselines are taken after a warm-up at the same concurrency, so pools and lazily built state
exist on both sides of the comparison; each kept-alive upstream connection counts twice in this
process's fds and once in its tasks (the fake is in-process too).
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections import Counter

import aiohttp

from services.store.records import UsageFilter
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway
from tests.support.leaks import open_fds, pools, settle, tasks
from tests.support.sse_read import bearer

TOTAL = 2000
WARMUP = 200
CONCURRENCY = 16
HI = [{"role": "user", "content": "hi"}]
FAULTS = ("fault-503", "fault-reset", "fault-garbage", "fault-cut-after-2", "fault-400")

# kind: (weight, routed = one ledger row, statuses a caller may get)
KINDS = {
    "chat": (38, True, {200}),
    "stream": (22, True, {200}),
    "embeddings": (10, True, {200}),
    "messages": (5, True, {200}),
    "models": (8, False, {200}),
    "bad-json": (4, False, {400}),
    "bad-key": (4, False, {401}),
    "unknown-model": (4, True, {404}),
    "fault": (5, True, {200, 400, 502, 503}),  # 200: a stream cut after its first tokens (an in-band error)
}


def plan(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    names = list(KINDS)
    weights = [KINDS[k][0] for k in names]
    out = []
    for _ in range(n):
        kind = rng.choices(names, weights)[0]
        out.append((kind, rng.choice(FAULTS) if kind == "fault" else ""))
    return out


async def one(http: aiohttp.ClientSession, url: str, auth: dict, kind: str, fault: str) -> int:
    """One request of `kind`, its body read to the end; the status the caller saw."""
    chat = url + "/v1/chat/completions"
    if kind == "chat":
        req = http.post(chat, json={"model": "tokens-3", "messages": HI}, headers=auth)
    elif kind in ("stream", "fault"):
        stream = kind == "stream" or fault == "fault-cut-after-2"
        req = http.post(chat, headers=auth, json={"model": fault or "tokens-3", "messages": HI, "stream": stream,
                                                  "stream_options": {"include_usage": True}})
    elif kind == "embeddings":
        req = http.post(url + "/v1/embeddings", json={"model": "tokens-3", "input": ["a b", "c"]}, headers=auth)
    elif kind == "messages":
        req = http.post(url + "/v1/messages", json={"model": "tokens-3", "max_tokens": 5, "messages": HI}, headers=auth)
    elif kind == "models":
        req = http.get(url + "/v1/models", headers=auth)
    elif kind == "bad-json":
        req = http.post(chat, data=b'{"model": "tokens-3", "messages": [', headers=auth)
    elif kind == "bad-key":
        req = http.post(chat, json={"model": "tokens-3", "messages": HI}, headers=bearer("tg_nope"))
    else:
        req = http.post(chat, json={"model": "no-such-model", "messages": HI}, headers=auth)
    async with req as r:
        await r.read()
        return r.status


async def run_load(url: str, auth: dict, work: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
    """`work` at CONCURRENCY in flight, on its own client (closed at the end, so its connections go too)."""
    queue = list(enumerate(work))
    results: list[tuple[str, str, int]] = [("", "", 0)] * len(work)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        async def worker():
            while queue:
                i, (kind, fault) = queue.pop()
                results[i] = (kind, fault, await one(http, url, auth, kind, fault))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


async def test_2000_mixed_requests_leave_nothing_behind(tmp_path):
    async with run_fake_openai() as fake:
        cfg = config(tmp_path, breaker_cooldown_s=0.2, providers=(
            provider("primary", fake.base_url, models=("tokens-3",)),
            provider("faulty", fake.base_url, models=FAULTS, keys=("sk-faulty",)),
        ))
        async with run_gateway(cfg) as gw:
            auth = bearer(await gw.new_key(tier="unlimited"))
            await run_load(gw.url, auth, plan(WARMUP, seed=1))
            await gw.app.ledger.flush()
            await asyncio.sleep(0.3)
            gc.collect()
            base_tasks, base_fds, base_pool = tasks(), open_fds(), pools(gw.app)
            base_names = {id(t): t.get_name() for t in asyncio.all_tasks()}
            rows0 = await gw.app.store.count_usage(UsageFilter())
            assert base_pool.in_use == 0

            work = plan(TOTAL, seed=2)
            busiest = 0

            async def watch_pool():  # proves the pool probe reads live state: connections are out mid-load
                nonlocal busiest
                while True:
                    busiest = max(busiest, pools(gw.app).in_use)
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch_pool())
            try:
                results = await run_load(gw.url, auth, work)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            assert busiest > 0

            def idle_growth() -> int:
                return max(0, pools(gw.app).idle - base_pool.idle)

            back = await settle(lambda: tasks() <= base_tasks + idle_growth() and pools(gw.app).in_use == 0, 2.0)
            after_tasks, after_fds, after_pool = tasks(), open_fds(), pools(gw.app)
            new = [t.get_name() + ":" + getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks()
                   if id(t) not in base_names]
            assert back, f"tasks {base_tasks} -> {after_tasks} (new: {new}), pool {base_pool} -> {after_pool}"
            assert after_fds <= base_fds + 2 * idle_growth() + 6, f"fds {base_fds} -> {after_fds}, pool {after_pool}"
            assert after_pool.in_use == 0, after_pool
            # No per-host cap by default (0): the concurrency bounds what the pool keeps idle.
            cap = after_pool.limit_per_host or CONCURRENCY + 4
            assert after_pool.idle <= min(cap, CONCURRENCY + 4), after_pool

            unexpected = [(k, f, s) for k, f, s in results if s not in KINDS[k][2]]
            assert unexpected == [], Counter(unexpected).most_common(5)
            kinds = Counter(k for k, _, _ in results)
            assert kinds["fault"] >= TOTAL * 0.03, kinds  # the 5 % actually happened
            assert fake.counters.keys() & set(FAULTS), "the faults reached the upstream"
            await gw.app.ledger.flush()
            routed = sum(1 for k, _, _ in results if KINDS[k][1])
            rows = await gw.app.store.count_usage(UsageFilter())
            assert rows - rows0 == routed, f"{rows - rows0} ledger rows for {routed} routed requests"
