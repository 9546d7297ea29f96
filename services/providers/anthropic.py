"""AnthropicAdapter: Anthropic's Messages API (POST /v1/messages, GET /v1/models) over a shared session.

The wire translation is in anthropic_codec.py, the HTTP reads and their failures in transport.py;
this module sequences an attempt: deadlines per attempt, first token and idle gap, closing the
upstream on cancellation. It keeps no per-request state, so one instance serves every request.
Anthropic has no embeddings API.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Mapping

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
from services.providers.transport import drain, native_join, open_response, read_bounded, read_or_cut

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


def _send(call: Call, method: str, path: str, payload: bytes | None, accept: str, deadline: float,
          why: str) -> Awaitable[aiohttp.ClientResponse]:
    # A plain function handing back transport's coroutine: no coroutine of ours in between.
    url = call.target.base_url.rstrip("/") + path
    return open_response(call, method, url, payload, _headers(call.api_key, accept), deadline, why)


class AnthropicAdapter:
    kind = "anthropic"

    def __init__(self, clock: Clock | None = None) -> None:
        # Only for HTTP-date Retry-After values; deadlines run on the event loop's clock.
        self._clock = clock or SystemClock()

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        return classify_error(status, headers, body, self._clock.now())

    @staticmethod
    def native_headers(headers: dict[str, str], secret: str) -> None:
        """Seed 003's pass-through: the key in `x-api-key`, and the API version when the caller named none."""
        headers.setdefault("anthropic-version", API_VERSION)
        if secret:
            headers["x-api-key"] = secret

    @staticmethod
    def native_url(base_url: str, path: str, query: str) -> str:
        """The base is the bare origin: a path without a version gets `v1/`, so seed 003's
        `/v1/anthropic/messages` and an SDK's `/v1/anthropic/v1/messages` reach the same place."""
        if not path.startswith("v1/"):
            path = "v1/" + path
        return native_join(base_url, path, query)

    async def chat(self, req: ChatRequest, call: Call) -> ChatResult:
        payload = orjson.dumps(build_messages_body(req, call.target.model, stream=False))
        deadline = asyncio.get_running_loop().time() + call.timeout_s
        why = f"the upstream did not answer within {call.timeout_s:g} s"
        resp = await _send(call, "POST", "/v1/messages", payload, "application/json", deadline, why)
        async with resp:  # releases the connection, or closes it when the body was not read to the end
            if resp.status != 200:
                raise self.classify(resp.status, resp.headers, await read_bounded(resp, deadline, why, error=True))
            body = await read_bounded(resp, deadline, why)
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
                    body = await read_bounded(resp, deadline, total_why, error=True)
                    raise self.classify(resp.status, resp.headers, body)
                parser = SSEParser()
                translator = StreamTranslator(call.target.provider)
                got_first = False
                while not translator.done:
                    # RELIABILITY A5/A6: first-token, idle and total limits, whichever comes first.
                    limit, why = (deadline, total_why) if got_first else (first_deadline, first_why)
                    if call.idle_timeout_s is not None:
                        idle_end = asyncio.get_running_loop().time() + call.idle_timeout_s
                        if idle_end < limit:
                            limit, why = idle_end, f"no data from the upstream for {call.idle_timeout_s:g} s"
                    data, broken = await read_or_cut(resp, limit, why)
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
                        # A clean end after message_delta's stop_reason is a whole answer whose
                        # message_stop was left off (Failover Bench S11): finished and metered from
                        # the provider's usage. Before the stop_reason it is a cut answer (A6).
                        chunks = translator.close()
                        if chunks:
                            yield chunks
                        if not translator.done:
                            raise _protocol("the upstream ended the stream before its stop_reason (message_stop)")
                clean = await drain(resp, deadline, DRAIN_AFTER_STOP_S)
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
                    raise self.classify(resp.status, resp.headers, await read_bounded(resp, deadline, why, error=True))
                body = await read_bounded(resp, deadline, why)
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
