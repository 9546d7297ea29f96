"""RELIABILITY E3: whatever framing an upstream's SSE uses, the client gets the text it meant, byte for byte.

The hostile fake (tests/support/fakes/hostile.py) streams the same text — with an emoji and its
skin-tone modifier, CJK, U+2028 / U+2029 / U+0085, a tab, quotes and a backslash — framed with
`: ping` comments, JSON and a 4-byte character cut across reads, CR-only and split CRLF line
ends, multi-line `data:`, a BOM, `data:` without its space, a doubled `[DONE]` or none (after the
finish chunk), and a malformed event between tokens. Through the whole gateway (OpenAI, Anthropic
and seed 004 surfaces) the client's text is byte-equal to what the upstream meant and the stream
ends exactly once: one `[DONE]` (`message_stop` on Anthropic). The malformed event is skipped, the
rest of the answer kept (Failover Bench S10), and a finished stream without `[DONE]` is complete
(S11); an upstream that really breaks is A6's in-band error.

The same holds for the Anthropic, Gemini and Ollama adapters (their fakes echo a prompt with an
emoji and its skin-tone modifier, CJK, quotes and a backslash): a truncated-JSON event or line
between tokens, and the provider's finish signal followed by a clean end without what usually
follows it (Anthropic: no message_stop; Gemini, Ollama: no closing blank line or newline).
"""

from __future__ import annotations

import contextlib

import aiohttp
import orjson
import pytest
import pytest_asyncio

from tests.support.fakes.hostile import STREAM_FAULTS, meant, run_hostile, stream_pieces
from tests.support.fakes.native import NATIVE_FAKES
from tests.support.gateway import config, provider, run_gateway
from tests.support.sse_read import bearer

pytestmark = pytest.mark.asyncio(loop_scope="module")



@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory):
    async with run_hostile() as hostile:
        cfg = config(tmp_path_factory.mktemp("e3"), providers=(provider("hostile", hostile.base_url),))
        async with run_gateway(cfg) as gw:
            yield gw, hostile, bearer(await gw.new_key(tier="unlimited"))


def events(raw: bytes) -> list[tuple[str, bytes]]:
    """(event name, data) of each SSE event the gateway wrote (it writes LF framing)."""
    out = []
    for block in raw.split(b"\n\n"):
        name, data = "", []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
        if data:
            out.append((name, b"\n".join(data)))
    assert raw.endswith(b"\n\n") or not raw, raw[-200:]  # nothing half-written at the end
    return out


def openai_outcome(raw: bytes) -> tuple[bytes, int, list[dict], bool]:
    """(text as UTF-8, number of [DONE], error objects, [DONE] is the very last event)."""
    text, done, errors = "", 0, []
    evs = events(raw)
    for _, data in evs:
        if data == b"[DONE]":
            done += 1
            continue
        obj = orjson.loads(data)
        if "error" in obj:
            errors.append(obj["error"])
            continue
        for c in obj.get("choices") or ():
            text += (c.get("delta") or {}).get("content") or ""
    return text.encode(), done, errors, bool(evs) and evs[-1][1] == b"[DONE]"


def check_end(model: str, done: int, errors: list, done_last: bool) -> None:
    assert done == 1 and done_last and errors == [], (model, done, errors)


async def test_the_fake_really_splits_its_writes_across_reads(shared):
    """Sanity of the fixture: the split stream arrives in many reads, not one."""
    gw, hostile, _ = shared
    async with aiohttp.ClientSession() as s:
        async with s.post(hostile.base_url + "/chat/completions",
                          json={"model": "sse-split", "stream": True, "messages": []}) as r:
            reads = [piece async for piece in r.content.iter_any()]
    assert b"".join(reads) != b"" and len(reads) >= len(stream_pieces("sse-split")) // 2, len(reads)


