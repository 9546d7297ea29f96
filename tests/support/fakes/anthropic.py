"""A wire-faithful fake of Anthropic's API (Messages, Models) as an aiohttp app on 127.0.0.1.

Shapes follow the Messages API reference (`anthropic-version: 2023-06-01`) closely enough that the
official `anthropic` SDK parses every answer and stream with strict validation (tests prove it).
The key is checked from `x-api-key` or `Authorization: Bearer` (what the SDK sends), and
`anthropic-version` is required. Requests are validated like the real API does (unknown fields,
alternation, tool_use/tool_result pairing, image sources, ranges), so a translation bug gets
the same 400 it would get upstream.

Answers are deterministic. A normal model echoes the last user turn's text, one whitespace word
per token: `input_tokens` = words in system and messages (text, tool_result text, tool_use input
JSON; images count 0), `output_tokens` = words emitted. `max_tokens` truncates (stop_reason
max_tokens), a stop sequence in the echo cuts it (stop_sequence). The model name picks a fault:

    fault-503-xN          the first N requests for this model get 503 api_error, then normal
    fault-500 / -503      always 500 / 503 api_error         fault-529   529 overloaded_error
    fault-429             429 rate_limit_error, no Retry-After
    fault-429-retry-N     ... with `retry-after: N`;  fault-429-retry-ms-N  `retry-after-ms: N`
    fault-429-date-N      ... with `retry-after` as an HTTP-date N s ahead
    fault-400 / -401 / -403 / -404 / -413     the documented error type for that status
    fault-context         400 "prompt is too long: ..." (context window)
    fault-cut-after-N     stream: N text deltas, then the TCP connection is closed mid-body
                          (unary: half the JSON, then closed)
    fault-eof-after-N     stream: N text deltas, then a clean end of body without message_stop
    fault-stall-after-N   stream: N text deltas, then silence until the client leaves
    fault-error-event[-after-N]  stream: N (default 1) deltas, then `event: error` overloaded_error
                          (unary: 529 overloaded_error)
    fault-bad-json[-after-N]     stream: N (default 1) deltas, then an event whose data is not JSON
                          (unary: a 200 body that is not JSON)
    fault-glitch-after-N  stream: N text deltas, a content_block_delta event whose JSON is cut
                          short, then the rest of the answer as usual (Failover Bench S10)
    fault-no-stop         stream: the whole answer through message_delta (stop_reason, usage),
                          then a clean end of body without message_stop (Failover Bench S11)
    fault-unterminated    stream: message_stop's frame lacks its closing blank line
    fault-slow-first-S    the first event (unary: the response) comes after S seconds (float)
    fault-slow-tokens-MS  MS milliseconds between stream events
    fault-trickle         stream written a few bytes per write (events split across reads)
    fault-tool            a text block, then a tool_use block calling the first tool given with
                          {"x": 1}; stop_reason tool_use (400 if no tools were given)
    fault-thinking        a thinking block (with signature), then the echo
    fault-refusal         a short text and stop_reason refusal
    fault-cache-read-N    the echo, reporting N cache_read_input_tokens

Stream-only faults not listed for unary answer normally there. `FakeAnthropic.stream_pause_s`
paces every stream (e.g. to cut while a client is busy). Use `run_fake_anthropic()`;
`make_fake_anthropic_app(fake)` builds the bare web.Application.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate
from time import time
from typing import Any

import orjson
from aiohttp import web

FAKE_ANTHROPIC_KEY = "fake-anthropic-key-0123456789"
DEFAULT_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6")
# Dated versions: 2023-06-01 is the documented one; the SDK sends its own, newer date.
_API_VERSION = re.compile(r"^20[2-9][0-9]-[01][0-9]-[0-3][0-9]$")
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # Anthropic's documented Messages request limit
STALL_S = 3600.0

_TOP_LEVEL = frozenset(
    {
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
        "container", "mcp_servers", "context_management", "inference_geo", "output_config",
    }
)
_USER_BLOCKS = frozenset({"text", "image", "tool_result", "document", "search_result"})
_ASSISTANT_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking", "server_tool_use"})
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_FAULT_N = re.compile(
    r"^fault-(?P<name>503-x|429-retry-ms-|429-retry-|429-date-|cut-after-|eof-after-|stall-after-"
    r"|error-event-after-|bad-json-after-|glitch-after-|slow-first-|slow-tokens-|cache-read-)(?P<n>\d+(?:\.\d+)?)$"
)
_FAULT = re.compile(
    r"^fault-(?P<name>500|503|529|429|400|401|403|404|413|context|error-event|bad-json|trickle|tool|thinking|refusal"
    r"|no-stop|unterminated)$"
)
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}


@dataclass(slots=True)
class RecordedRequest:
    """One request as the fake received it (also the rejected ones)."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON; None for a GET or a body that is not JSON
    peer: tuple[str, int] | None  # the client's address: equal for requests on one kept-alive connection

    @property
    def model(self) -> str:
        return str(self.body.get("model", "")) if isinstance(self.body, dict) else ""


