"""Shared pieces of upstream error handling: transport failures and status classification.

Each adapter classifies its own provider's error bodies; what is common to every HTTP
upstream (connection errors, timeouts, the meaning of a status code) lives here once.
"""

from __future__ import annotations

import asyncio
from typing import Mapping

import aiohttp

from services.core.errors import UpstreamFailure
from services.routing.retry_after import parse_retry_after

PROVIDER_AUTH_MESSAGE = "provider rejected the gateway's key"


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


MAX_ANSWER_BYTES = 32 * 1024 * 1024


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
