"""The Ollama adapter (kind "ollama"): native /api/chat, /api/embed and /api/tags.

Wire translation lives in ollama_codec.py; the attempt helpers (deadlines, capped reads, aiohttp
failures -> UpstreamFailure) are transport.py's. Ollama takes no key; one configured for a proxy in
front of it is sent as a Bearer token.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any, AsyncIterator, Awaitable, Mapping

import orjson

from services.core.errors import UpstreamFailure
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Usage, has_content, token_count
from services.providers import ollama_codec as codec
from services.providers.base import Call
from services.providers.transport import (
    Deadlines, bearer_headers, check_key, read_some, request_json, scrub, send, versioned_native_url,
)


class OllamaAdapter:
    """A local or proxied Ollama server. Stateless: one instance serves all calls."""

    kind = "ollama"
    # Seed 003's pass-through: its OpenAI-compatible /v1 API, a proxy's key as a Bearer token.
    native_headers = staticmethod(bearer_headers)
    native_url = staticmethod(versioned_native_url)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        return codec.classify(status, headers, body)

    async def chat(self, req: ChatRequest, call: Call) -> ChatResult:
        body = orjson.dumps(codec.build_request(req, self._model(call, req.model), stream=False))
        obj = await self._json(call, "POST", f"{self._base(call)}/api/chat", body)
        try:
            return codec.parse_response(obj)
        except UpstreamFailure as failure:
            raise scrub(failure, call.api_key) from None

    async def stream_chat(self, req: ChatRequest, call: Call) -> AsyncIterator[list[Chunk]]:
        # Built first: an image URL is refused here, before any connection is made.
        body = orjson.dumps(codec.build_request(req, self._model(call, req.model), stream=True))
        check_key(call.api_key)
        dl = Deadlines.start(call, stream=True)
        lines = codec.LineSplitter()
        decoder = codec.StreamDecoder(call.target.provider)
        async with AsyncExitStack() as stack:
            resp = await send(
                stack, call, "POST", f"{self._base(call)}/api/chat", data=body, headers=self._headers(call),
                until=dl.first, label=dl.next_read()[1], classify=self.classify,
            )
            while True:
                try:
                    data = await read_some(resp, dl)
                except UpstreamFailure:
                    if decoder.finished:
                        return  # the answer is whole; a slow or broken close is not a failure
                    raise
                batch: list[Chunk] = []
                failure: UpstreamFailure | None = None
                try:
                    for line in lines.feed(data) if data else lines.close():
                        got = decoder.feed(line)
                        batch.extend(got)
                        if not dl.got_first and has_content(got):
                            # The first token leaves before the rest of its read is decoded (a
                            # fast local model sends many lines per read): TTFT is what a
                            # streaming user sees.
                            dl.got_first = True
                            yield batch
                            batch = []
                except UpstreamFailure as exc:
                    failure = exc  # deliver what decoded before the bad line, then fail
                if batch:
                    dl.got_first = True
                    yield batch
                if failure is not None:
                    raise scrub(failure, call.api_key)
                if not data:
                    break
        if not decoder.finished:
            # RELIABILITY A6: a cut stream is an error, never a silent "stop".
            raise UpstreamFailure("protocol", 200, "stream ended before its done line")

    async def embed(self, req: EmbedRequest, call: Call) -> EmbedResult:
        model = self._model(call, req.model)
        payload: dict[str, Any] = {"model": model, "input": list(req.inputs)}
        if req.dimensions:
            payload["dimensions"] = req.dimensions
        obj = await self._json(call, "POST", f"{self._base(call)}/api/embed", orjson.dumps(payload))
        vectors = obj.get("embeddings")
        if not isinstance(vectors, list) or len(vectors) != len(req.inputs):
            raise UpstreamFailure("protocol", 200, "embeddings do not match the inputs")
        usage = Usage(
            prompt_tokens=token_count(obj.get("prompt_eval_count")), estimated="prompt_eval_count" not in obj
        )
        return EmbedResult(vectors=vectors, usage=usage, model=str(obj.get("model") or model))

    async def list_models(self, call: Call) -> list[str]:
        obj = await self._json(call, "GET", f"{self._base(call)}/api/tags", None)
        return [str(m["name"]) for m in obj.get("models") or [] if isinstance(m, dict) and m.get("name")]

    def _json(self, call: Call, method: str, url: str, body: bytes | None) -> Awaitable[dict[str, Any]]:
        # transport's coroutine, handed back: no coroutine of ours in between.
        return request_json(call, method, url, body, self._headers(call), self.classify)

    @staticmethod
    def _headers(call: Call) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if call.api_key:
            headers["authorization"] = f"Bearer {call.api_key}"
        return headers

    @staticmethod
    def _base(call: Call) -> str:
        # OLLAMA_BASE_URL is often the OpenAI-compatible http://host:11434/v1: the native API is
        # at the root.
        base = call.target.base_url.rstrip("/")
        for suffix in ("/v1", "/api"):
            base = base.removesuffix(suffix)
        return base

    @staticmethod
    def _model(call: Call, requested: str) -> str:
        return call.target.model or requested