@dataclass(slots=True)
class _Plan:
    blocks: list[dict[str, Any]]  # final content blocks, in order
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int
    cache_read: int = 0


class _Stop(Exception):
    """The handler ends the stream itself (a fault); not a client disconnect."""


class FakeAnthropic:
    """State of one fake upstream: what it received, and how streaming clients behaved.

    `disconnected` is set, and `streams_cancelled` counts up, when a streaming client goes away
    before the stream ended; `open_streams` is how many streams are being written right now and
    `open_connections` how many TCP connections are open to the fake.
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = (FAKE_ANTHROPIC_KEY,),
        models: Sequence[str] = DEFAULT_MODELS,
        strict_alternation: bool = True,
    ) -> None:
        self.api_keys = set(api_keys)
        self.models = list(models)
        self.strict_alternation = strict_alternation
        # Seconds between the events of every stream (fault-slow-tokens-MS sets it per request);
        # lets a test pace a fault such as fault-cut-after-N.
        self.stream_pause_s = 0.0
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.open_streams = 0
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_cancelled = 0
        self.disconnected = asyncio.Event()
        self._attempts: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self._runner: web.AppRunner | None = None

    @property
    def message_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of POST /v1/messages, in order."""
        return [r.body for r in self.requests if r.path == "/v1/messages" and isinstance(r.body, dict)]

    @property
    def last_body(self) -> dict[str, Any]:
        return self.message_bodies[-1]

    @property
    def open_connections(self) -> int:
        return len(self._runner.server.connections) if self._runner and self._runner.server else 0

    def reset(self) -> None:
        """Forget requests, counters and fault attempts (between scenarios sharing one fake)."""
        self.requests.clear()
        self._attempts.clear()
        self._seq.clear()
        self.streams_started = self.streams_completed = self.streams_cancelled = 0
        self.disconnected.clear()

    async def wait_disconnected(self, timeout: float = 1.0) -> bool:
        try:
            await asyncio.wait_for(self.disconnected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _client_left(self) -> None:
        self.streams_cancelled += 1
        self.disconnected.set()

    def _next_id(self, prefix: str) -> str:
        self._seq[prefix] = n = self._seq.get(prefix, 0) + 1
        return f"{prefix}_fake_{n:06d}"


def make_fake_anthropic_app(fake: FakeAnthropic) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES + 1024)
    handlers = _Handlers(fake)
    app.router.add_post("/v1/messages", handlers.messages)
    app.router.add_post("/v1/messages/count_tokens", handlers.count_tokens)
    app.router.add_get("/v1/models", handlers.list_models)
    app.router.add_get("/v1/models/{model_id}", handlers.get_model)
    app.router.add_route("*", "/{tail:.*}", handlers.not_found)
    return app


