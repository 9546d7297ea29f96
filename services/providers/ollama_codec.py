"""Ollama wire translation: core ChatRequest -> /api/chat body, NDJSON lines and answers -> core, errors -> UpstreamFailure.

Pure functions, a line splitter and one small per-stream state object; no I/O (ollama.py does it).
Reference: ollama/ollama docs/api.md.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import orjson

from services.core.errors import UpstreamFailure
from services.core.types import (
    ChatRequest, ChatResult, Chunk, Message, Sampling, ToolCall, ToolCallDelta, Usage, token_count,
)
from services.providers.base import StreamEvents

# Wire-neutral helpers (data: URLs, tool-call arguments, Retry-After) live with the Gemini codec.
from services.providers.gemini_codec import (
    AUTH_MESSAGE,
    b64,
    find_tool_name,
    parse_arguments,
    parse_data_url,
    retry_after_header,
    unwrap_json_schema,
)

MAX_LINE_BYTES = 4 * 1024 * 1024  # same bound as the SSE parser's event
_MAX_MESSAGE = 500
_CONTEXT_RE = re.compile(r"context (length|window)|too many tokens|exceeds the maximum", re.IGNORECASE)
INLINE_ONLY = "ollama accepts only inline images"


# --- request ---------------------------------------------------------------------------------


def build_request(req: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The /api/chat body. Raises UpstreamFailure('bad_request') for what Ollama cannot take."""
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        if m.role in ("system", "developer"):
            messages.append({"role": "system", "content": m.plain_text()})
        elif m.role == "tool":
            out: dict[str, Any] = {"role": "tool", "content": m.plain_text()}
            name = find_tool_name(req.messages, i)
            if name:
                out["tool_name"] = name  # newer Ollama uses it to pair the result with its call
            messages.append(out)
        else:
            role = "assistant" if m.role == "assistant" else "user"
            out = {"role": role, "content": m.plain_text()}
            images = _images(m)
            if images:
                out["images"] = images
            if m.tool_calls:
                out["tool_calls"] = [
                    {"function": {"name": tc.name, "arguments": parse_arguments(tc)}} for tc in m.tool_calls
                ]
            messages.append(out)

    # Ollama streams unless told otherwise: always say which.
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if req.tools and req.sampling.tool_choice != "none":
        # Ollama has no tool_choice: "none" drops the tools, other choices are up to the model.
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters or {"type": "object", "properties": {}},
                },
            }
            for t in req.tools
        ]
    options = options_from(req.sampling)
    if options:
        body["options"] = options
    fmt = format_from(req.sampling)
    if fmt is not None:
        body["format"] = fmt
    effort = req.sampling.reasoning_effort
    if effort:
        # Ollama's `think`: gpt-oss takes a level, the other thinking models a boolean.
        body["think"] = False if effort == "none" else (effort if effort in ("low", "medium", "high") and "gpt-oss" in model else True)
    return body


def options_from(s: Sampling) -> dict[str, Any]:
    pairs = (
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        ("num_predict", s.max_tokens),
        ("seed", s.seed),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    )
    options = {k: v for k, v in pairs if v is not None}
    if s.stop:
        options["stop"] = list(s.stop)
    return options


def format_from(s: Sampling) -> str | dict[str, Any] | None:
    if s.response_format == "json_object":
        return "json"
    if s.response_format == "json_schema":
        return unwrap_json_schema(s.json_schema) or "json"
    return None


def _images(m: Message) -> list[str]:
    out: list[str] = []
    for p in m.parts:
        if p.type != "image":
            continue
        if p.data:
            out.append(b64(p.data))
        elif p.image_url.startswith("data:"):
            out.append(parse_data_url(p.image_url)[1])
        else:
            # Ollama cannot fetch URLs, and the gateway does not fetch for it (SSRF, RELIABILITY F8).
            raise UpstreamFailure("bad_request", 400, INLINE_ONLY)
    return out


# --- responses -------------------------------------------------------------------------------


