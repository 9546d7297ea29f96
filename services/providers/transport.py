"""The one HTTP transport every adapter uses: an attempt's deadlines, capped reads, failures.

Each adapter translates its own wire format and classifies its own provider's error bodies;
what is common to every HTTP upstream lives here once: sending on the upstream's shared session
and waiting for the head by a deadline, reading a whole answer or one piece of a stream within
the attempt's limits (overall, first token, idle gap), the meaning of a status code, and aiohttp
failures as UpstreamFailure kinds, never carrying the request's headers (the key) onward.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import aiohttp
import orjson

from services.core.errors import UpstreamFailure
from services.providers.base import Call
from services.providers.retry_after import parse_retry_after

PROVIDER_AUTH_MESSAGE = "provider rejected the gateway's key"
_V1_END = re.compile(r"/v1$")


# --- native requests (seed 003's pass-through): what the adapters' declarations share ---------


def native_join(base_url: str, path: str, query: str) -> str:
    """`base/path?query` for a path below a provider's API root."""
    url = base_url.rstrip("/") + "/" + path
    return url + ("?" + query if query else "")


def versioned_native_url(base_url: str, path: str, query: str) -> str:
    """OpenAI-style base URLs carry their version (`…/v1`): a caller's own leading `v1/` is dropped."""
    base = base_url.rstrip("/")
    if path.startswith("v1/") and _V1_END.search(base):
        path = path[3:]
    return native_join(base, path, query)


def bearer_headers(headers: dict[str, str], secret: str) -> None:
    """The key as `Authorization: Bearer` (OpenAI and every OpenAI-shaped upstream, Ollama's proxies)."""
    if secret:
        headers["authorization"] = "Bearer " + secret


