"""The OpenAI-compatible adapter's stream reading, against a real local HTTP upstream."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

from services.core.types import ChatRequest, Chunk, Message, Target
from services.providers.base import Call
from services.providers.openai_compatible import OpenAIAdapter
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