def map_finish(done_reason: str, saw_tool_call: bool) -> str:
    if saw_tool_call:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def usage_from(obj: Mapping[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=token_count(obj.get("prompt_eval_count")),
        completion_tokens=token_count(obj.get("eval_count")),
        # A fully cached prompt is reported without prompt_eval_count: the count is then a guess.
        estimated="prompt_eval_count" not in obj or "eval_count" not in obj,
    )


def _tool_calls(message: Mapping[str, Any], first_index: int) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for i, raw in enumerate(message.get("tool_calls") or [], start=first_index):
        fn = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(fn, dict):
            continue
        args = fn.get("arguments")
        calls.append(
            ToolCall(
                # Ollama sends no ids (some builds do): make stable ones per answer.
                id=str(raw.get("id") or f"call_{i}"),
                name=str(fn.get("name") or ""),
                arguments=args if isinstance(args, str) else orjson.dumps(args or {}).decode(),
            )
        )
    return calls


def parse_response(obj: Mapping[str, Any]) -> ChatResult:
    """A stream:false /api/chat answer -> ChatResult."""
    if "error" in obj:
        raise UpstreamFailure("server", 200, str(obj["error"])[:_MAX_MESSAGE])
    message = obj.get("message")
    if not isinstance(message, dict) or not obj.get("done"):
        raise UpstreamFailure("protocol", 200, "answer has no message or is not done")
    calls = _tool_calls(message, 0)
    return ChatResult(
        text=str(message.get("content") or ""),
        finish_reason=map_finish(str(obj.get("done_reason") or ""), bool(calls)),
        usage=usage_from(obj),
        tool_calls=calls,
        reasoning=str(message.get("thinking") or ""),
        model=str(obj.get("model") or ""),
    )


class LineSplitter:
    """Incremental NDJSON framing: complete lines out, a partial line kept for the next read."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > MAX_LINE_BYTES:
            raise UpstreamFailure("protocol", 200, "stream line over the size limit")
        return [line for line in lines if line.strip()]

    def close(self) -> list[bytes]:
        rest, self._buf = self._buf.strip(), b""
        return [rest] if rest else []


class StreamDecoder:
    """Turns /api/chat stream lines into Chunks; `finished` once the done:true line arrived.

    A line that is not a JSON object (truncated) gives nothing and the stream goes on, up to
    MAX_SKIPPED_EVENTS (RELIABILITY E3, Failover Bench S10); past that `feed` raises.
    """

    __slots__ = ("finished", "_tools", "_started", "_events")

    def __init__(self, provider: str = "") -> None:
        self._events = StreamEvents(provider)
        self.finished = False
        self._tools = 0
        self._started = False

    def feed(self, line: bytes) -> list[Chunk]:
        obj = self._events.parse(line)
        if obj is None:
            return []  # skipped
        if "error" in obj:
            # Once the 200 is out, Ollama reports a failure (model crash, OOM) as a line.
            raise UpstreamFailure("server", 200, str(obj["error"])[:_MAX_MESSAGE])
        if self.finished:
            return []
        message = obj.get("message") or {}
        if type(message) is not dict:  # a line that is JSON but not Ollama's: malformed, skipped (E3)
            self._events.skip()
            return []
        chunk = Chunk(text=str(message.get("content") or ""), reasoning=str(message.get("thinking") or ""))
        for tc in _tool_calls(message, self._tools):
            chunk.tool_calls.append(ToolCallDelta(self._tools, tc.id, tc.name, tc.arguments))
            self._tools += 1
        if obj.get("done"):
            self.finished = True
            chunk.finish_reason = map_finish(str(obj.get("done_reason") or ""), self._tools > 0)
            chunk.usage = usage_from(obj)
        if not (chunk.text or chunk.reasoning or chunk.tool_calls or chunk.finish_reason):
            return []
        if not self._started:
            self._started = True
            chunk.role = "assistant"
        return [chunk]


# --- errors ----------------------------------------------------------------------------------


def classify(status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
    """A non-2xx Ollama answer ({"error": "..."}) -> UpstreamFailure (kind per RELIABILITY A4)."""
    try:
        obj = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), (str, dict)):
        err = obj["error"]
        message = str(err.get("message") if isinstance(err, dict) else err)
    else:
        message = body[:_MAX_MESSAGE].decode("utf-8", "replace").strip()
    message = message[:_MAX_MESSAGE] or f"HTTP {status}"

    if status in (401, 403):
        # Only a proxy in front of Ollama checks keys: it rejected ours (RELIABILITY A4, F3).
        return UpstreamFailure("auth", status, AUTH_MESSAGE)
    if status == 404 and "not found" in message.lower():
        return UpstreamFailure("not_found", status, message)
    if status == 429:
        return UpstreamFailure("rate_limited", status, message, retry_after_s=retry_after_header(headers))
    if status == 408:
        return UpstreamFailure("timeout", status, message)
    if status >= 500 or status == 409:
        return UpstreamFailure("server", status, message)
    if 400 <= status < 500:
        kind = "context_length" if _CONTEXT_RE.search(message) else "bad_request"
        return UpstreamFailure(kind, status, message)
    return UpstreamFailure("protocol", status, f"unexpected HTTP status {status}")
