"""RELIABILITY A9: Failover Bench S01–S16 against a gateway process, scored as the bench scores them.

The gateway gets one primary provider per scenario (its own key and breaker, so scenarios run
side by side without one's open circuit changing another's) on the wall's /primary route, and
one fallback provider for every scenario on /fallback; strategy `priority`; A5's timeouts
(per try 10 s, first token 8 s, stream idle 15 s). Every call is a streamed chat with
include_usage read as raw SSE. Verdicts follow the catalogue: pass (rescued, checks clean),
partial (an advisory check failed), safe (not rescued, but a bounded clean error and every
required check clean), fail.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from tests.support.fakes.wall import CANONICAL, FALLBACK_MODEL, Wall

SCENARIOS = ("S01", "S02", "S03", "S04", "S05", "S06", "S07", "S08", "S09", "S10", "S11", "S12", "S13", "S14", "S15", "S16")
MODELS = {s: f"fb-{s.lower()}" for s in SCENARIOS}
EXPECTED_SAFE = {"S08", "S09", "S14"}  # A9: no failover after a token has reached the caller
PROMPT = "Explain in exactly sixty words why a gateway earns trust only when the provider behind it misbehaves."


def providers_toml(wall_url: str, timeout_s: float = 10.0) -> list[str]:
    lines: list[str] = []
    for s in SCENARIOS:
        lines += ["", "[[providers]]", f'name = "primary-{s.lower()}"', 'kind = "openai"',
                  f'base_url = "{wall_url}/primary/v1"', f'api_key = "sk-wall-{s.lower()}"',
                  f'models = ["{MODELS[s]}"]', "priority = 0", f"timeout_s = {timeout_s}"]
    lines += ["", "[[providers]]", 'name = "fallback"', 'kind = "openai"', f'base_url = "{wall_url}/fallback/v1"',
              'api_key = "sk-wall-fallback"', "models = [" + ", ".join(f'"{m}"' for m in (*MODELS.values(), FALLBACK_MODEL)) + "]",
              "priority = 10", f"timeout_s = {timeout_s}"]
    return lines


@dataclass
class Call:
    status: int = 0
    text: str = ""
    done: bool = False  # `data: [DONE]` arrived
    finish: str = ""
    error: str = ""  # an in-band error event, or the error body
    model: str = ""
    usage: bool = False
    wall_s: float = 0.0
    hung: bool = False

    @property
    def success(self) -> bool:
        return self.status == 200 and not self.error and self.text == CANONICAL

    @property
    def truncated_success(self) -> bool:
        """A 'successful' answer that is not the whole answer: the bench's worst outcome."""
        return self.status == 200 and not self.error and (self.done or self.finish == "stop") and self.text != CANONICAL


