"""Anthropic Messages API <-> core types: the pure translation, no I/O.

Request: `build_messages_body` (ChatRequest -> POST /v1/messages body). Answer: `parse_message`
(message JSON -> ChatResult). Stream: `StreamTranslator` (SSE events -> Chunk lists). Errors:
`classify_error` (status, headers, body -> UpstreamFailure). providers/anthropic.py does the I/O.

Wire reference: Anthropic Messages API, `anthropic-version: 2023-06-01`.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson

from services.core.errors import UpstreamFailure
from services.core.types import (
    ChatRequest,
    ChatResult,
    Chunk,
    ContentPart,
    Message,
    ToolCall,
    ToolCallDelta,
    Usage,
    token_count,
)
from services.providers.base import StreamEvents
from services.providers.sse import Event
from services.providers.retry_after import parse_retry_after

API_VERSION = "2023-06-01"
# Anthropic requires max_tokens; OpenAI-shaped callers usually leave it out.
DEFAULT_MAX_TOKENS = 4096
# The Messages API (2023-06-01) has no JSON mode: JSON output is asked for in the system prompt,
# which makes it likely, not guaranteed.
JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."
_ERROR_MESSAGE_MAX = 500
AUTH_MESSAGE = "provider rejected the gateway's key"

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_CONTEXT_HINTS = (
    "prompt is too long",
    "context window",
    "context length",
    "context limit",
    "maximum context",
    "too many tokens",
)
_FILTER_HINTS = ("content filtering", "content policy", "output blocked")


def _bad_request(message: str) -> UpstreamFailure:
    return UpstreamFailure("bad_request", 400, message)


def _protocol(message: str, provider_code: str = "") -> UpstreamFailure:
    return UpstreamFailure("protocol", 0, message, provider_code=provider_code)


# --- request -----------------------------------------------------------------------------------


# reasoning_effort -> thinking.budget_tokens ("none": no thinking).
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}


def build_messages_body(req: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The /v1/messages body for `req`, sent to the upstream as `model`.

    system/developer turns are lifted to the top-level `system`; `tool` turns become user turns of
    tool_result blocks; consecutive same-role turns are merged because Anthropic wants user and
    assistant to alternate. seed and the penalties have no Anthropic counterpart and are dropped.
    """
    system_texts: list[str] = []
    turns: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg.role in ("system", "developer"):
            text = msg.plain_text()
            if text:
                system_texts.append(text)
            continue
        if msg.role == "assistant":
            role, blocks = "assistant", _assistant_blocks(msg)
        elif msg.role == "tool":
            role, blocks = "user", [_tool_result_block(msg)]
        else:
            role, blocks = "user", _user_blocks(msg.text, msg.parts)
        if not blocks:
            continue  # Anthropic rejects empty turns; dropping one keeps the rest valid
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        blocks = turn["content"]
        if turn["role"] == "user" and len(blocks) > 1:
            # tool_result blocks must lead their user turn (merging can put text before them).
            blocks.sort(key=lambda b: b["type"] != "tool_result")
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            turn["content"] = blocks[0]["text"]  # the plain form: smaller, and what SDKs send

    s = req.sampling
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": DEFAULT_MAX_TOKENS if s.max_tokens is None else s.max_tokens,
        "messages": turns,
    }
    if s.response_format in ("json_object", "json_schema"):
        instruction = JSON_INSTRUCTION
        if s.response_format == "json_schema" and s.json_schema:
            schema = orjson.dumps(s.json_schema).decode()
            instruction += f" The object must match this JSON Schema: {schema}"
        system_texts.append(instruction)
    if system_texts:
        body["system"] = "\n\n".join(system_texts)
    if s.temperature is not None:
        # OpenAI allows 0-2, Anthropic 0-1: clamp rather than fail a request that is otherwise fine.
        body["temperature"] = min(max(float(s.temperature), 0.0), 1.0)
    if s.top_p is not None and not (s.temperature is not None and s.top_p >= 1.0):
        # Newer Claude models refuse temperature and top_p together; top_p 1 is a no-op, so drop it.
        body["top_p"] = s.top_p
    budget = THINKING_BUDGETS.get(s.reasoning_effort, 0) if s.reasoning_effort else 0
    if budget:
        # OpenAI's reasoning effort as extended thinking: the budget must stay under max_tokens (and
        # at least 1024); thinking takes no temperature or top_p other than the defaults.
        budget = min(budget, body["max_tokens"] - 1)
        if budget >= 1024:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            body.pop("temperature", None)
            body.pop("top_p", None)
    stops = [x for x in s.stop if x.strip()]  # Anthropic rejects blank stop sequences
    if stops:
        body["stop_sequences"] = stops
    if req.tools:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": _input_schema(t.parameters),
            }
            for t in req.tools
        ]
        choice = _tool_choice(s.tool_choice)
        if s.parallel_tool_calls is False and (choice is None or choice["type"] != "none"):
            choice = dict(choice or {"type": "auto"}, disable_parallel_tool_use=True)
        if choice is not None:
            body["tool_choice"] = choice
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if stream:
        body["stream"] = True
    return body


