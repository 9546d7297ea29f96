"""The built-in demo provider: a deterministic local stand-in, clearly not a real model.

It lets `make run` answer on a fresh machine with no network and no keys: it echoes the last
user message behind a label, streams it word by word, and reports honest usage for what it
sent. The model names `demo-fail-503` and `demo-slow` exist so people can see failover and
streaming behave without a real provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from typing import AsyncIterator

from services.core.errors import UpstreamFailure
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Usage
from services.providers.base import Call

LABEL = "[tollgate demo model: not a real LLM]"
_WORD = re.compile(r"\S+\s*")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text) or [text]


def _count(text: str) -> int:
    return len(_WORD.findall(text))


def answer_tokens(req: ChatRequest) -> list[str]:
    last = next((m.plain_text() for m in reversed(req.messages) if m.role == "user"), "")
    tokens = _tokens(f"{LABEL} You said: {last.strip() or '(nothing)'}")
    if req.sampling.max_tokens is not None:
        tokens = tokens[: max(1, req.sampling.max_tokens)]
    return tokens


def prompt_tokens(req: ChatRequest) -> int:
    return sum(_count(m.plain_text()) + 3 for m in req.messages)


class DemoAdapter:
    kind = "demo"

    async def chat(self, req: ChatRequest, call: Call) -> ChatResult:
        self._faults(call)
        tokens = answer_tokens(req)
        finish = "length" if req.sampling.max_tokens is not None and len(tokens) >= req.sampling.max_tokens else "stop"
        return ChatResult(
            text="".join(tokens),
            finish_reason=finish,
            usage=Usage(prompt_tokens(req), len(tokens)),
            model=call.target.model,
        )

    async def stream_chat(self, req: ChatRequest, call: Call) -> AsyncIterator[list[Chunk]]:
        self._faults(call)
        tokens = answer_tokens(req)
        delay = 0.05 if call.target.model == "demo-slow" else 0.0
        for i, tok in enumerate(tokens):
            if delay:
                await asyncio.sleep(delay)
            yield [Chunk(text=tok, role="assistant" if i == 0 else "")]
        finish = "length" if req.sampling.max_tokens is not None and len(tokens) >= req.sampling.max_tokens else "stop"
        yield [Chunk(finish_reason=finish, usage=Usage(prompt_tokens(req), len(tokens)))]

    async def embed(self, req: EmbedRequest, call: Call) -> EmbedResult:
        dims = req.dimensions or 8
        vectors = [_vector(text, dims) for text in req.inputs]
        return EmbedResult(vectors, Usage(sum(_count(t) for t in req.inputs), 0), call.target.model)

    async def list_models(self, call: Call) -> list[str]:
        return ["demo", "tollgate-demo"]

    def _faults(self, call: Call) -> None:
        if call.target.model == "demo-fail-503":
            raise UpstreamFailure("server", 503, "demo provider: simulated outage")


def _vector(text: str, dims: int) -> list[float]:
    # A unit vector from the text's hash: same text, same vector; no meaning beyond that.
    raw = hashlib.sha256(text.encode()).digest()
    vals = [(raw[i % len(raw)] - 127.5) / 127.5 for i in range(dims)]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [v / norm for v in vals]
