"""The Gemini adapter (kind "gemini"): Google's generativelanguage API over the shared transport.

Wire translation lives in gemini_codec.py, the HTTP attempt (deadlines, capped reads, aiohttp
failures as UpstreamFailure) in transport.py. The key goes in `x-goog-api-key`, never the URL.
"""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping
from urllib.parse import quote

import orjson

from services.core.errors import UpstreamFailure
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Usage, has_content
from services.providers import gemini_codec as codec
from services.providers.base import Call
from services.providers.sse import SSEParser
from services.providers.transport import (
    Deadlines, check_key, native_join, read_some, request_json, scrub, send,
)

_VERSIONED = re.compile(r"v1(?:alpha|beta)?/")
_EMBED_BATCH = 100  # batchEmbedContents' documented maximum
_MAX_MODEL_PAGES = 20

# --- the adapter -----------------------------------------------------------------------------


class GeminiAdapter:
    """Google's Gemini API (generativelanguage v1beta). Stateless: one instance serves all calls."""

    kind = "gemini"

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        return codec.classify(status, headers, body)

    @staticmethod
    def native_headers(headers: dict[str, str], secret: str) -> None:
        """Seed 003's pass-through: the key in `x-goog-api-key`, never the URL."""
        if secret:
            headers["x-goog-api-key"] = secret

    @staticmethod
    def native_url(base_url: str, path: str, query: str) -> str:
        """The base is the bare origin: a path without a version gets `v1beta/`."""
        if not _VERSIONED.match(path):
            path = "v1beta/" + path
        return native_join(base_url, path, query)

    async def chat(self, req: ChatRequest, call: Call) -> ChatResult:
        body = orjson.dumps(codec.build_request(req))  # bad input fails here, before any I/O
        obj = await self._json(call, "POST", self._model_url(call, req.model, "generateContent"), body)
        try:
            return codec.parse_response(obj)
        except UpstreamFailure as failure:
            raise scrub(failure, call.api_key) from None

    async def stream_chat(self, req: ChatRequest, call: Call) -> AsyncIterator[list[Chunk]]:
        body = orjson.dumps(codec.build_request(req))
        check_key(call.api_key)
        url = self._model_url(call, req.model, "streamGenerateContent") + "?alt=sse"
        dl = Deadlines.start(call, stream=True)
        parser = SSEParser()
        decoder = codec.StreamDecoder(call.target.provider)
        async with AsyncExitStack() as stack:
            resp = await send(
                stack, call, "POST", url, data=body, headers=self._headers(call),
                until=dl.first, label=dl.next_read()[1], classify=self.classify,
            )
            while True:
                try:
                    data = await read_some(resp, dl)
                except UpstreamFailure:
                    if decoder.finished:
                        return  # the answer is whole; a slow or broken close is not a failure
                    raise
                if data:
                    # Until the first token, decoding stops at the first content: it leaves before
                    # the rest of its read is decoded (TTFT is what a streaming user sees).
                    batch, failure, rest = self._decode(parser.feed, data, decoder, until_content=not dl.got_first)
                else:
                    (batch, failure), rest = self._tail(parser, decoder), []
                if batch:
                    dl.got_first = True
                    yield batch
                if rest:
                    batch, failure, _ = self._decode(lambda _: rest, b"", decoder)
                    if batch:
                        yield batch
                if failure is not None:
                    raise scrub(failure, call.api_key)
                if not data:
                    break
        if not decoder.finished:
            # RELIABILITY A6: a cut stream is an error, never a silent "stop".
            raise UpstreamFailure("protocol", 200, "stream ended before its final event")

    @staticmethod
    def _decode(
        feed: Callable[[bytes], list[Any]], data: bytes, decoder: codec.StreamDecoder, until_content: bool = False
    ) -> tuple[list[Chunk], UpstreamFailure | None, list[Any]]:
        """(chunks, failure, events not decoded yet): with `until_content`, decoding stops after
        the first event that gives content and the rest is handed back."""
        # Chunks decoded before a bad event are still delivered, then the failure.
        batch: list[Chunk] = []
        try:
            events = feed(data)
            for i, event in enumerate(events):
                got = decoder.feed(event.data)
                batch.extend(got)
                if until_content and has_content(got):
                    return batch, None, events[i + 1:]
        except UpstreamFailure as failure:
            return batch, failure, []
        except ValueError:
            return batch, UpstreamFailure("protocol", 200, "stream event over the size limit"), []
        return batch, None, []

    def _tail(self, parser: SSEParser, decoder: codec.StreamDecoder) -> tuple[list[Chunk], UpstreamFailure | None]:
        return self._decode(lambda _: parser.close(), b"", decoder)[:2]

    async def embed(self, req: EmbedRequest, call: Call) -> EmbedResult:
        model = self._model(call, req.model)
        url = self._model_url(call, req.model, "batchEmbedContents")
        vectors: list[list[float]] = []
        for start in range(0, len(req.inputs), _EMBED_BATCH):
            requests = []
            for text in req.inputs[start : start + _EMBED_BATCH]:
                r: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
                if req.dimensions:
                    r["outputDimensionality"] = req.dimensions
                requests.append(r)
            obj = await self._json(call, "POST", url, orjson.dumps({"requests": requests}))
            got = [e.get("values") for e in obj.get("embeddings") or [] if isinstance(e, dict)]
            if len(got) != len(requests) or not all(isinstance(v, list) for v in got):
                raise UpstreamFailure("protocol", 200, "embeddings do not match the inputs")
            vectors.extend(got)  # type: ignore[arg-type]
        # batchEmbedContents reports no token counts: metering estimates them.
        return EmbedResult(vectors=vectors, usage=Usage(estimated=True), model=model)

    async def list_models(self, call: Call) -> list[str]:
        names: list[str] = []
        token = ""
        for _ in range(_MAX_MODEL_PAGES):
            url = f"{self._base(call)}/v1beta/models?pageSize=1000"
            if token:
                url += "&pageToken=" + quote(token, safe="")
            obj = await self._json(call, "GET", url, None)
            for m in obj.get("models") or []:
                name = str(m.get("name") or "") if isinstance(m, dict) else ""
                if name:
                    names.append(name.removeprefix("models/"))
            token = str(obj.get("nextPageToken") or "")
            if not token:
                break
        return names

    def _json(self, call: Call, method: str, url: str, body: bytes | None) -> Awaitable[dict[str, Any]]:
        # transport's coroutine, handed back: no coroutine of ours in between.
        return request_json(call, method, url, body, self._headers(call), self.classify)

    @staticmethod
    def _headers(call: Call) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if call.api_key:
            headers["x-goog-api-key"] = call.api_key
        return headers

    @staticmethod
    def _base(call: Call) -> str:
        # Configured as the bare origin; tolerate a pasted version suffix.
        base = call.target.base_url.rstrip("/")
        for suffix in ("/v1beta", "/v1"):
            base = base.removesuffix(suffix)
        return base

    @staticmethod
    def _model(call: Call, requested: str) -> str:
        return (call.target.model or requested).removeprefix("models/")

    def _model_url(self, call: Call, requested: str, action: str) -> str:
        return f"{self._base(call)}/v1beta/models/{quote(self._model(call, requested), safe='')}:{action}"