def transport_failure(exc: BaseException) -> UpstreamFailure:
    """An aiohttp / timeout exception as an UpstreamFailure; never echoes headers or keys."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamFailure("timeout", 0, "upstream timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure("connect", 0, "could not connect to the upstream")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return UpstreamFailure("connect", 0, "upstream connection closed unexpectedly")
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamFailure("protocol", exc.status, "malformed upstream response")
    return UpstreamFailure("protocol", 0, f"upstream error: {type(exc).__name__}")


def classify_status(status: int, headers: Mapping[str, str], message: str, now: float, code: str = "") -> UpstreamFailure:
    """The meaning of an HTTP status from any provider (RELIABILITY A4)."""
    low = message.lower()
    if status in (401, 403):
        return UpstreamFailure("auth", status, PROVIDER_AUTH_MESSAGE, provider_code=code)
    if status == 429:
        return UpstreamFailure("rate_limited", status, message or "upstream rate limit", parse_retry_after(headers, now), code)
    if status == 408:
        return UpstreamFailure("timeout", status, message or "upstream request timeout", provider_code=code)
    if status == 409 or status >= 500:
        return UpstreamFailure("server", status, message or f"upstream error {status}", parse_retry_after(headers, now), code)
    if status == 404:
        return UpstreamFailure("not_found", status, message or "not found upstream", provider_code=code)
    if "context" in low and ("length" in low or "window" in low) or code == "context_length_exceeded":
        return UpstreamFailure("context_length", status, message, provider_code=code)
    if code == "content_filter" or "content policy" in low or "content_policy" in code:
        return UpstreamFailure("content_filter", status, message, provider_code=code)
    return UpstreamFailure("bad_request", status, message or f"upstream rejected the request ({status})", provider_code=code)


def salvage_buffered(resp: aiohttp.ClientResponse) -> bytes:
    """Bytes aiohttp had buffered when the connection broke.

    aiohttp raises a lost connection's error before handing out what it already read
    (aio-libs/aiohttp#3026), so the last tokens an upstream did send would be lost; RELIABILITY
    A6 needs them delivered and metered. Uses the StreamReader's private _read_nowait.
    """
    take = getattr(resp.content, "_read_nowait", None)
    try:
        rest = take(-1) if take is not None else b""
    except (RuntimeError, TypeError, ValueError):
        return b""
    return rest if isinstance(rest, bytes) else b""


class ReadWatch:
    """One stream's read limits (first token, idle gap, the attempt's end) on one timer per
    stream, instead of an asyncio.timeout (a TimerHandle made, pushed on the loop's heap and
    cancelled) around every read: with a token per read that cost more than the token's parse.

    The reader marks each wait: `since = loop.time()` before it, `since = None` after (two
    stores). The timer fires no earlier than the current wait's limit could end; finding the
    wait younger than that (data came in between), or no wait under way (the consumer is busy,
    which the limits never counted), it re-arms or leaves the next wait to arm it. A wait over
    its limit gets asyncio.TimeoutError from the StreamReader, where the pending read raises
    it, as the cancelled read did under asyncio.timeout. `close()` in the reader's `finally`:
    a timer left armed would keep the response alive until it fires."""

    __slots__ = ("_loop", "_reader", "_end", "limit", "since", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: aiohttp.StreamReader, end: float,
                 limit: float | None) -> None:
        self._loop = loop
        self._reader = reader
        self._end = end  # the attempt's end, on loop.time()
        self.limit = limit  # the longest wait for one read (first-token limit, then the idle limit)
        self.since: float | None = None  # when the wait under way began; None: no wait
        self._handle: asyncio.TimerHandle | None = None

    def wait(self) -> None:
        """A wait for upstream data begins."""
        now = self.since = self._loop.time()
        if self._handle is None:
            limit = self.limit
            self._handle = self._loop.call_at(min(now + limit, self._end) if limit else self._end, self._fire)

    def relimit(self, limit: float | None) -> None:
        """The per-read limit changes (the first token came): a timer armed for the old one is
        dropped so a shorter new one is not missed."""
        self.limit = limit
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        since = self.since
        if since is None:
            return  # no wait under way: the next one arms the timer
        limit = self.limit
        end = min(since + limit, self._end) if limit else self._end
        if self._loop.time() >= end:
            self._reader.set_exception(asyncio.TimeoutError())
        else:
            self._handle = self._loop.call_at(end, self._fire)

    def close(self) -> None:
        self.since = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


MAX_ANSWER_BYTES = 32 * 1024 * 1024  # a whole answer; RELIABILITY E10 wants a bound, not a size
MAX_ERROR_BYTES = 64 * 1024  # enough of an error body to read the provider's message; the rest is dropped


def buffered_answer(resp: aiohttp.ClientResponse, cap: int = MAX_ANSWER_BYTES) -> bytes | None:
    """read_capped() without its coroutine when the whole answer is in (the usual case: it came
    with the headers); None, with nothing read, while more is to come (await read_capped())."""
    content = resp.content
    if not content.is_eof():
        return None
    length = resp.content_length
    if length is not None and length > cap:
        raise UpstreamFailure("protocol", resp.status, f"upstream answer larger than {cap} bytes")
    piece = content.read_nowait()
    if len(piece) > cap:
        raise UpstreamFailure("protocol", resp.status, f"upstream answer larger than {cap} bytes")
    return piece


async def read_capped(resp: aiohttp.ClientResponse, cap: int = MAX_ANSWER_BYTES) -> bytes:
    """A whole (non-streamed) upstream answer, refused past `cap` (RELIABILITY E10: bounded memory)."""
    length = resp.content_length
    if length is not None and length > cap:
        raise UpstreamFailure("protocol", resp.status, f"upstream answer larger than {cap} bytes")
    content = resp.content
    # What is already buffered (usually the whole answer, read with its headers) is taken
    # without a coroutine per read; only an empty buffer short of EOF waits.
    piece = content.read_nowait()
    if piece and content.at_eof():
        if len(piece) > cap:
            raise UpstreamFailure("protocol", resp.status, f"upstream answer larger than {cap} bytes")
        return piece
    # A long answer grows one buffer, not a list of read-sized pieces: the pieces are freed as
    # they are copied, and a large buffer is its own mapping, given back whole when it is
    # dropped (a list of pieces left the process ~65 MB larger after an endless body, E10).
    buf = bytearray(piece)
    while True:
        if len(buf) > cap:
            # Dropped before raising: the exception's traceback keeps this frame, and with it the
            # buffer, alive for as long as a caller holds the failure (a retry, the route log).
            del buf, piece
            raise UpstreamFailure("protocol", resp.status, f"upstream answer larger than {cap} bytes")
        piece = content.read_nowait()
        if not piece:
            if content.at_eof():
                return bytes(buf)
            piece = await content.readany()
            if not piece:
                return bytes(buf)
        buf += piece


Classifier = Callable[[int, Mapping[str, str], bytes], UpstreamFailure]


# --- one attempt: deadlines, the head, the body --------------------------------------------


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
            return await _read_capped(resp, MAX_ANSWER_BYTES)
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


async def request_json(call: Call, method: str, url: str, body: bytes | None, headers: dict[str, str],
                       classify: Classifier) -> dict[str, Any]:
    """One non-streamed attempt whose answer is a JSON object (Gemini's and Ollama's APIs)."""
    check_key(call.api_key)
    dl = Deadlines.start(call, stream=False)
    label = dl.next_read()[1]
    async with AsyncExitStack() as stack:
        resp = await send(stack, call, method, url, data=body, headers=headers, until=dl.end, label=label,
                          classify=classify)
        raw = await read_body(resp, dl.end, label)
    return parse_json_object(raw, resp.status)


def parse_json_object(raw: bytes, status: int) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFailure("protocol", status, "response is not JSON") from None
    if not isinstance(obj, dict):
        raise UpstreamFailure("protocol", status, "response is not a JSON object")
    return obj


# --- one attempt, reading a stream piece by piece (Anthropic) ---------------------------------


def _protocol_failure(message: str) -> UpstreamFailure:
    return UpstreamFailure("protocol", 0, message)


async def open_response(
    call: Call, method: str, url: str, payload: bytes | None, headers: dict[str, str], deadline: float, why: str
) -> aiohttp.ClientResponse:
    """Sends one request and waits for the response headers, by `deadline`; the caller owns the response."""
    try:
        async with asyncio.timeout_at(deadline):
            return await call.session.request(method, url, data=payload, headers=headers, allow_redirects=False)
    except TimeoutError:
        raise UpstreamFailure("timeout", 0, why) from None
    except (aiohttp.ClientError, OSError) as exc:
        # `from None` and only the class name: aiohttp's exceptions carry the request headers
        # (the key among them) in request_info, and nothing may reach a log with it.
        raise UpstreamFailure("connect", 0, f"could not reach the upstream ({type(exc).__name__})") from None


async def read_bounded(resp: aiohttp.ClientResponse, deadline: float, why: str, *, error: bool = False) -> bytes:
    """The whole body, bounded: an error body is truncated, an answer over the cap is a failure."""
    cap = MAX_ERROR_BYTES if error else MAX_ANSWER_BYTES
    if not error and resp.content_length is not None and resp.content_length > cap:
        raise _protocol_failure(f"the upstream's answer is larger than {cap} bytes")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            while data := await resp.content.readany():
                size += len(data)
                if size > cap:
                    if not error:
                        parts.clear()  # the traceback keeps this frame: not the pieces too (E10)
                        raise _protocol_failure(f"the upstream's answer is larger than {cap} bytes")
                    parts.append(data[: cap - (size - len(data))])
                    break
                parts.append(data)
    except TimeoutError:
        raise UpstreamFailure("timeout", 0, why) from None
    except (aiohttp.ClientError, OSError):
        if error:
            return b"".join(parts)  # the status already says what happened
        raise _protocol_failure("the upstream closed the connection mid-answer") from None
    return b"".join(parts)


async def read_or_cut(resp: aiohttp.ClientResponse, limit: float, why: str) -> tuple[bytes, bool]:
    """One read of the stream: (bytes, False), (b"", False) at a clean end, (bytes, True) when cut."""
    try:
        async with asyncio.timeout_at(limit):
            return await resp.content.readany(), False
    except TimeoutError:
        raise UpstreamFailure("timeout", 0, why) from None
    except (aiohttp.ClientError, OSError):
        # What the upstream did send before the cut still reaches the caller (A6).
        return salvage_buffered(resp), True


async def drain(resp: aiohttp.ClientResponse, deadline: float, after_end_s: float) -> bool:
    """Reads to the end after the answer's last event; True when the connection can go back to the pool."""
    if resp.content.at_eof():
        return True
    remaining = min(after_end_s, deadline - asyncio.get_running_loop().time())
    if remaining <= 0:
        return False
    try:
        async with asyncio.timeout(remaining):
            while await resp.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False
    return True
