"""AnthropicAdapter: Anthropic's Messages API (POST /v1/messages, GET /v1/models) over a shared session.

The wire translation is in anthropic_codec.py; this module does the HTTP: deadlines per attempt,
first token and idle gap, bounded reads, closing the upstream on cancellation, and turning
transport failures into UpstreamFailure kinds. It keeps no per-request state, so one instance
serves every request. Anthropic has no embeddings API.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Mapping

import aiohttp
import orjson

from services.clock import Clock, SystemClock
from services.core.errors import UpstreamFailure
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, has_content
from services.providers.anthropic_codec import (
    API_VERSION,
    StreamTranslator,
    build_messages_body,
    classify_error,
    parse_message,
)
from services.providers.base import Call
from services.providers.sse import SSEParser

# A whole answer; Anthropic's largest are far smaller. Bounds memory against a runaway upstream (E10).
MAX_BODY_BYTES = 32 * 1024 * 1024
# Enough of an error body to read Anthropic's message; the rest is dropped unread.
MAX_ERROR_BODY_BYTES = 64 * 1024
# After message_stop only the chunked-encoding terminator is left; waiting this long for it keeps
# the connection reusable, and a silent upstream costs the caller at most this.
DRAIN_AFTER_STOP_S = 1.0
_MAX_MODEL_PAGES = 20


def _protocol(message: str) -> UpstreamFailure:
    return UpstreamFailure("protocol", 0, message)


def _headers(api_key: str, accept: str) -> dict[str, str]:
    if "\r" in api_key or "\n" in api_key:
        # aiohttp would refuse it anyway; saying so here keeps the key out of any library message.
        raise UpstreamFailure("auth", 0, "the provider key is malformed")
    return {
        "x-api-key": api_key,
        "anthropic-version": API_VERSION,
        "content-type": "application/json",
        "accept": accept,
    }


class AnthropicAdapter:
    kind = "anthropic"

    def __init__(self, clock: Clock | None = None) -> None:
        # Only for HTTP-date Retry-After values; deadlines run on the event loop's clock.
        self._clock = clock or SystemClock()

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        return classify_error(status, headers, body, self._clock.now())

    async def chat(self, req: ChatRequest, call: Call) -> ChatResult:
        payload = orjson.dumps(build_messages_body(req, call.target.model, stream=False))
        deadline = asyncio.get_running_loop().time() + call.timeout_s
        why = f"the upstream did not answer within {call.timeout_s:g} s"
        resp = await _send(call, "POST", "/v1/messages", payload, "application/json", deadline, why)
        async with resp:  # releases the connection, or closes it when the body was not read to the end
            if resp.status != 200:
                raise self.classify(resp.status, resp.headers, await _read_body(resp, deadline, why, error=True))
            body = await _read_body(resp, deadline, why)
        return parse_message(body)

    async def stream_chat(self, req: ChatRequest, call: Call) -> AsyncIterator[list[Chunk]]:
        payload = orjson.dumps(build_messages_body(req, call.target.model, stream=True))
        start = asyncio.get_running_loop().time()
        deadline = start + call.timeout_s
        total_why = f"the stream took longer than {call.timeout_s:g} s"
        first_deadline, first_why = deadline, total_why
        if call.first_token_timeout_s is not None and call.first_token_timeout_s < call.timeout_s:
            first_deadline = start + call.first_token_timeout_s
            first_why = f"no first token within {call.first_token_timeout_s:g} s"
        resp = await _send(call, "POST", "/v1/messages", payload, "text/event-stream", first_deadline, first_why)
        async with resp:
            clean = False
            try:
                if resp.status != 200:
                    body = await _read_body(resp, deadline, total_why, error=True)
                    raise self.classify(resp.status, resp.headers, body)
                parser = SSEParser()
                translator = StreamTranslator()
                got_first = False
                while not translator.done:
                    # RELIABILITY A5/A6: first-token, idle and total limits, whichever comes first.
                    limit, why = (deadline, total_why) if got_first else (first_deadline, first_why)
                    if call.idle_timeout_s is not None:
                        idle_end = asyncio.get_running_loop().time() + call.idle_timeout_s
                        if idle_end < limit:
                            limit, why = idle_end, f"no data from the upstream for {call.idle_timeout_s:g} s"
                    data, broken = await _read_some(resp, limit, why)
                    if data:
                        try:
                            events = parser.feed(data)
                        except ValueError:
                            raise _protocol("the upstream sent an SSE event over the size limit") from None
                    elif broken:
                        events = []  # a half-received event at a cut is not an event
                    else:
                        events = parser.close()
                    rest: list = []
                    if got_first or len(events) < 2:
                        chunks, failure = translator.feed(events)
                    else:
                        # The first token leaves before the rest of its read is translated (a fast
                        # model or a buffering proxy sends many events per read): TTFT is the one
                        # latency a streaming user sees. Feeding in two parts is feeding once.
                        chunks, failure, rest = _until_content(translator, events)
                    if chunks:
                        got_first = True
                        yield chunks
                    if rest:
                        chunks, failure = translator.feed(rest)
                        if chunks:
                            yield chunks
                    # Raised only after what arrived was delivered: the caller decides (A6).
                    if failure is not None:
                        raise failure
                    if broken:
                        raise _protocol("the upstream cut the stream before message_stop")
                    if not data and not translator.done:
                        raise _protocol("the upstream ended the stream before message_stop")
                clean = await _drain(resp, deadline)
            finally:
                if not clean:
                    # Cancelled, failed or abandoned mid-stream: drop the connection so the upstream
                    # stops generating (and billing) at once (RELIABILITY B1).
                    resp.close()

    async def embed(self, req: EmbedRequest, call: Call) -> EmbedResult:
        raise UpstreamFailure("bad_request", 400, "anthropic has no embeddings API")

    async def list_models(self, call: Call) -> list[str]:
        deadline = asyncio.get_running_loop().time() + call.timeout_s
        why = f"the upstream did not list its models within {call.timeout_s:g} s"
        ids: list[str] = []
        after = ""
        for _ in range(_MAX_MODEL_PAGES):
            path = "/v1/models?limit=1000"
            if after:
                path += "&after_id=" + urllib.parse.quote(after, safe="")
            resp = await _send(call, "GET", path, None, "application/json", deadline, why)
            async with resp:
                if resp.status != 200:
                    raise self.classify(resp.status, resp.headers, await _read_body(resp, deadline, why, error=True))
                body = await _read_body(resp, deadline, why)
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise _protocol("the upstream's model list is not JSON") from None
            data = doc.get("data") if isinstance(doc, dict) else None
            if not isinstance(data, list):
                raise _protocol("the upstream's model list has no data array")
            ids.extend(str(m["id"]) for m in data if isinstance(m, dict) and m.get("id"))
            after = str(doc.get("last_id") or "")
            if not doc.get("has_more") or not after:
                break
        return ids


async def _send(
    call: Call, method: str, path: str, payload: bytes | None, accept: str, deadline: float, why: str
) -> aiohttp.ClientResponse:
    """Sends one request and waits for the response headers, by `deadline`."""
    url = call.target.base_url.rstrip("/") + path
    headers = _headers(call.api_key, accept)
    try:
        async with asyncio.timeout_at(deadline):
            return await call.session.request(method, url, data=payload, headers=headers, allow_redirects=False)
    except TimeoutError:
        raise UpstreamFailure("timeout", 0, why) from None
    except (aiohttp.ClientError, OSError) as exc:
        # `from None` and only the class name: aiohttp's exceptions carry the request headers
        # (the key among them) in request_info, and nothing may reach a log with it.
        raise UpstreamFailure("connect", 0, f"could not reach the upstream ({type(exc).__name__})") from None


async def _read_body(resp: aiohttp.ClientResponse, deadline: float, why: str, *, error: bool = False) -> bytes:
    """The whole body, bounded: an error body is truncated, an answer over the cap is a failure."""
    cap = MAX_ERROR_BODY_BYTES if error else MAX_BODY_BYTES
    if not error and resp.content_length is not None and resp.content_length > cap:
        raise _protocol(f"the upstream's answer is larger than {cap} bytes")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            while data := await resp.content.readany():
                size += len(data)
                if size > cap:
                    if not error:
                        parts.clear()  # the traceback keeps this frame: not the pieces too (E10)
                        raise _protocol(f"the upstream's answer is larger than {cap} bytes")
                    parts.append(data[: cap - (size - len(data))])
                    break
                parts.append(data)
    except TimeoutError:
        raise UpstreamFailure("timeout", 0, why) from None
    except (aiohttp.ClientError, OSError):
        if error:
            return b"".join(parts)  # the status already says what happened
        raise _protocol("the upstream closed the connection mid-answer") from None
    return b"".join(parts)


async def _read_some(resp: aiohttp.ClientResponse, limit: float, why: str) -> tuple[bytes, bool]:
    """One read of the stream: (bytes, False), (b"", False) at a clean end, (bytes, True) when cut."""
    try:
        async with asyncio.timeout_at(limit):
            return await resp.content.readany(), False
    except TimeoutError:
        raise UpstreamFailure("timeout", 0, why) from None
    except (aiohttp.ClientError, OSError):
        # aiohttp raises a lost connection's error before handing out bytes it had already
        # buffered; take them, so what the upstream did send still reaches the caller (A6).
        salvage = getattr(resp.content, "_read_nowait", None)
        try:
            rest = salvage(-1) if salvage is not None else b""
        except (RuntimeError, TypeError, ValueError):
            rest = b""
        return (rest if isinstance(rest, bytes) else b""), True


async def _drain(resp: aiohttp.ClientResponse, deadline: float) -> bool:
    """Reads to the end after message_stop; True when the connection can go back to the pool."""
    if resp.content.at_eof():
        return True
    remaining = min(DRAIN_AFTER_STOP_S, deadline - asyncio.get_running_loop().time())
    if remaining <= 0:
        return False
    try:
        async with asyncio.timeout(remaining):
            while await resp.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False
    return True


def _until_content(translator: StreamTranslator, events: list) -> tuple[list[Chunk], UpstreamFailure | None, list]:
    """Feeds events one at a time until one gives content (or fails, or ends the stream):
    (chunks so far, failure, the events not fed yet)."""
    chunks: list[Chunk] = []
    for i, ev in enumerate(events):
        got, failure = translator.feed([ev])
        chunks += got
        if failure is not None or translator.done:
            return chunks, failure, []
        if has_content(got):
            return chunks, None, events[i + 1:]
    return chunks, None, []