def _tool_choice(choice: str) -> dict[str, Any] | None:
    if not choice:
        return None
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def _input_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    if not parameters:
        return {"type": "object", "properties": {}}
    if "type" not in parameters:
        return {"type": "object", **parameters}
    return parameters


def _user_blocks(text: str, parts: list[ContentPart]) -> list[dict[str, Any]]:
    if not parts:
        return [{"type": "text", "text": text}] if text else []
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if part.type == "text":
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif part.type == "image":
            blocks.append(image_block(part))
        else:
            raise _bad_request(f"anthropic does not accept content parts of type {part.type!r}")
    return blocks


def _assistant_blocks(msg: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = msg.plain_text()
    if text:
        blocks.append({"type": "text", "text": text})
    for call in msg.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)})
    return blocks


def _tool_result_block(msg: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id}
    if msg.parts and any(p.type == "image" for p in msg.parts):
        block["content"] = _user_blocks("", msg.parts)
    else:
        text = msg.plain_text()
        if text:
            block["content"] = text
    return block


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic wants; anything else becomes {}."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def image_block(part: ContentPart) -> dict[str, Any]:
    """An image part as an Anthropic image block: inline bytes and data: URLs as base64, http(s) as url."""
    if part.data:
        media_type = _media_type(part.media_type) or sniff_image_type(part.data[:16])
        return _base64_image(media_type, base64.b64encode(part.data).decode("ascii"))
    url = part.image_url
    if url.startswith("data:"):
        header, sep, payload = url[5:].partition(",")
        if not sep:
            raise _bad_request("malformed data: URL in an image part")
        params = header.split(";")
        media_type = _media_type(params[0])
        if "base64" in params[1:]:
            # Kept as sent (only whitespace removed): decoding megabytes to re-encode them buys nothing.
            data = "".join(payload.split())
            if not media_type:
                head = data[:24]
                try:
                    media_type = sniff_image_type(base64.b64decode(head[: len(head) // 4 * 4]))
                except ValueError:
                    raise _bad_request("image data: URL is not valid base64") from None
        else:
            raw = urllib.parse.unquote_to_bytes(payload)
            media_type = media_type or sniff_image_type(raw[:16])
            data = base64.b64encode(raw).decode("ascii")
        return _base64_image(media_type, data)
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _bad_request("image URL must be http(s) or a data: URL")


def _base64_image(media_type: str, data: str) -> dict[str, Any]:
    if media_type not in _IMAGE_TYPES:
        raise _bad_request(f"anthropic accepts JPEG, PNG, GIF and WebP images, not {media_type[:64]!r}")
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _media_type(value: str) -> str:
    value = value.strip().lower()
    return "image/jpeg" if value == "image/jpg" else value


def sniff_image_type(head: bytes) -> str:
    """The media type from an image's magic bytes (Anthropic accepts JPEG, PNG, GIF and WebP)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    raise _bad_request("image type not recognised: anthropic accepts JPEG, PNG, GIF and WebP")


# --- answers -----------------------------------------------------------------------------------


def map_stop_reason(reason: object) -> str:
    """Anthropic's stop_reason as a core finish_reason; unknown or missing reads as a plain stop."""
    return _STOP_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


def usage_from(fields: Mapping[str, int]) -> Usage:
    """Core usage from Anthropic's counters.

    Anthropic's input_tokens excludes cache reads and writes; core prompt_tokens (OpenAI's sense)
    includes them, with the cache reads also in cached_tokens.
    """
    cache_read = fields.get("cache_read_input_tokens", 0)
    prompt = fields.get("input_tokens", 0) + fields.get("cache_creation_input_tokens", 0) + cache_read
    return Usage(prompt_tokens=prompt, completion_tokens=fields.get("output_tokens", 0), cached_tokens=cache_read,
                 cache_write_tokens=fields.get("cache_creation_input_tokens", 0))


_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _usage_fields(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {k: token_count(raw[k]) for k in _USAGE_FIELDS if raw.get(k) is not None}


def parse_message(body: bytes) -> ChatResult:
    """A 200 /v1/messages body as a ChatResult; anything that is not a message is a protocol failure."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _protocol("upstream answered 200 with a body that is not JSON") from None
    if not isinstance(doc, dict) or doc.get("type") != "message" or not isinstance(doc.get("content"), list):
        raise _protocol("upstream answered 200 with something that is not a message")
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for block in doc["content"]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            thoughts.append(str(block.get("thinking") or ""))
        elif kind == "tool_use":
            args = block.get("input")
            calls.append(
                ToolCall(
                    id=str(block.get("id") or ""),
                    name=str(block.get("name") or ""),
                    arguments=orjson.dumps(args if isinstance(args, dict) else {}).decode(),
                )
            )
    fields = _usage_fields(doc.get("usage"))
    usage = usage_from(fields)
    usage.estimated = not fields  # no provider numbers: metering must estimate
    return ChatResult(
        text="".join(texts),
        finish_reason=map_stop_reason(doc.get("stop_reason")),
        usage=usage,
        tool_calls=calls,
        reasoning="".join(thoughts),
        model=str(doc.get("model") or ""),
        response_id=str(doc.get("id") or ""),
    )


class StreamTranslator:
    """Turns the events of one Messages stream into Chunk lists, batch by batch.

    `feed` returns the chunks and, for an `error` event or one that breaks the protocol, the failure
    to raise once those chunks are delivered. An event that is not a JSON object (truncated) is
    skipped, up to MAX_SKIPPED_EVENTS per stream (RELIABILITY E3, Failover Bench S10). The finish
    chunk (finish_reason and usage) is emitted on message_stop, or by `close` at a clean end after
    message_delta gave the stop_reason (S11); a stream cut before that never looks finished (A6).
    """

    __slots__ = ("done", "model", "message_id", "_role_sent", "_tools", "_pending_input", "_usage", "_stop",
                 "_events")

    def __init__(self, provider: str = "") -> None:
        self._events = StreamEvents(provider)
        self.done = False
        self.model = ""
        self.message_id = ""
        self._role_sent = False
        self._tools: dict[int, int] = {}  # content block index -> index among tool calls
        self._pending_input: dict[int, str] = {}  # tool input given whole in content_block_start
        self._usage: dict[str, int] = {}
        self._stop: object = None

    def feed(self, events: list[Event]) -> tuple[list[Chunk], UpstreamFailure | None]:
        chunks: list[Chunk] = []
        failure: UpstreamFailure | None = None
        for ev in events:
            if self.done:
                break  # nothing after message_stop means anything
            if ev.event == "ping":
                continue
            try:
                failure = self._event(ev, chunks)
            except UpstreamFailure as exc:  # past MAX_SKIPPED_EVENTS
                failure = exc
            except (KeyError, TypeError, ValueError, AttributeError):
                failure = _protocol(f"malformed {ev.event or 'unnamed'} event in the upstream stream")
            if failure is not None:
                break
        if chunks and not self._role_sent:
            chunks[0].role = "assistant"
            self._role_sent = True
        return chunks, failure

    def close(self) -> list[Chunk]:
        """A clean end of the stream: the finish chunk when message_delta already gave the stop_reason
        (the answer is whole; only message_stop was left off), else nothing and `done` stays False."""
        if self.done or self._stop is None:
            return []
        return self.feed([Event("message_stop", b'{"type":"message_stop"}')])[0]

    def _event(self, ev: Event, out: list[Chunk]) -> UpstreamFailure | None:
        doc = self._events.parse(ev.data)
        if doc is None:
            return None  # not a JSON object: skipped (RELIABILITY E3)
        kind = doc.get("type") or ev.event
        if kind == "content_block_delta":
            delta = doc["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                if delta["text"]:
                    out.append(Chunk(text=str(delta["text"])))
            elif dtype == "input_json_delta":
                index = doc["index"]
                self._pending_input.pop(index, None)
                partial = delta.get("partial_json") or ""
                if partial and index in self._tools:
                    out.append(Chunk(tool_calls=[ToolCallDelta(index=self._tools[index], arguments=str(partial))]))
            elif dtype == "thinking_delta":
                if delta["thinking"]:
                    out.append(Chunk(reasoning=str(delta["thinking"])))
            # signature_delta, citations_delta: nothing a core Chunk carries.
        elif kind == "content_block_start":
            self._block_start(doc["index"], doc["content_block"], out)
        elif kind == "content_block_stop":
            index = doc.get("index")
            pending = self._pending_input.pop(index, None) if isinstance(index, int) else None
            if pending:
                out.append(Chunk(tool_calls=[ToolCallDelta(index=self._tools[index], arguments=pending)]))
        elif kind == "message_start":
            message = doc["message"]
            self.model = str(message.get("model") or "")
            self.message_id = str(message.get("id") or "")
            self._usage.update(_usage_fields(message.get("usage")))
        elif kind == "message_delta":
            # Counters in message_delta are cumulative: the latest value wins, never a sum.
            self._stop = (doc.get("delta") or {}).get("stop_reason")
            self._usage.update(_usage_fields(doc.get("usage")))
        elif kind == "message_stop":
            self.done = True
            out.append(Chunk(finish_reason=map_stop_reason(self._stop), usage=usage_from(self._usage)))
        elif kind == "error":
            err = doc.get("error")
            err = err if isinstance(err, dict) else {}
            etype = str(err.get("type") or "error")
            text = str(err.get("message") or "")[:_ERROR_MESSAGE_MAX]
            return _protocol(f"upstream stream error: {etype}: {text}", provider_code=etype)
        # Unknown event types are skipped: Anthropic adds new ones and says clients must tolerate them.
        return None

    def _block_start(self, index: int, block: dict[str, Any], out: list[Chunk]) -> None:
        btype = block.get("type")
        if btype == "text":
            if block.get("text"):
                out.append(Chunk(text=str(block["text"])))
        elif btype == "tool_use":
            if not isinstance(index, int):
                raise TypeError("content block index is not an integer")
            ordinal = len(self._tools)
            self._tools[index] = ordinal
            out.append(
                Chunk(tool_calls=[ToolCallDelta(index=ordinal, id=str(block.get("id") or ""), name=str(block.get("name") or ""))])
            )
            given = block.get("input")
            if isinstance(given, dict) and given:
                self._pending_input[index] = orjson.dumps(given).decode()
        elif btype == "thinking":
            if block.get("thinking"):
                out.append(Chunk(reasoning=str(block["thinking"])))


# --- errors ------------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and not hasattr(headers, "getall"):  # a plain dict: not case-insensitive
        for key, val in headers.items():
            if key.lower() == name:
                return val.strip()
        return None
    return value.strip() if value is not None else None


def classify_error(status: int, headers: Mapping[str, str], body: bytes, now: float) -> UpstreamFailure:
    """An Anthropic error answer as an UpstreamFailure (RELIABILITY A4 decides what each kind does).

    Anthropic's own message is kept for caller errors (it says what to fix); for auth failures it
    is replaced by a generic one, as it may describe the gateway's key.
    """
    etype, text = _error_detail(body)
    message = text[:_ERROR_MESSAGE_MAX] or f"upstream answered HTTP {status}"
    lowered = message.lower()
    retry_after = parse_retry_after(headers, now)  # retry-after-ms, seconds or HTTP-date (A3)
    extra: dict[str, str] = {}
    should_retry = _header(headers, "x-should-retry")
    if should_retry in ("true", "false"):
        extra["should_retry"] = should_retry
    request_id = _header(headers, "request-id")
    if request_id:
        extra["request_id"] = request_id[:128]

    def failure(kind: str, msg: str = message) -> UpstreamFailure:
        return UpstreamFailure(kind, status, msg, retry_after_s=retry_after, provider_code=etype, extra=extra)

    if status in (401, 403) or etype in ("authentication_error", "permission_error", "billing_error") or (
        status == 400 and "credit balance" in lowered
    ):
        # The gateway's key is unusable (revoked, no access, out of credit): not the caller's fault.
        return failure("auth", AUTH_MESSAGE)
    if status == 429:
        return failure("rate_limited")
    if status == 408:
        return failure("timeout")
    if status == 409 or status >= 500:
        return failure("server")  # 529 overloaded_error included
    if any(hint in lowered for hint in _CONTEXT_HINTS):
        return failure("context_length")
    if any(hint in lowered for hint in _FILTER_HINTS):
        return failure("content_filter")
    if 400 <= status < 500:
        return failure("bad_request")  # 400, 404, 413, 422 and the rest of 4xx: the request is wrong
    return failure("protocol", f"upstream answered an unexpected HTTP {status}")


def _error_detail(body: bytes) -> tuple[str, str]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", ""
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("type") or ""), str(err.get("message") or "")