async def call(http: aiohttp.ClientSession, url: str, key: str, model: str, max_wall_s: float) -> Call:
    c = Call()
    t0 = time.monotonic()
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": PROMPT}]}
    try:
        async with asyncio.timeout(max_wall_s):
            async with http.post(url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer " + key}) as r:
                c.status = r.status
                if r.status != 200:
                    c.error = (await r.text())[:200]
                else:
                    async for line in r.content:
                        if not line.startswith(b"data: "):
                            continue
                        data = line[6:].strip()
                        if data == b"[DONE]":
                            c.done = True
                            continue
                        ev = orjson.loads(data)
                        if "error" in ev:
                            c.error = str(ev["error"].get("message", ""))[:200]
                            continue
                        c.model = ev.get("model", c.model)
                        if ev.get("usage"):
                            c.usage = True
                        for ch in ev.get("choices") or ():
                            c.text += (ch.get("delta") or {}).get("content") or ""
                            c.finish = ch.get("finish_reason") or c.finish
    except TimeoutError:
        c.hung = True
    except aiohttp.ClientError as e:
        c.error = f"{type(e).__name__}"
    c.wall_s = time.monotonic() - t0
    return c


@dataclass
class Verdict:
    scenario: str
    verdict: str
    failed: list[str] = field(default_factory=list)  # required checks that failed
    advisory: list[str] = field(default_factory=list)  # advisory checks that failed
    note: str = ""


def _score(s: str, c: Call, wall: Wall, alive: bool, row: dict | None = None) -> Verdict:
    m = MODELS[s]
    prim = [a.t for a in wall.of(m, "primary")]
    fb = wall.of(m, "fallback")
    req: list[tuple[str, bool]] = [("no_hang", not c.hung)]
    adv: list[tuple[str, bool]] = []
    ideal_error = s == "S13"
    if s == "S01":
        adv += [("retried", len(prim) >= 2), ("retry_after_honoured", len(prim) >= 2 and prim[1] - prim[0] >= 1.8)]
        req += [("no_hammer", sum(1 for t in prim if t - prim[0] <= 1.5) <= 2)]
    elif s == "S02":
        req += [("no_hammer", sum(1 for t in prim if t - prim[0] <= 3) <= 4), ("bounded_attempts", len(prim) <= 6)]
    elif s == "S03":
        adv += [("same_provider_retry", len(prim) >= 2)]
    elif s in ("S04", "S16"):
        req += [("bounded_attempts", len(prim) <= 6)]
        if s == "S16":
            # Tollgate routes one model name to several providers, so "who answered" is the ledger row's
            # provider (D3), billed once for the fallback's tokens; failed tries unbilled.
            req += [("reports_fallback", bool(row) and row["provider"] == "fallback" and row["completion_tokens"] == 60)]
            adv += [("usage_present", c.usage)]
    elif s == "S06":
        req += [("within_budget", c.wall_s <= 100)]
        adv += [("silent_route_not_retried", len(prim) <= 1)]
    elif s == "S07":
        adv += [("ttft_limit", c.wall_s <= 15)]
    elif s in ("S08", "S14"):
        req += [("no_truncated_success", not c.truncated_success)]
        if s == "S14":
            req += [("no_prefill_masking", not (not c.success and wall.prefill_rejected(m)))]
    elif s == "S09":
        req += [("bounded", c.wall_s <= 45), ("no_truncated_success", not c.truncated_success), ("alive_after", alive)]
    elif s == "S10":
        req += [("alive_after", alive), ("no_garbage", not c.truncated_success)]
        adv += [("recovered_in_place", c.success)]
    elif s == "S11":
        req += [("prompt_finalise", c.wall_s <= 8)]
        adv += [("usage_reported", c.usage)]
    elif s in ("S12", "S13"):
        req += [("no_same_model_retry", len(prim) == 1)]
    failed = [n for n, ok in req if not ok]
    advisory = [n for n, ok in adv if not ok]
    rescued = (c.status != 200 or bool(c.error)) and not c.hung if ideal_error else c.success
    if failed:
        v = "fail"
    elif rescued:
        v = "partial" if advisory else "pass"
    elif not c.hung and not c.truncated_success:
        v = "safe"
    else:
        v = "fail"
    note = f"{c.status} {c.wall_s:.1f}s primary×{len(prim)} fallback×{len(fb)}" + (f" err={c.error[:60]!r}" if c.error else "")
    return Verdict(s, v, failed, advisory, note)


async def _flap(http, url: str, key: str, wall: Wall, down_s: float, count: int, interval_s: float,
                per_request_s: float, recover_within_s: float) -> Verdict:
    """S15: the primary answers 503 for `down_s` after the start, then is healthy; `count` calls every `interval_s`."""
    m = MODELS["S15"]
    t0 = time.monotonic()
    wall.flap_until[m] = t0 + down_s
    calls: list[tuple[float, Call, int]] = []  # (start offset, call, primary successes before it)
    for i in range(count):
        await asyncio.sleep(max(0.0, t0 + i * interval_s - time.monotonic()))
        start = time.monotonic() - t0
        calls.append((start, await call(http, url, key, m, per_request_s), len(wall.of(m, "primary"))))
    hung = any(c.hung for _, c, _ in calls)
    during = [c for st, c, _ in calls if st < down_s]
    served = all(c.success for c in during)
    # recovered: some call after the heal was answered by the primary (the fallback names itself fb-ok)
    healed = [(st, c) for st, c, _ in calls if st >= down_s and c.success and c.model == m]
    recovered = bool(healed) and healed[0][0] - down_s <= recover_within_s
    failed = [n for n, ok in (("no_hang", not hung), ("served_during_outage", served), ("recovered", recovered)) if not ok]
    probes = len([a for a in wall.of(m, "primary") if a.t - t0 < down_s])
    ok_all = all(c.success for _, c, _ in calls)
    v = "fail" if failed else ("pass" if ok_all else "safe")
    first_back = f"{healed[0][0] - down_s:.1f}s" if healed else "never"
    return Verdict("S15", v, failed, [], f"{count} calls, primary back {first_back} after heal, {probes} primary tries while down")


async def run_bench(url: str, key: str, admin_key: str, wall: Wall, *, flap_down_s: float = 60.0, flap_count: int = 20,
                    flap_interval_s: float = 4.0, recover_within_s: float = 30.0) -> list[Verdict]:
    """All sixteen side by side (S15's sequence included); each scenario's verdict."""
    max_wall = {"S06": 130.0, "S07": 60.0, "S09": 70.0, "S02": 40.0, "S04": 40.0, "S08": 40.0, "S14": 40.0, "S16": 40.0}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        async def one(s: str) -> Verdict:
            if s == "S15":
                return await _flap(http, url, key, wall, flap_down_s, flap_count, flap_interval_s, 30.0, recover_within_s)
            c = await call(http, url, key, MODELS[s], max_wall.get(s, 30.0 if s in ("S10", "S11") else 20.0))
            alive = (await call(http, url, key, FALLBACK_MODEL, 20.0)).success
            row = None
            if s == "S16":
                await asyncio.sleep(0.5)  # the ledger flushes every 0.1 s
                async with http.get(url + "/api/admin/usage", params={"model": MODELS[s]},
                                    headers={"X-Admin-Key": admin_key}) as r:
                    rows = (await r.json()).get("data") or []
                    row = rows[0] if rows else None
            return _score(s, c, wall, alive, row)

        # The gateway's retry budget (retries in flight <= 20 %, floor 3) is shared by every request, as
        # in production: sixteen failing scenarios at once would starve each other's failover. The bench
        # runs them one at a time; the three that only wait on timeouts share one slot of time here.
        slow = ("S06", "S07", "S09")
        out = {v.scenario: v for v in await asyncio.gather(*(one(s) for s in slow))}
        for s in SCENARIOS:
            if s not in out:
                out[s] = await one(s)
        return [out[s] for s in SCENARIOS]


# Why a scenario ends `safe` where the bench's ideal is a rescue (printed beside the A9 figure).
SHORT_OF_PASS = {
    "S12": "setup: the fallback serves the same model name, so A4 rightly refuses a same-window retry; the bench's "
           "fallback is a larger model, which Tollgate's routing cannot name",
}