@pytest.mark.parametrize("model", STREAM_FAULTS)
async def test_openai_surface_gets_the_meant_text_and_one_end(shared, model):
    gw, hostile, auth = shared
    rows0 = len(await gw.ledger())
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    async with gw.http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = await r.aread()
    text, done, errors, done_last = openai_outcome(raw)
    assert text == meant(model).encode(), (model, text)
    check_end(model, done, errors, done_last)
    rows = await gw.ledger()
    assert len(rows) == rows0 + 1
    assert rows[0].status == "ok", rows[0]


@pytest.mark.parametrize("model", STREAM_FAULTS)
async def test_anthropic_surface_gets_the_meant_text_and_one_end(shared, model):
    gw, hostile, auth = shared
    body = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with gw.http.stream("POST", "/v1/messages", json=body, headers=auth) as r:
        assert r.status_code == 200
        raw = await r.aread()
    evs = events(raw)
    text = "".join(orjson.loads(d)["delta"].get("text", "") for name, d in evs if name == "content_block_delta")
    assert text.encode() == meant(model).encode(), (model, text)
    names = [name for name, _ in evs]
    stops, errors = names.count("message_stop"), names.count("error")
    assert stops == 1 and errors == 0 and names[-1] == "message_stop", names
    assert names[0] == "message_start"


@pytest.mark.parametrize("model", ["sse-split", "sse-cr", "sse-u2028", "sse-double-done", "sse-malformed"])
async def test_seed_004_stream_gets_the_meant_text_and_one_end(shared, model):
    gw, hostile, auth = shared
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    async with gw.http.stream("POST", "/api/v1/inference/stream", json=body, headers=auth) as r:
        assert r.status_code == 200
        raw = await r.aread()
    text, done, errors, done_last = openai_outcome(raw)
    assert text == meant(model).encode(), (model, text)
    check_end(model, done, errors, done_last)


SAID = 'héllo 👍🏽 世界 "quoted" back\\slash ünïcode 🇫🇷 end'
NATIVE_FAULTS = [(kind, model) for kind in NATIVE_FAKES for model in ("fault-glitch-after-2", "fault-unterminated")]
NATIVE_FAULTS += [("anthropic", "fault-no-stop"), ("anthropic", "fault-trickle")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def native(tmp_path_factory):
    """One gateway per native kind, each in front of that kind's fake."""
    out = {}
    async with contextlib.AsyncExitStack() as stack:
        for kind, (run, key) in NATIVE_FAKES.items():
            fake = await stack.enter_async_context(run())
            cfg = config(tmp_path_factory.mktemp("e3-" + kind), providers=(
                provider(kind, fake.base_url, kind=kind, keys=(key,)),))
            gw = await stack.enter_async_context(run_gateway(cfg))
            out[kind] = gw, bearer(await gw.new_key(tier="unlimited"))
        yield out


@pytest.mark.parametrize("kind,model", NATIVE_FAULTS, ids=[f"{k}-{m}" for k, m in NATIVE_FAULTS])
async def test_native_upstreams_give_the_meant_text_and_one_end_on_both_surfaces(native, kind, model):
    gw, auth = native[kind]
    rows0 = len(await gw.ledger())
    body = {"model": model, "messages": [{"role": "user", "content": SAID}], "stream": True}
    async with gw.http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as r:
        assert r.status_code == 200
        raw = await r.aread()
    text, done, errors, done_last = openai_outcome(raw)
    assert text == SAID.encode(), (kind, model, text)
    check_end(model, done, errors, done_last)
    async with gw.http.stream("POST", "/v1/messages", json={**body, "max_tokens": 100}, headers=auth) as r:
        assert r.status_code == 200
        evs = events(await r.aread())
    text = "".join(orjson.loads(d)["delta"].get("text", "") for name, d in evs if name == "content_block_delta")
    assert text.encode() == SAID.encode(), (kind, model, text)
    names = [name for name, _ in evs]
    assert names.count("message_stop") == 1 and "error" not in names and names[-1] == "message_stop", names
    rows = await gw.ledger()
    assert len(rows) == rows0 + 2 and [r.status for r in rows[:2]] == ["ok", "ok"], rows[:2]
