"""RELIABILITY D2: the client leaves after 0, 1, 5 or 40 chunks of an answer whose upstream sends
no usage → one row each, `estimated`, tokens within ±10 % of the truth.

The truth is what the upstream sent: its prompt_tokens (7 for these fakes, for the prompt "hi")
plus one token per streamed delta (each fake delta is one token, "tok12 " included). The
estimate must be honest about that: a character count would call "tok12 " 1.5 tokens and land
+45 % over at 40 chunks; metering/tokens.py counts a token-sized delta as one token.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from services.core.types import ChatRequest, Message
from services.metering.tokens import estimate_delta, estimate_prompt, estimate_text
from tests.reliability.scripted import run_scripted, stall
from tests.support.fakes.openai import run_fake_openai
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import CHAT, bearer, chat_body

PROMPT_TRUTH = 7  # what both fakes report as prompt_tokens


def content_chunks(line: bytes) -> int:
    if not line.startswith(b"data: {"):
        return 0
    return sum(1 for c in orjson.loads(line[6:]).get("choices") or () if (c.get("delta") or {}).get("content"))


async def leave_after(url: str, key: str, model: str, chunks: int, upstream) -> str:
    """Reads `chunks` content chunks, then drops the connection. With 0 the answer has not begun
    (the gateway sends its head with the first token): the client gives up while waiting for it."""
    async with aiohttp.ClientSession() as s:
        if chunks == 0:
            waiting = asyncio.ensure_future(s.post(url + CHAT, json=chat_body(model, stream=True), headers=bearer(key)))
            while not upstream.calls:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            waiting.cancel()  # drops the connection
            await asyncio.gather(waiting, return_exceptions=True)
            return ""
        resp = await s.post(url + CHAT, json=chat_body(model, stream=True), headers=bearer(key))
        assert resp.status == 200
        read = 0
        while read < chunks:
            line = await asyncio.wait_for(resp.content.readline(), 10)
            assert line, "the stream ended early"
            read += content_chunks(line)
        rid = resp.headers["X-Request-Id"]
        resp.close()
    return rid


async def row_of(gw, rid: str, timeout: float = 5.0):
    """The request's final row ("" when the client never saw its id: the only request's)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        rows = [r for r in await gw.ledger() if rid in ("", r.request_id) and r.status != "in_flight"]
        if rows:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"no final row for {rid}")


def test_the_prompt_estimate_matches_the_fakes_prompt_tokens():
    assert estimate_prompt(ChatRequest("m", [Message("user", "hi")])) == PROMPT_TRUTH


def test_estimates_per_delta():
    assert [estimate_delta(t) for t in ("tok0 ", "tok12 ", " understanding", "", "你好")] == [1, 1, 4, 0, 2]
    prose = "The quick brown fox jumps over the lazy dog near the riverbank today. "  # 70 chars: the 4-char rule
    assert estimate_delta(prose) == estimate_text(prose) == 18


@pytest.mark.parametrize("chunks", [0, 1, 5, 40])
async def test_client_leaves_after_n_chunks_without_usage(tmp_path, chunks):
    # The upstream streams `chunks` tokens and then goes quiet: it never sends usage.
    async with run_scripted(stall(chunks, tokens=chunks + 20)) as up:
        cfg = config(tmp_path, providers=(provider("primary", up.base_url),))
        async with run_gateway(cfg) as gw:
            key = await gw.new_key()
            rid = await leave_after(gw.url, key, "gpt-4o-mini", chunks, up)
            [row] = await row_of(gw, rid)
            assert len(await gw.ledger()) == 1
            assert row.status == "client_cancelled" and row.estimated
            truth = PROMPT_TRUTH + chunks  # the upstream sent exactly `chunks` tokens
            total = row.prompt_tokens + row.completion_tokens
            assert abs(total - truth) <= 0.10 * truth, (row.prompt_tokens, row.completion_tokens, truth)
            assert abs(row.completion_tokens - chunks) <= 0.10 * max(chunks, 1) + 0.5
            assert gw.app.pipeline.active == 0


async def test_a_finished_stream_without_usage_is_estimated_too(tmp_path):
    async with run_fake_openai() as fake:
        cfg = config(tmp_path, providers=(provider("primary", fake.base_url),))
        async with run_gateway(cfg) as gw:
            key = await gw.new_key()
            r = await gw.http.post(CHAT, json=chat_body("fault-no-usage", stream=True), headers=bearer(key))
            assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
            [row] = await gw.ledger()
            assert (row.status, row.estimated) == ("ok", True)
            assert (row.prompt_tokens, row.completion_tokens) == (PROMPT_TRUTH, fake.tokens_sent) == (7, 8)