@asynccontextmanager
async def run_fake_anthropic(
    *,
    api_keys: Iterable[str] = (FAKE_ANTHROPIC_KEY,),
    models: Sequence[str] = DEFAULT_MODELS,
    strict_alternation: bool = True,
) -> AsyncIterator[FakeAnthropic]:
    """Starts the fake on 127.0.0.1:<free port>; `.base_url` is the bare origin, as Anthropic documents it."""
    fake = FakeAnthropic(api_keys=api_keys, models=models, strict_alternation=strict_alternation)
    # handler_cancellation: a handler waiting (slow first event, stall) learns at once that its
    # client left, which is what tests of upstream cancellation watch for.
    runner = web.AppRunner(
        make_fake_anthropic_app(fake), handler_cancellation=True, shutdown_timeout=0.5, access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.base_url = f"http://{host}:{port}"
    fake._runner = runner
    try:
        yield fake
    finally:
        fake._runner = None
        await runner.cleanup()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": _STATUS_TYPES.get(status, "api_error"), "message": message}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _presented_key(headers: dict[str, str]) -> str | None:
    # `x-api-key` is the documented header for API keys; the anthropic SDK (2.x) sends its api_key
    # as `Authorization: Bearer`, which the API also takes. Either one is checked.
    key = headers.get("x-api-key")
    if key is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    return key


def _words(text: str) -> int:
    return len(text.split())


class _Handlers:
    def __init__(self, fake: FakeAnthropic) -> None:
        self.fake = fake

    # --- plumbing ------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> tuple[RecordedRequest, web.Response | None]:
        try:
            raw = await request.read() if request.can_read_body else b""
        except web.HTTPRequestEntityTooLarge:
            raw = b""
            too_large = True
        else:
            too_large = len(raw) > MAX_REQUEST_BYTES
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad_json = True
        peer = request.transport.get_extra_info("peername") if request.transport else None
        rec = RecordedRequest(
            method=request.method,
            path=request.path_qs,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            peer=tuple(peer[:2]) if peer else None,
        )
        self.fake.requests.append(rec)
        if _presented_key(rec.headers) not in self.fake.api_keys:
            return rec, _error(401, "invalid x-api-key")
        version = rec.headers.get("anthropic-version")
        if version is None:
            return rec, _error(400, "anthropic-version: header is required")
        if not _API_VERSION.match(version):
            return rec, _error(400, f"anthropic-version: {version!r} is not a valid version")
        if too_large:
            return rec, _error(413, "Request exceeds the maximum allowed number of bytes.")
        if bad_json or (request.method == "POST" and not isinstance(body, dict)):
            return rec, _error(400, "There was an error parsing the body of your request: expected a JSON object.")
        return rec, None

    def _headers(self) -> dict[str, str]:
        return {"request-id": self.fake._next_id("req")}

    # --- routes --------------------------------------------------------------------------------

    async def not_found(self, request: web.Request) -> web.Response:
        self.fake.requests.append(
            RecordedRequest(request.method, request.path_qs, {k.lower(): v for k, v in request.headers.items()}, None, None)
        )
        return _error(404, f"Not Found: {request.path}")

    async def list_models(self, request: web.Request) -> web.Response:
        _, err = await self._record(request)
        if err is not None:
            return err
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "20"))))
        except ValueError:
            return _error(400, "limit: Input should be a valid integer")
        ids = self.fake.models
        after = request.query.get("after_id")
        if after in ids:
            ids = ids[ids.index(after) + 1 :]
        page = ids[:limit]
        return web.json_response(
            {
                "data": [_model_info(m) for m in page],
                "has_more": len(ids) > limit,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            },
            headers=self._headers(),
        )

    async def get_model(self, request: web.Request) -> web.Response:
        _, err = await self._record(request)
        if err is not None:
            return err
        model_id = request.match_info["model_id"]
        if model_id not in self.fake.models:
            return _error(404, f"model: {model_id}")
        return web.json_response(_model_info(model_id), headers=self._headers())

    async def count_tokens(self, request: web.Request) -> web.Response:
        rec, err = await self._record(request)
        if err is not None:
            return err
        body = dict(rec.body)
        body.setdefault("max_tokens", 1)  # count_tokens takes no max_tokens
        problem = _validate(body, self.fake.strict_alternation)
        if problem:
            return _error(400, problem)
        return web.json_response({"input_tokens": _input_tokens(rec.body)}, headers=self._headers())

    async def messages(self, request: web.Request) -> web.StreamResponse:
        rec, err = await self._record(request)
        if err is not None:
            return err
        body: dict[str, Any] = rec.body
        problem = _validate(body, self.fake.strict_alternation)
        if problem:
            return _error(400, problem)
        model: str = body["model"]
        stream = bool(body.get("stream"))
        fault, n, variant = _parse_fault(model)

        early = self._http_fault(fault, n, variant, model, stream)
        if early is not None:
            return early
        if fault == "tool" and not body.get("tools"):
            return _error(400, "fault-tool needs at least one tool in `tools`")
        plan = _plan(body, fault, n)
        if not stream:
            return await self._unary(request, body, plan, fault, n)
        return await self._stream(request, body, plan, fault, n)

    def _http_fault(self, fault: str, n: float, variant: str, model: str, stream: bool) -> web.Response | None:
        if fault == "503x":  # fault-503-xN: the first N attempts for this model fail
            seen = self.fake._attempts.get(model, 0)
            self.fake._attempts[model] = seen + 1
            return _error(503, "Service unavailable") if seen < n else None
        if fault in ("500", "503"):
            return _error(int(fault), "Internal server error" if fault == "500" else "Service unavailable")
        if fault == "529" or (fault == "error-event" and not stream):
            return _error(529, "Overloaded")
        if fault == "429":
            headers: dict[str, str] = {}
            if variant == "retry-ms":
                headers["retry-after-ms"] = _num(n)
            elif variant == "retry":
                headers["retry-after"] = _num(n)
            elif variant == "date":
                headers["retry-after"] = formatdate(time() + n, usegmt=True)
            return _error(429, "Number of request tokens has exceeded your per-minute rate limit", headers)
        if fault == "context":
            return _error(400, "prompt is too long: 250000 tokens > 200000 maximum")
        if fault == "400":
            return _error(400, "messages: roles must alternate between \"user\" and \"assistant\"")
        if fault == "401":
            return _error(401, "invalid x-api-key")
        if fault == "403":
            return _error(403, "Your API key does not have permission to use the specified resource.")
        if fault == "404":
            return _error(404, f"model: {model}")
        if fault == "413":
            return _error(413, "Request exceeds the maximum allowed number of bytes.")
        return None

    async def _unary(
        self, request: web.Request, body: dict[str, Any], plan: _Plan, fault: str, n: float
    ) -> web.StreamResponse:
        if fault == "slow-first":
            await asyncio.sleep(n)
        message = _message(self.fake._next_id("msg"), body["model"], plan)
        payload = orjson.dumps(message)
        if fault == "bad-json":
            return web.Response(body=b'{"type": "message", "content": [', content_type="application/json")
        if fault == "cut-after":
            resp = web.StreamResponse(headers=self._headers())
            resp.content_type = "application/json"
            resp.content_length = len(payload)
            await resp.prepare(request)
            await resp.write(payload[: len(payload) // 2])
            assert request.transport is not None
            request.transport.close()  # flushes what was written, then FIN: the body is short
            return resp
        return web.Response(body=payload, content_type="application/json", headers=self._headers())

    async def _stream(
        self, request: web.Request, body: dict[str, Any], plan: _Plan, fault: str, n: float
    ) -> web.StreamResponse:
        fake = self.fake
        resp = web.StreamResponse(headers={**self._headers(), "cache-control": "no-cache"})
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
        fake.open_streams += 1
        fake.streams_started += 1
        try:
            await resp.prepare(request)
            if fault == "slow-first":
                await asyncio.sleep(n)
            await self._write_events(request, resp, body, plan, fault, n)
            await resp.write_eof()
            fake.streams_completed += 1
        except _Stop:
            pass
        except asyncio.CancelledError:
            fake._client_left()  # handler_cancellation: the connection was lost while we waited
            raise
        except ConnectionResetError:
            fake._client_left()  # a write found the socket closed
        finally:
            fake.open_streams -= 1
        return resp

    async def _write_events(
        self, request: web.Request, resp: web.StreamResponse, body: dict[str, Any], plan: _Plan, fault: str, n: float
    ) -> None:
        pause = n / 1000.0 if fault == "slow-tokens" else self.fake.stream_pause_s
        limit = int(n) if fault in ("cut-after", "eof-after", "stall-after", "glitch-after") else None
        if fault in ("error-event", "bad-json"):
            limit = int(n) if n else 1
        sent = 0

        async def emit(frame: bytes) -> None:
            if fault == "trickle":
                for i in range(0, len(frame), 5):
                    await resp.write(frame[i : i + 5])
                    await asyncio.sleep(0)
            else:
                await resp.write(frame)
            if pause:
                await asyncio.sleep(pause)

        async def after_delta() -> None:
            nonlocal sent
            sent += 1
            if limit is None or sent < limit:
                return
            if fault == "glitch-after":
                if sent == limit:  # once; the answer goes on
                    await emit(b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
                               b'"delta": {"ty\n\n')
                return
            if fault == "cut-after":
                assert request.transport is not None
                request.transport.close()  # what was written is flushed, then FIN mid-body
                raise _Stop
            if fault == "eof-after":
                await resp.write_eof()
                raise _Stop
            if fault == "stall-after":
                await asyncio.sleep(STALL_S)
            if fault == "error-event":
                await emit(_frame("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
                await resp.write_eof()
                raise _Stop
            if fault == "bad-json":
                await emit(b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {\n\n')
                await resp.write_eof()
                raise _Stop

        start_usage = {
            "input_tokens": plan.input_tokens,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": plan.cache_read,
            "service_tier": "standard",
        }
        message = {
            "id": self.fake._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        await emit(_frame("message_start", {"type": "message_start", "message": message}))
        if limit == 0:
            await after_delta()
        for index, block in enumerate(plan.blocks):
            kind = block["type"]
            if kind == "text":
                start: dict[str, Any] = {"type": "text", "text": ""}
            elif kind == "thinking":
                start = {"type": "thinking", "thinking": "", "signature": ""}
            else:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            await emit(_frame("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
            if index == 0:
                await emit(_frame("ping", {"type": "ping"}))
            if kind in ("text", "thinking"):
                field_name, delta_type = (("text", "text_delta") if kind == "text" else ("thinking", "thinking_delta"))
                for i, word in enumerate(block[field_name].split(" ")):
                    piece = word if i == 0 else " " + word
                    delta = {"type": delta_type, field_name: piece}
                    await emit(_frame("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
                    if kind == "text":
                        await after_delta()
                if kind == "thinking":
                    delta = {"type": "signature_delta", "signature": block["signature"]}
                    await emit(_frame("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
            else:
                text = json.dumps(block["input"])  # spaced like Anthropic's partial_json
                for piece in ("", text[: len(text) // 2], text[len(text) // 2 :]):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    await emit(_frame("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
            await emit(_frame("content_block_stop", {"type": "content_block_stop", "index": index}))
        await emit(
            _frame(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence},
                    "usage": {"output_tokens": plan.output_tokens},
                },
            )
        )
        if fault == "no-stop":
            return
        stop = _frame("message_stop", {"type": "message_stop"})
        await emit(stop[:-1] if fault == "unterminated" else stop)


# --- answers -----------------------------------------------------------------------------------


def _num(n: float) -> str:
    return str(int(n)) if n == int(n) else str(n)


def _parse_fault(model: str) -> tuple[str, float, str]:
    """(fault, number, variant) from a model name; ("", 0, "") for a normal model."""
    m = _FAULT.match(model)
    if m:
        return m["name"], 0.0, ""
    m = _FAULT_N.match(model)
    if not m:
        return "", 0.0, ""
    name, n = m["name"], float(m["n"])
    if name.startswith("429-"):
        return "429", n, name[4:-1]  # "retry", "retry-ms" or "date"
    if name == "503-x":
        return "503x", n, ""
    name = name.removesuffix("-")
    if name in ("error-event-after", "bad-json-after"):
        name = name.removesuffix("-after")
    return name, n, ""


def _model_info(model_id: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id.replace("-", " ").title(),
        "created_at": "2025-01-01T00:00:00Z",
        "lifecycle": "active",
    }


def _block_text(block: dict[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, str):
            return content
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    if kind == "tool_use":
        return orjson.dumps(block.get("input", {})).decode()
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(_block_text(b) for b in content if isinstance(b, dict))


def _input_tokens(body: dict[str, Any]) -> int:
    total = _words(_content_text(body.get("system", "")))
    for msg in body.get("messages", []):
        total += _words(_content_text(msg.get("content", "")))
    return total


def _plan(body: dict[str, Any], fault: str, n: float) -> _Plan:
    last_user = next((m for m in reversed(body["messages"]) if m["role"] == "user"), None)
    echo = " ".join(_content_text(last_user["content"]).split()) if last_user else ""
    echo = echo or "ok"
    stop_reason, stop_sequence = "end_turn", None
    cut = min(
        ((echo.find(s), s) for s in body.get("stop_sequences") or [] if s and echo.find(s) >= 0),
        default=None,
    )
    if cut is not None:
        echo, stop_reason, stop_sequence = echo[: cut[0]].rstrip(), "stop_sequence", cut[1]
    words = echo.split()
    if len(words) > body["max_tokens"]:
        words, stop_reason, stop_sequence = words[: body["max_tokens"]], "max_tokens", None
    blocks: list[dict[str, Any]] = []
    if fault == "thinking":
        blocks.append({"type": "thinking", "thinking": "Let me think about that.", "signature": "sig_fake_0001"})
    if fault == "refusal":
        words, stop_reason, stop_sequence = ["I", "can't", "help", "with", "that."], "refusal", None
    if fault == "tool":
        tool = body["tools"][0]
        words = ["Calling", tool["name"] + "."]
        blocks.append({"type": "text", "text": " ".join(words)})
        blocks.append({"type": "tool_use", "id": _tool_id(body), "name": tool["name"], "input": {"x": 1}})
        stop_reason, stop_sequence = "tool_use", None
    elif words:
        blocks.append({"type": "text", "text": " ".join(words)})
    output = sum(
        _words(b.get("text", "")) + _words(b.get("thinking", "")) + (_words(orjson.dumps(b["input"]).decode()) if b["type"] == "tool_use" else 0)
        for b in blocks
    )
    return _Plan(
        blocks=blocks,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        input_tokens=_input_tokens(body),
        output_tokens=output,
        cache_read=int(n) if fault == "cache-read" else 0,
    )


def _tool_id(body: dict[str, Any]) -> str:
    # Deterministic and unique within a conversation: how many tool_use blocks came before.
    count = sum(
        1
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_use"
    )
    return f"toolu_fake_{count + 1:04d}"


def _message(msg_id: str, model: str, plan: _Plan) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": plan.blocks,
        "stop_reason": plan.stop_reason,
        "stop_sequence": plan.stop_sequence,
        "usage": {
            "input_tokens": plan.input_tokens,
            "output_tokens": plan.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": plan.cache_read,
            "service_tier": "standard",
        },
    }


# --- request validation (the real API's rules that a translator can get wrong) -----------------


def _validate(body: dict[str, Any], strict_alternation: bool) -> str | None:
    for key in body:
        if key not in _TOP_LEVEL:
            return f"{key}: Extra inputs are not permitted"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Input should be an integer greater than or equal to 1"
    for name, low, high in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        value = body.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high):
            return f"{name}: Input should be a number between {low:g} and {high:g}"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s.strip() for s in stops)):
        return "stop_sequences: each stop sequence must be a non-blank string"
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        return "metadata: only user_id is permitted"
    problem = _validate_system(body.get("system"))
    if problem:
        return problem
    _, problem = _validate_tools(body)
    if problem:
        return problem
    return _validate_messages(body.get("messages"), strict_alternation)


def _validate_system(system: Any) -> str | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return "system: Input should be a valid string or list of text blocks"
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            return f"system.{i}: Input should be a text block"
    return None


def _validate_tools(body: dict[str, Any]) -> tuple[set[str], str | None]:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return names, "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                return names, f"tools.{i}: Input should be an object"
            name = tool.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                return names, f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            if name in names:
                return names, f"tools: Tool names must be unique: {name}"
            names.add(name)
            if tool.get("type", "custom") == "custom":
                schema = tool.get("input_schema")
                if not isinstance(schema, dict) or schema.get("type") != "object":
                    return names, f"tools.{i}.custom.input_schema.type: Input should be 'object'"
                extra = set(tool) - {"name", "description", "input_schema", "type", "cache_control"}
                if extra:
                    return names, f"tools.{i}.custom.{sorted(extra)[0]}: Extra inputs are not permitted"
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            return names, "tool_choice: tool_choice may only be specified while providing tools"
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            return names, "tool_choice: Input tag found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
        if choice["type"] == "tool" and choice.get("name") not in names:
            return names, f"tool_choice.tool.name: no tool named {choice.get('name')!r} in tools"
        extra = set(choice) - {"type", "name", "disable_parallel_tool_use"}
        if extra:
            return names, f"tool_choice.{choice['type']}.{sorted(extra)[0]}: Extra inputs are not permitted"
    return names, None


def _validate_messages(messages: Any, strict_alternation: bool) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    previous_tool_ids: set[str] = set()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or set(msg) - {"role", "content"}:
            return f"messages.{i}: Input should be an object with role and content only"
        role, content = msg.get("role"), msg.get("content")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if strict_alternation:
            if i == 0 and role != "user":
                return "messages: first message must use the \"user\" role"
            if i > 0 and messages[i - 1].get("role") == role:
                return f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row'
        is_final_assistant = role == "assistant" and i == len(messages) - 1
        if isinstance(content, str):
            if not content and not is_final_assistant:
                return f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            blocks: list[Any] = []
        elif isinstance(content, list):
            if not content and not is_final_assistant:
                return f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            blocks = content
        else:
            return f"messages.{i}.content: Input should be a valid string or list"
        allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
        tool_ids: set[str] = set()
        results: set[str] = set()
        for j, block in enumerate(blocks):
            where = f"messages.{i}.content.{j}"
            if not isinstance(block, dict) or block.get("type") not in allowed:
                kind = block.get("type") if isinstance(block, dict) else None
                return f"{where}: Input tag {kind!r} found using 'type' does not match any of the expected tags"
            problem = _validate_block(block, where)
            if problem:
                return problem
            if block["type"] == "tool_use":
                tool_ids.add(block["id"])
            elif block["type"] == "tool_result":
                if block["tool_use_id"] not in previous_tool_ids:
                    return (
                        f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: {block['tool_use_id']}. "
                        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    )
                if any(b.get("type") != "tool_result" for b in blocks[:j]):
                    return f"{where}: tool_result blocks must come first in the message content"
                results.add(block["tool_use_id"])
        if role == "user" and previous_tool_ids - results:
            missing = ", ".join(sorted(previous_tool_ids - results))
            return f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}"
        previous_tool_ids = tool_ids if role == "assistant" else set()
    return None


def _validate_block(block: dict[str, Any], where: str) -> str | None:
    kind = block["type"]
    if kind == "text":
        if not isinstance(block.get("text"), str) or not block["text"]:
            return f"{where}.text: text content blocks must be non-empty"
    elif kind == "image":
        return _validate_image(block.get("source"), where)
    elif kind == "tool_use":
        if not isinstance(block.get("id"), str) or not block["id"]:
            return f"{where}.id: Field required"
        if not isinstance(block.get("name"), str) or not block["name"]:
            return f"{where}.name: Field required"
        if not isinstance(block.get("input"), dict):
            return f"{where}.input: Input should be a valid dictionary"
    elif kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
            return f"{where}.tool_use_id: Field required"
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            if not isinstance(content, list):
                return f"{where}.content: Input should be a valid string or list"
            for k, inner in enumerate(content):
                if not isinstance(inner, dict) or inner.get("type") not in ("text", "image"):
                    return f"{where}.content.{k}: Input should be a text or image block"
                problem = _validate_block(inner, f"{where}.content.{k}")
                if problem:
                    return problem
    return None


def _validate_image(source: Any, where: str) -> str | None:
    if not isinstance(source, dict):
        return f"{where}.source: Field required"
    if source.get("type") == "base64":
        if source.get("media_type") not in _IMAGE_TYPES:
            return f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
        data = source.get("data")
        if not isinstance(data, str) or not data:
            return f"{where}.source.base64.data: Field required"
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return f"{where}.source.base64.data: invalid base64 data"
        return None
    if source.get("type") == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return f"{where}.source.url.url: Input should be an http(s) URL"
        return None
    return f"{where}.source: Input tag {source.get('type')!r} found using 'type' does not match any of the expected tags: 'base64', 'url'"
