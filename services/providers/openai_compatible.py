"""The OpenAI Chat Completions wire format: OpenAI and every provider that speaks it.

The hot path of the default deployment: request JSON is built from a template dict, stream
bodies are parsed per read with the shared SSE parser, and only the fields the core needs
are looked at. The upstream is always asked for stream usage so every stream is metered
from the provider's own count; whether the caller sees a usage chunk is decided later (D3).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, AsyncIterator

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from services.core.errors import UpstreamFailure
from services.core.types import (
    ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Message, ToolCall, ToolCallDelta, Usage, token_count,
)
from services.providers.base import MAX_SKIPPED_EVENTS, Call, MalformedEvent, skip_malformed  # noqa: F401 (re-exported)
from services.providers.transport import (
    ReadWatch, bearer_headers, buffered_answer, classify_status, read_capped, salvage_buffered, transport_failure,
    versioned_native_url,
)
from services.providers.sse import SSEParser

FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
          "content_filter": "content_filter", "eos": "stop", "end_turn": "stop"}
EMBEDDINGS_MAX_BYTES = 256 * 1024 * 1024  # 2,048 inputs × 3,072 floats as JSON is ~60 MB
MAX_EVENT_BYTES = 1024 * 1024  # RELIABILITY E10: a 1 MB stream line is refused, not relayed
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# Headers go to aiohttp as a read-only multidict: it copies a multidict's items as they are, a
# dict it first converts into one, per request; read-only because one object serves them all.
_JSON_HEADERS = CIMultiDictProxy(CIMultiDict(JSON_HEADERS))
# A stream's request: no aiohttp timeout at all (see stream_chat), as ClientTimeout(total=t)
# had no other field set either.
_STREAM_TIMEOUT = aiohttp.ClientTimeout()
CACHE_MAX = 4096  # per-target entries (URLs, key headers, timeouts); users' own keys come and go


class OpenAIAdapter:
    kind = "openai"
    # Seed 003's pass-through: the key as a Bearer token, paths below the versioned base URL.
    native_headers = staticmethod(bearer_headers)
    native_url = staticmethod(versioned_native_url)

    def __init__(self) -> None:
        # Built once per base URL, key or timeout rather than once per request: what they are
        # made from is fixed per target, and each is immutable, so one object serves every request.
        self._urls: dict[tuple[str, str], str] = {}
        self._headers: dict[str, CIMultiDictProxy[str]] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def headers(self, call: Call) -> CIMultiDictProxy[str]:
        key = call.api_key
        if not key:
            return _JSON_HEADERS
        h = self._headers.get(key)
        if h is None:
            h = CIMultiDictProxy(CIMultiDict({**JSON_HEADERS, "Authorization": "Bearer " + key}))
            if not call.target.owner:  # a user's own key is never kept past its request (UserKeys)
                _remember(self._headers, key, h)
        return h

    def url(self, call: Call, path: str) -> str:
        base = call.target.base_url
        u = self._urls.get((base, path))
        if u is None:
            u = base.rstrip("/") + path
            _remember(self._urls, (base, path), u)
        return u

    def timeout(self, call: Call) -> aiohttp.ClientTimeout:
        """The try's total timeout. Shared only when it is the target's own (the usual case): one
        cut short by the request's deadline has a value of its own, not worth keeping."""
        total = call.timeout_s
        t = self._timeouts.get(total)
        if t is None:
            t = aiohttp.ClientTimeout(total=total)
            if total == call.target.timeout_s:
                _remember(self._timeouts, total, t)
        return t

    async def chat(self, req: ChatRequest, call: Call) -> ChatResult:
        body = build_body(req, call.target.model, stream=False)
        try:
            # What `async with session.post(...)` does, without its four coroutines per request:
            # the response awaited, then released and waited for on the way out, as __aexit__ does.
            resp = await call.session.post(self.url(call, "/chat/completions"), data=orjson.dumps(body),
                                           headers=self.headers(call), timeout=self.timeout(call),
                                           allow_redirects=False)
            try:
                raw = buffered_answer(resp)
                if raw is None:
                    raw = await read_capped(resp)
                if resp.status != 200:
                    raise self.classify(resp.status, resp.headers, raw)
            finally:
                resp.release()
                await resp.wait_for_close()
        except UpstreamFailure:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise transport_failure(e) from None
        return parse_completion(raw, call.target.model)

    async def stream_chat(self, req: ChatRequest, call: Call) -> AsyncIterator[list[Chunk]]:
        body = build_body(req, call.target.model, stream=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout_s
        parser = SSEParser(max_event_bytes=MAX_EVENT_BYTES)
        done = finished = False
        skipped = 0
        # An asyncio.timeout around the yields below would cancel the consumer's code instead
        # (async generator hazard). The first-token and idle limits and the attempt's end apply
        # to each wait for data (ReadWatch: one timer per stream, not one per read), never to the
        # time the consumer takes with what was read. Until the head is in, the router's
        # first-token timeout (at most the attempt's time) bounds the try. So no aiohttp total
        # timeout (_STREAM_TIMEOUT): its timer context entered around every read (a current-task
        # lookup, a list append and remove) bounded nothing those do not.
        try:
            async with call.session.post(self.url(call, "/chat/completions"), data=orjson.dumps(body),
                                         headers=self.headers(call), timeout=_STREAM_TIMEOUT,
                                         allow_redirects=False) as resp:
                if resp.status != 200:
                    raise self.classify(resp.status, resp.headers, await resp.content.read(65536))
                first = True
                content = resp.content
                watch = ReadWatch(loop, content, deadline, call.first_token_timeout_s)
                try:
                    while True:
                        # readany hands out what is buffered without waiting; only an empty
                        # buffer waits, and that wait is what the watch times.
                        cut: BaseException | None = None
                        watch.wait()
                        try:
                            data = await content.readany()
                        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                            data, cut = salvage_buffered(resp), e  # deliver what arrived before the cut (A6)
                        watch.since = None
                        eof = not data and cut is None
                        batch: list[Chunk] = []
                        # At a clean end the parser gives up its unterminated last event (some
                        # upstreams omit the blank line after the final `data: [DONE]`).
                        for ev in [e.data for e in parser.close()] if eof else parser.feed_data(data):
                            if ev == b"[DONE]":
                                done = True
                                continue
                            try:
                                chunk = parse_stream_event(ev)
                            except MalformedEvent:
                                skipped = skip_malformed(skipped, call.target.provider)
                                continue
                            if chunk is not None:
                                if chunk.finish_reason:
                                    finished = True
                                batch.append(chunk)
                                if first and (chunk.text or chunk.tool_calls):
                                    # The first token leaves before the rest of this read is parsed:
                                    # TTFT is the one latency a streaming user sees.
                                    first = False
                                    watch.relimit(call.idle_timeout_s)
                                    yield batch
                                    batch = []
                        if batch:
                            if first:
                                first = False
                                watch.relimit(call.idle_timeout_s)
                            yield batch
                        if done:
                            return
                        if cut is not None:
                            raise cut
                        if eof:
                            break
                finally:
                    watch.close()
        except UpstreamFailure:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise transport_failure(e) from None
        except ValueError:  # the SSE parser's event-size limit (RELIABILITY E10)
            raise UpstreamFailure("protocol", 200, "upstream stream event larger than the limit") from None
        if not done and not finished:
            # A clean end after a finish_reason is a whole answer whose `[DONE]` was left off
            # (Failover Bench S11): the caller gets its own end marker and the row is metered as
            # usual. Without a finish_reason the answer was cut short: a failure (A6).
            raise UpstreamFailure("protocol", 200, "upstream stream ended before its finish_reason")

    async def embed(self, req: EmbedRequest, call: Call) -> EmbedResult:
        body: dict[str, Any] = {"model": call.target.model, "input": req.inputs}
        if req.dimensions:
            body["dimensions"] = req.dimensions
        try:
            async with call.session.post(self.url(call, "/embeddings"), data=orjson.dumps(body),
                                         headers=self.headers(call), timeout=self.timeout(call),
                                         allow_redirects=False) as resp:
                raw = await read_capped(resp, EMBEDDINGS_MAX_BYTES)
                if resp.status != 200:
                    raise self.classify(resp.status, resp.headers, raw)
            data = orjson.loads(raw)
            items = sorted(data["data"], key=lambda d: d.get("index", 0))
            vectors = [_vector(item["embedding"]) for item in items]
        except UpstreamFailure:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise transport_failure(e) from None
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
            # ValueError: base64 that is not (binascii.Error is one)
            raise UpstreamFailure("protocol", 200, "upstream sent malformed embeddings") from None
        model = data.get("model")
        return EmbedResult(vectors, parse_usage(data.get("usage")), model if type(model) is str and model else call.target.model)

    async def list_models(self, call: Call) -> list[str]:
        url = call.target.base_url.rstrip("/") + "/models"
        async with call.session.get(url, headers=self.headers(call)) as resp:
            raw = await read_capped(resp)
            if resp.status != 200:
                raise self.classify(resp.status, resp.headers, raw)
        return [m["id"] for m in orjson.loads(raw).get("data", [])]

    def classify(self, status: int, headers: Any, body: bytes) -> UpstreamFailure:
        message, code = "", ""
        try:
            err = orjson.loads(body).get("error")
            if isinstance(err, dict):
                message = str(err.get("message") or "")
                code = str(err.get("code") or err.get("type") or "")
            elif isinstance(err, str):
                message = err
        except (orjson.JSONDecodeError, AttributeError):
            message = ""
        return classify_status(status, headers, message[:2000], time.time(), code)


def parse_usage(u: Any) -> Usage:
    if not isinstance(u, dict):
        return Usage(estimated=True)
    details = u.get("prompt_tokens_details")
    cdetails = u.get("completion_tokens_details")
    return Usage(  # positional: prompt, completion, estimated, cached, reasoning
        token_count(u.get("prompt_tokens")),
        token_count(u.get("completion_tokens")),
        False,
        token_count(details.get("cached_tokens")) if details and isinstance(details, dict) else 0,
        token_count(cdetails.get("reasoning_tokens")) if cdetails and isinstance(cdetails, dict) else 0,
    )


def _remember(cache: dict, key: Any, value: Any) -> None:
    if len(cache) >= CACHE_MAX:
        cache.clear()  # bounded: a rare full rebuild beats tracking use
    cache[key] = value


def parse_stream_event(data: bytes) -> Chunk | None:
    # Called once per streamed token: a positional Chunk() instead of keywords, and d.get(k)
    # called in place (3.11 calls a method without building a bound one; `get = d.get` builds one).
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedEvent from None
    if type(obj) is not dict:  # orjson makes exact dicts
        raise MalformedEvent
    try:
        choices = obj.get("choices")
        if not choices and "error" in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
            raise UpstreamFailure("server", 200, str(err.get("message") or "upstream error mid-stream"))
        u = obj.get("usage")
        usage = parse_usage(u) if u else None
        if not choices:
            return Chunk(usage=usage) if usage else None
        choice = choices[0]
        delta = choice.get("delta") or _EMPTY
        content = delta.get("content")
        if content is not None and type(content) is not str:
            raise TypeError
        finish = choice.get("finish_reason")
        finish = FINISH.get(finish, "") if finish else ""
        if content is not None and len(delta) == 1:
            return Chunk(content or "", "", "", [], finish, usage)  # {"content": …}: a token, no other key to look up
        tcs = delta.get("tool_calls")
        chunk = Chunk(
            content or "",
            _said(delta.get("role")),
            _said(delta.get("reasoning_content") or delta.get("reasoning")),
            [],
            finish,
            usage,
        )
        if tcs:
            chunk.tool_calls = [
                ToolCallDelta(_index(tc.get("index", 0)), _text(tc.get("id")), _text((tc.get("function") or _EMPTY).get("name")),
                              _text((tc.get("function") or _EMPTY).get("arguments")))
                for tc in tcs
            ]
        return chunk
    except (KeyError, IndexError, TypeError, AttributeError):
        # A value of the wrong type (a number for the text, a string for the choices): the event
        # is malformed, skipped like one that is not JSON (E3), never a crash further in.
        raise MalformedEvent from None


def parse_completion(raw: bytes, model: str) -> ChatResult:
    """A whole chat completion; any value of the wrong type is the upstream's protocol error (a
    502 and the next candidate), never a crash further in. `model`: the routed one, for an answer
    that names none."""
    try:
        data = orjson.loads(raw)
        choice = data["choices"][0]
        msg = choice.get("message") or _EMPTY
        tcs = msg.get("tool_calls")
        calls = [_tool_call(tc) for tc in tcs] if tcs else []
        finish = choice.get("finish_reason")
        return ChatResult(
            _text(msg.get("content")),  # positional, in field order: text, finish_reason, usage, ...
            FINISH.get(finish, "stop") if type(finish) is str else "stop",
            parse_usage(data.get("usage")),
            calls,
            _said(msg.get("reasoning_content") or msg.get("reasoning")),
            m if type(m := data.get("model")) is str and m else model,
            i if type(i := data.get("id")) is str else "",
        )
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamFailure("protocol", 200, "upstream sent a malformed completion") from None


def _text(v: Any) -> str:
    """A text field: a string, or nothing (None); anything else is the upstream's error."""
    if type(v) is str:
        return v
    if v is None:
        return ""
    raise TypeError


def _said(v: Any) -> str:
    """A text that only informs (a role, the reasoning): left out when it is not a string."""
    return v if type(v) is str else ""


def _index(v: Any) -> int:
    if type(v) is int:
        return v
    if v is None:  # some servers send "index": null for a single call
        return 0
    raise TypeError


def _tool_call(tc: Any) -> ToolCall:
    fn = tc.get("function") or _EMPTY
    args = fn.get("arguments")
    if type(args) in (dict, list):  # some servers send the arguments as JSON, not as its text
        args = orjson.dumps(args).decode()
    return ToolCall(_text(tc.get("id")), _text(fn.get("name")), _text(args))


_EMPTY: dict[str, Any] = {}


def build_body(req: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in req.messages]}
    s = req.sampling
    if s.temperature is not None:
        body["temperature"] = s.temperature
    if s.top_p is not None:
        body["top_p"] = s.top_p
    if s.max_tokens is not None:
        body["max_tokens"] = s.max_tokens
    if s.stop:
        body["stop"] = s.stop
    if s.seed is not None:
        body["seed"] = s.seed
    if s.presence_penalty is not None:
        body["presence_penalty"] = s.presence_penalty
    if s.frequency_penalty is not None:
        body["frequency_penalty"] = s.frequency_penalty
    if s.response_format == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif s.response_format == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": s.json_schema or {}}
    if req.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters or {"type": "object", "properties": {}}}}
            for t in req.tools
        ]
        if s.tool_choice in ("auto", "none", "required"):
            body["tool_choice"] = s.tool_choice
        elif s.tool_choice:
            body["tool_choice"] = {"type": "function", "function": {"name": s.tool_choice}}
        if s.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = s.parallel_tool_calls
    if req.user:
        body["user"] = req.user
    if s.reasoning_effort:
        body["reasoning_effort"] = s.reasoning_effort
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.parts:
        parts: list[dict[str, Any]] = []
        for p in m.parts:
            if p.type == "text":
                parts.append({"type": "text", "text": p.text})
            else:
                url = p.image_url or f"data:{p.media_type or 'image/png'};base64,{base64.b64encode(p.data).decode()}"
                img: dict[str, Any] = {"url": url}
                if p.detail:
                    img["detail"] = p.detail
                parts.append({"type": "image_url", "image_url": img})
        out["content"] = parts
    else:
        out["content"] = m.text if (m.text or not m.tool_calls) else None
    if m.name:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [{"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments or "{}"}} for tc in m.tool_calls]
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
    return out


def _vector(e: Any) -> list[float]:
    """An embedding: a list of numbers, or base64 of float32s; anything else is a TypeError (the
    upstream's protocol error), not a crash where the vector is copied out."""
    if type(e) is list:
        for x in e:
            if type(x) is not float and type(x) is not int:
                raise TypeError
        return e
    if type(e) is str:
        return _b64_floats(e)
    raise TypeError


def _b64_floats(s: str) -> list[float]:
    import array

    arr = array.array("f")
    arr.frombytes(base64.b64decode(s, validate=True))  # not base64, or not whole float32s: ValueError
    if not arr:
        raise ValueError("an empty embedding")
    return arr.tolist()
