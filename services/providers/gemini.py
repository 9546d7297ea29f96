"""The Gemini adapter (kind "gemini"), and the HTTP attempt helpers it shares with ollama.py.

Wire translation lives in gemini_codec.py; this module does the I/O: one POST per attempt on the
upstream's shared session, the attempt's deadlines (overall, first token, idle), capped reads,
and aiohttp failures mapped to UpstreamFailure. The key goes in `x-goog-api-key`, never the URL.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Mapping
from urllib.parse import quote

import aiohttp
import orjson

from services.core.errors import UpstreamFailure
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Usage, has_content
from services.providers import gemini_codec as codec
from services.providers.base import Call
from services.providers.sse import SSEParser

MAX_BODY_BYTES = 32 * 1024 * 1024  # a whole answer; RELIABILITY E10 wants a bound, not a size
MAX_ERROR_BYTES = 64 * 1024
_EMBED_BATCH = 100  # batchEmbedContents' documented maximum
_MAX_MODEL_PAGES = 20

Classifier = Callable[[int, Mapping[str, str], bytes], UpstreamFailure]


# --- one HTTP attempt (shared with ollama.py) ------------------------------------------------


@dataclass(slots=True)
class Deadlines:
    """An attempt's clock on the loop's monotonic time: overall end, first-token end, idle gap."""

    timeout_s: float
    end: float
    first_s: float | None
    first: float
    idle_s: float | None
    got_first: bool = False

    @classmethod
    def start(cls, call: Call, *, stream: bool) -> Deadlines:
        now = asyncio.get_running_loop().time()
        end = now + call.timeout_s
        first_s = call.first_token_timeout_s if stream else None
        first = min(end, now + first_s) if first_s else end
        return cls(call.timeout_s, end, first_s, first, call.idle_timeout_s if stream else None)

    def next_read(self) -> tuple[float, str]:
        """When the next read must have returned, and what it means if it has not."""
        if not self.got_first:
            if self.first < self.end:
                return self.first, f"no first token within {self.first_s:g} s"
            return self.end, f"attempt exceeded {self.timeout_s:g} s"
        if self.idle_s:
            idle_end = asyncio.get_running_loop().time() + self.idle_s
            if idle_end < self.end:
                return idle_end, f"no data for {self.idle_s:g} s"
        return self.end, f"attempt exceeded {self.timeout_s:g} s"


def request_timeout(session: aiohttp.ClientSession) -> aiohttp.ClientTimeout:
    """The session's connect bounds without its total/read timers: our deadlines bound the
    attempt, and a session default (aiohttp's is 5 min total) must not cut a long stream."""
    t = session.timeout
    return aiohttp.ClientTimeout(total=None, connect=t.connect, sock_connect=t.sock_connect, sock_read=None)


def check_key(key: str) -> None:
    if "\r" in key or "\n" in key:
        # aiohttp would refuse the header anyway; say so without showing it.
        raise UpstreamFailure("auth", 0, "the provider key is malformed")


def scrub(failure: UpstreamFailure, key: str) -> UpstreamFailure:
    """Belt and braces for RELIABILITY F3: a provider echoing our key must not carry it onward."""
    if key and key in failure.message:
        failure.message = failure.message.replace(key, "[redacted]")
    return failure


async def send(
    stack: AsyncExitStack,
    call: Call,
    method: str,
    url: str,
    *,
    data: bytes | None,
    headers: dict[str, str],
    until: float,
    label: str,
    classify: Classifier,
) -> aiohttp.ClientResponse:
    """Start the request and wait for its headers; a non-2xx answer is read (capped) and raised.

    The response is entered on `stack`, so leaving the caller's `async with` (also by
    cancellation) releases it, and an unfinished body closes the upstream connection.
    """
    try:
        async with asyncio.timeout_at(until):
            resp = await stack.enter_async_context(
                call.session.request(
                    method, url, data=data, headers=headers, allow_redirects=False,
                    timeout=request_timeout(call.session),
                )
            )
            if resp.status < 300:
                return resp
            body = await _read_capped(resp, MAX_ERROR_BYTES, truncate=True)
    except aiohttp.ClientError as exc:
        # First: aiohttp's own connect timeout is also a TimeoutError, and it is a connect failure.
        # `from None`: aiohttp errors can hold request_info, whose headers hold the key.
        raise UpstreamFailure("connect", 0, f"{type(exc).__name__}: {exc}"[:300]) from None
    except TimeoutError:
        raise UpstreamFailure("timeout", 0, label) from None
    raise scrub(classify(resp.status, resp.headers, body), call.api_key)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, *, truncate: bool = False) -> bytes:
    buf = bytearray()
    while True:
        data = await resp.content.readany()
        if not data:
            return bytes(buf)
        buf += data
        if len(buf) > limit:
            if truncate:
                return bytes(buf[:limit])
            del buf, data  # the traceback keeps this frame: not the buffer too (E10)
            raise UpstreamFailure("protocol", resp.status, f"response body over {limit} bytes")


async def read_body(resp: aiohttp.ClientResponse, until: float, label: str) -> bytes:
    try:
        async with asyncio.timeout_at(until):
            return await _read_capped(resp, MAX_BODY_BYTES)
    except TimeoutError:
        raise UpstreamFailure("timeout", resp.status, label) from None
    except aiohttp.ClientError as exc:
        raise UpstreamFailure("protocol", resp.status, f"response body broke off: {type(exc).__name__}") from None


async def read_some(resp: aiohttp.ClientResponse, dl: Deadlines) -> bytes:
    """One read of a streamed body within the attempt's deadlines; b"" at the end."""
    until, label = dl.next_read()
    try:
        # The timeout wraps this one await only: a scope held across the caller's `yield` would
        # cancel whatever the consumer happens to be doing.
        async with asyncio.timeout_at(until):
            return await resp.content.readany()
    except TimeoutError:
        raise UpstreamFailure("timeout", resp.status, label) from None
    except aiohttp.ClientError as exc:
        # A cut mid-body (no terminating chunk): the stream is incomplete, not unreachable.
        raise UpstreamFailure("protocol", resp.status, f"stream broke off: {type(exc).__name__}") from None


def parse_json_object(raw: bytes, status: int) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFailure("protocol", status, "response is not JSON") from None
    if not isinstance(obj, dict):
        raise UpstreamFailure("protocol", status, "response is not a JSON object")
    return obj


# --- the adapter -----------------------------------------------------------------------------


class GeminiAdapter:
    """Google's Gemini API (generativelanguage v1beta). Stateless: one instance serves all calls."""

    kind = "gemini"

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        return codec.classify(status, headers, body)

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
        decoder = codec.StreamDecoder()
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

    async def _json(self, call: Call, method: str, url: str, body: bytes | None) -> dict[str, Any]:
        check_key(call.api_key)
        dl = Deadlines.start(call, stream=False)
        label = dl.next_read()[1]
        async with AsyncExitStack() as stack:
            resp = await send(
                stack, call, method, url, data=body, headers=self._headers(call),
                until=dl.end, label=label, classify=self.classify,
            )
            raw = await read_body(resp, dl.end, label)
        return parse_json_object(raw, resp.status)

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
