"""The OpenAI-compatible adapter's stream reading, against a real local HTTP upstream."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from services.core.errors import UpstreamFailure
from services.core.types import ChatRequest, Chunk, Message, Target
from services.providers.base import Call
from services.providers.openai_compatible import MAX_SKIPPED_EVENTS, OpenAIAdapter
from tests.support.local_server import serve_chat

HEAD = {"id": "chatcmpl-burst", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "m"}


def frame(delta: dict, finish: str | None = None) -> bytes:
    doc = {**HEAD, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(doc) + b"\n\n"


@asynccontextmanager
async def burst_upstream(words: list[str]) -> AsyncIterator[str]:
    """Sends the whole stream in one write, as a fast model (or a buffering proxy) does: the
    gateway's first read holds every event."""
    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        body = frame({"role": "assistant", "content": ""}) + b"".join(frame({"content": w}) for w in words)
        await resp.write(body + frame({}, "stop") + b"data: [DONE]\n\n")
        return resp

    async with serve_chat(chat) as base_url:
        yield base_url


async def test_the_first_token_leaves_before_the_rest_of_its_read_is_parsed() -> None:
    words = [f" w{i}" for i in range(20)]
    async with burst_upstream(words) as base_url, aiohttp.ClientSession() as session:
        call = Call(Target(provider="p", kind="openai", key_id="pk_1", model="m", base_url=base_url),
                    api_key="test-upstream-key", session=session, timeout_s=10.0)
        req = ChatRequest(model="m", messages=[Message(role="user", text="hi")])
        batches: list[list[Chunk]] = [b async for b in OpenAIAdapter().stream_chat(req, call)]
    # The first batch ends at the first content token (the role chunk before it rides along) ...
    assert [c.text for c in batches[0]] == ["", " w0"]
    # ... and the rest of that read follows in the next one, nothing lost or reordered.
    assert len(batches) >= 2
    assert "".join(c.text for b in batches for c in b) == "".join(words)
    assert [c.finish_reason for b in batches for c in b if c.finish_reason] == ["stop"]


@asynccontextmanager
async def scripted_upstream(pieces: list[bytes]) -> AsyncIterator[str]:
    """Writes `pieces` one write each, then ends the response cleanly (chunked terminator sent)."""
    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for p in pieces:
            await resp.write(p)
        await resp.write_eof()
        return resp

    async with serve_chat(chat) as base_url:
        yield base_url


async def read_stream(pieces: list[bytes]) -> list[Chunk]:
    async with scripted_upstream(pieces) as base_url, aiohttp.ClientSession() as session:
        call = Call(Target(provider="p", kind="openai", key_id="pk_1", model="m", base_url=base_url),
                    api_key="test-upstream-key", session=session, timeout_s=10.0)
        req = ChatRequest(model="m", messages=[Message(role="user", text="hi")])
        return [c async for b in OpenAIAdapter().stream_chat(req, call) for c in b]


USAGE = b'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
WORDS = [frame({"content": w}) for w in ("a", "b", "c", "d")]


async def test_a_malformed_event_mid_stream_is_skipped_and_the_rest_kept() -> None:
    """Failover Bench S10 / RELIABILITY E3: a truncated-JSON event costs nothing but itself."""
    broken = b'data: {"id": "broken", "choices": [{"delta": \n\n'
    chunks = await read_stream([frame({"role": "assistant", "content": ""}), *WORDS[:2], broken, b"data: [1, 2]\n\n",
                                *WORDS[2:], frame({}, "stop"), USAGE, b"data: [DONE]\n\n"])
    assert "".join(c.text for c in chunks) == "abcd"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(3, 4)]


async def test_too_many_malformed_events_are_a_protocol_failure() -> None:
    junk = [b"data: not json\n\n"] * (MAX_SKIPPED_EVENTS + 1)
    with pytest.raises(UpstreamFailure) as e:
        await read_stream([*WORDS[:1], *junk, *WORDS[1:], frame({}, "stop"), b"data: [DONE]\n\n"])
    assert e.value.kind == "protocol" and "malformed" in e.value.message


async def test_a_finished_stream_without_done_is_complete() -> None:
    """Failover Bench S11: finish chunk and usage, then a clean end with no `[DONE]`."""
    chunks = await read_stream([frame({"role": "assistant", "content": ""}), *WORDS, frame({}, "stop"), USAGE])
    assert "".join(c.text for c in chunks) == "abcd"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert [c.usage.completion_tokens for c in chunks if c.usage] == [4]


async def test_a_clean_end_before_any_finish_reason_is_a_protocol_failure() -> None:
    """Without a finish_reason a clean end is a cut answer (A6), never a complete one."""
    with pytest.raises(UpstreamFailure) as e:
        await read_stream([frame({"role": "assistant", "content": ""}), *WORDS[:2]])
    assert e.value.kind == "protocol" and "finish_reason" in e.value.message


async def test_a_final_done_without_its_blank_line_still_ends_the_stream() -> None:
    chunks = await read_stream([*WORDS, frame({}, "length"), b"data: [DONE]"])
    assert "".join(c.text for c in chunks) == "abcd"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["length"]


# An upstream's usage block is its input: a count past 64 bits stalled the ledger for every
# caller, a negative one gave quota back. Such counts read as 0, as a missing one does.
# Written as text: orjson refuses to write a 100-bit integer, and an upstream is under no such rule.
ABSURD_USAGE = (b'{"prompt_tokens": 1e30, "completion_tokens": -5, "total_tokens": 1000000000000000000000000000000, '
                b'"prompt_tokens_details": {"cached_tokens": "12"}, '
                b'"completion_tokens_details": {"reasoning_tokens": -1}}')


async def test_absurd_usage_counts_read_as_zero_in_an_answer_and_a_stream() -> None:
    answer = {**HEAD, "object": "chat.completion", "usage": "USAGE",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    body = orjson.dumps(answer).replace(b'"USAGE"', ABSURD_USAGE)

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async with serve_chat(chat) as base_url, aiohttp.ClientSession() as session:
        call = Call(Target(provider="p", kind="openai", key_id="pk_1", model="m", base_url=base_url),
                    api_key="test-upstream-key", session=session, timeout_s=10.0)
        result = await OpenAIAdapter().chat(ChatRequest(model="m", messages=[Message(role="user", text="hi")]), call)
    u = result.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens) == (0, 0, 12, 0)

    usage_chunk = (b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": "USAGE"}).replace(
        b'"USAGE"', b'{"prompt_tokens": 99999999999999999999, "completion_tokens": 7}') + b"\n\n")
    chunks = await read_stream([frame({"content": "hi"}), frame({}, "stop"), usage_chunk, b"data: [DONE]\n\n"])
    [got] = [c.usage for c in chunks if c.usage is not None]
    assert (got.prompt_tokens, got.completion_tokens) == (0, 7)
