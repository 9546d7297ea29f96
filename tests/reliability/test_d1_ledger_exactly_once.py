"""RELIABILITY D1 (scaled for make test: 300 streams; the full 1,000 is bench/soak_ledger.py).

Concurrent streams, a third of them dropped by the client mid-answer → exactly one ledger row
per request; completed rows carry the upstream's own usage; aborted rows are `estimated`, cost
more than 0 and count between the tokens the client had read and the tokens the upstream sent;
and the key's token counter equals the ledger's sum.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import orjson

from services.config.defaults import DEFAULT_TIERS
from services.config.schema import TierConfig
from services.store.records import UsageFilter
from tests.reliability.scripted import Seen, ok, run_scripted, stall
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body

N = 300
COMPLETE_TOKENS = 12  # a finished answer; the upstream reports prompt 7 + 12
SENT_BEFORE_STALL = 10  # an aborted answer: the upstream sends 10 tokens, then goes quiet
READ_BEFORE_ABORT = 3  # ... and the client hangs up after reading 3
TIERS = DEFAULT_TIERS + (TierConfig("d1", tpd=10_000_000),)


def answer(s: Seen):
    # Both models are priced in the catalogue, so every billable row has a cost.
    return stall(SENT_BEFORE_STALL, tokens=40) if s.model == "gpt-4o" else ok(COMPLETE_TOKENS)


def content_of(line: bytes) -> int:
    if not line.startswith(b"data: {"):
        return 0
    obj = orjson.loads(line[6:])
    return sum(1 for c in obj.get("choices") or () if (c.get("delta") or {}).get("content"))


async def one_stream(s: aiohttp.ClientSession, url: str, key: str, abort: bool) -> tuple[str, int]:
    """(request id, content chunks the client read)."""
    body = chat_body("gpt-4o" if abort else "gpt-4o-mini", stream=True)
    resp = await s.post(url + CHAT, json=body, headers=bearer(key))
    assert resp.status == 200, await resp.text()
    rid, read = resp.headers["X-Request-Id"], 0
    try:
        while True:
            line = await asyncio.wait_for(resp.content.readline(), 30)
            if not line:
                break
            read += content_of(line)
            if abort and read >= READ_BEFORE_ABORT:
                resp.close()  # hang up mid-answer
                break
    finally:
        resp.release()
    return rid, read


async def rows_settled(gw, n: int, timeout: float = 10.0) -> list:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        rows = [r for r in await gw.ledger() if r.status != "in_flight"]
        if len(rows) >= n and gw.app.pipeline.active == 0 or loop.time() > end:
            return await gw.ledger()
        await asyncio.sleep(0.05)


async def test_concurrent_streams_a_third_aborted_one_row_each(tmp_path):
    async with run_scripted() as up:
        up.answer = answer
        cfg = config(tmp_path, providers=(provider("primary", up.base_url),), tiers=TIERS)
        async with run_gateway(cfg) as gw:
            key = await gw.new_key("d1")
            aborted = {i for i in range(N) if i % 3 == 0}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
                got = await asyncio.gather(*(one_stream(s, gw.url, key, i in aborted) for i in range(N)))
            read = dict(got)
            assert len(read) == N  # distinct request ids

            rows = await rows_settled(gw, N)
            assert len(rows) == N and {r.request_id for r in rows} == set(read)
            by_id = {r.request_id: r for r in rows}
            statuses = Counter(r.status for r in rows)
            assert statuses == {"ok": N - len(aborted), "client_cancelled": len(aborted)}, statuses

            for rid, r in by_id.items():
                if r.status == "ok":
                    assert (r.prompt_tokens, r.completion_tokens, r.estimated) == (7, COMPLETE_TOKENS, False)
                    assert read[rid] == COMPLETE_TOKENS
                else:
                    assert r.estimated and r.cost_usd > 0
                    assert read[rid] >= READ_BEFORE_ABORT
                    assert read[rid] <= r.completion_tokens <= SENT_BEFORE_STALL, (read[rid], r.completion_tokens)
                    assert r.model == "gpt-4o" and r.provider == "primary"
            assert all(r.cost_usd > 0 for r in rows)
            print(f"D1: {N} streams, {len(aborted)} aborted; rows {dict(statuses)}; aborted completion tokens "
                  f"{sorted(Counter(r.completion_tokens for r in rows if r.status != 'ok').items())}")

            # Quotas = ledger: the day's counter holds exactly what the rows say.
            key_id = rows[0].key_id
            totals = await gw.app.store.usage_totals(UsageFilter(key_id=key_id))
            d = await gw.app.limiter.peek("ak:" + key_id, gw.app.quotas.token_rules("d1"))
            assert d.used == totals["prompt_tokens"] + totals["completion_tokens"]
            assert gw.app.pipeline.active == 0
