"""Gemini wire translation: core ChatRequest -> generateContent body, responses and stream events -> core, errors -> UpstreamFailure.

Pure functions and one small per-stream state object; no I/O. gemini.py does the HTTP.
Reference: https://ai.google.dev/api/generate-content (v1beta).
"""

from __future__ import annotations

import base64
import mimetypes
import re
from email.utils import parsedate_to_datetime
from typing import Any, Mapping
from urllib.parse import unquote_to_bytes, urlsplit

import orjson

from services.core.errors import UpstreamFailure
from services.core.types import (
    ChatRequest,
    ChatResult,
    Chunk,
    ContentPart,
    Message,
    Sampling,
    ToolCall,
    ToolCallDelta,
    Usage,
    token_count,
)
from services.providers.base import StreamEvents

AUTH_MESSAGE = "provider rejected the gateway's key"
_MAX_MESSAGE = 500

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "BLOCKLIST": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_CONTEXT_RE = re.compile(
    r"input token count|exceeds the maximum number of tokens|context (length|window)|too many tokens",
    re.IGNORECASE,
)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


# --- request ---------------------------------------------------------------------------------


def build_request(req: ChatRequest) -> dict[str, Any]:
    """The generateContent / streamGenerateContent body for `req` (same body for both)."""
    system_parts: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        if m.role in ("system", "developer"):
            text = m.plain_text()
            if text:
                system_parts.append({"text": text})
        elif m.role == "tool":
            part = {"functionResponse": {"name": _tool_name_for(req.messages, i), "response": _tool_response(m)}}
            _append(contents, "user", [part])
        elif m.role == "assistant":
            parts = _content_parts(m)
            for tc in m.tool_calls:
                parts.append({"functionCall": {"name": tc.name, "args": parse_arguments(tc)}})
            _append(contents, "model", parts)
        else:
            _append(contents, "user", _content_parts(m))

    body: dict[str, Any] = {"contents": contents}
    if system_parts:
        body["systemInstruction"] = {"parts": system_parts}
    if req.tools:
        decls = []
        for t in req.tools:
            d: dict[str, Any] = {"name": t.name}
            if t.description:
                d["description"] = t.description
            if t.parameters:
                # Our Tool.parameters is JSON Schema; `parameters` takes only Google's OpenAPI subset
                # (it rejects e.g. additionalProperties, which OpenAI strict-mode clients send).
                d["parametersJsonSchema"] = t.parameters
            decls.append(d)
        body["tools"] = [{"functionDeclarations": decls}]
        choice = req.sampling.tool_choice
        if choice:
            mode = _TOOL_MODES.get(choice)
            cfg: dict[str, Any] = {"mode": mode} if mode else {"mode": "ANY", "allowedFunctionNames": [choice]}
            body["toolConfig"] = {"functionCallingConfig": cfg}
    gen = generation_config(req.sampling)
    if gen:
        body["generationConfig"] = gen
    return body


def generation_config(s: Sampling) -> dict[str, Any]:
    gen: dict[str, Any] = {}
    if s.temperature is not None:
        gen["temperature"] = s.temperature
    if s.top_p is not None:
        gen["topP"] = s.top_p
    if s.max_tokens is not None:
        gen["maxOutputTokens"] = s.max_tokens
    if s.stop:
        gen["stopSequences"] = list(s.stop)
    if s.seed is not None:
        gen["seed"] = s.seed
    if s.presence_penalty is not None:
        gen["presencePenalty"] = s.presence_penalty
    if s.frequency_penalty is not None:
        gen["frequencyPenalty"] = s.frequency_penalty
    if s.reasoning_effort:
        # OpenAI's reasoning effort as a thinking budget (0 turns thinking off where the model allows).
        gen["thinkingConfig"] = {"thinkingBudget": GEMINI_BUDGETS.get(s.reasoning_effort, -1)}
    if s.response_format in ("json_object", "json_schema"):
        gen["responseMimeType"] = "application/json"
        schema = unwrap_json_schema(s.json_schema) if s.response_format == "json_schema" else None
        if schema:
            # responseJsonSchema takes real JSON Schema; responseSchema only Google's OpenAPI subset.
            gen["responseJsonSchema"] = schema
    return gen


GEMINI_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}


def unwrap_json_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accept OpenAI's wrapper {name, schema, strict} or a bare schema."""
    if not value:
        return None
    inner = value.get("schema")
    if isinstance(inner, dict) and ("name" in value or "strict" in value):
        return inner
    return value


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    # Gemini rejects empty parts, and wants a model turn's parallel functionCalls answered by
    # one user turn holding all the functionResponses: merge neighbours of the same role.
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _content_parts(m: Message) -> list[dict[str, Any]]:
    if not m.parts:
        return [{"text": m.text}] if m.text else []
    out: list[dict[str, Any]] = []
    for p in m.parts:
        if p.type == "image":
            out.append(image_part(p))
        elif p.text:
            out.append({"text": p.text})
    return out


def image_part(p: ContentPart) -> dict[str, Any]:
    if p.data:
        return {"inlineData": {"mimeType": p.media_type or sniff_image_type(p.data), "data": b64(p.data)}}
    url = p.image_url
    if url.startswith("data:"):
        mime, data = parse_data_url(url)
        return {"inlineData": {"mimeType": p.media_type or mime, "data": data}}
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        # Gemini fetches the file itself; fileData needs a MIME type, so guess from the path.
        mime = p.media_type or mimetypes.guess_type(urlsplit(url).path)[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise UpstreamFailure("bad_request", 400, f"unsupported image URL scheme {scheme!r}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_data_url(url: str) -> tuple[str, str]:
    """data:[<mime>][;base64],<payload> -> (mime, base64 payload)."""
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise UpstreamFailure("bad_request", 400, "malformed data: URL")
    fields = header.split(";")
    mime = fields[0].strip() or "image/png"
    if "base64" in (f.strip().lower() for f in fields[1:]):
        return mime, "".join(payload.split())
    return mime, b64(unquote_to_bytes(payload))


def sniff_image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


def parse_arguments(tc: ToolCall) -> dict[str, Any]:
    """A caller's tool-call arguments (a JSON string) as the object Gemini and Ollama want."""
    if not tc.arguments.strip():
        return {}
    try:
        value = orjson.loads(tc.arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamFailure("bad_request", 400, f"arguments of tool call {tc.id!r} are not a JSON object")
    return value


def find_tool_name(messages: list[Message], index: int) -> str:
    """The function name of the tool call that messages[index] (a tool result) answers, or ""."""
    call_id = messages[index].tool_call_id
    for m in reversed(messages[:index]):
        if m.role == "assistant":
            for tc in m.tool_calls:
                if tc.id == call_id:
                    return tc.name
    return messages[index].name


def _tool_name_for(messages: list[Message], index: int) -> str:
    # Gemini matches a functionResponse to its call by NAME; our callers send only the id.
    name = find_tool_name(messages, index)
    if not name:
        raise UpstreamFailure(
            "bad_request", 400, f"tool result {messages[index].tool_call_id!r} answers no earlier tool call"
        )
    return name


def _tool_response(m: Message) -> dict[str, Any]:
    # `response` must be an object; a JSON-object result goes as is (so an "error" key keeps
    # Gemini's meaning), anything else under "output".
    text = m.plain_text()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"output": text}


# --- responses -------------------------------------------------------------------------------


def map_finish(reason: str, saw_tool_call: bool) -> str:
    mapped = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    if mapped == "stop" and saw_tool_call:
        return "tool_calls"
    return mapped


def usage_from(meta: Mapping[str, Any]) -> Usage:
    thoughts = token_count(meta.get("thoughtsTokenCount"))
    return Usage(
        # Tool-use prompt tokens (e.g. search grounding) are billed as input.
        prompt_tokens=token_count(meta.get("promptTokenCount")) + token_count(meta.get("toolUsePromptTokenCount")),
        # Thinking is billed as output: count it there, and report it as reasoning too.
        completion_tokens=token_count(meta.get("candidatesTokenCount")) + thoughts,
        cached_tokens=token_count(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def _blocked_prompt(obj: Mapping[str, Any]) -> UpstreamFailure | None:
    reason = (obj.get("promptFeedback") or {}).get("blockReason")
    if reason:
        return UpstreamFailure(
            "content_filter", 200, f"the provider blocked the prompt ({reason})", provider_code=str(reason)
        )
    return None


def parse_response(obj: Mapping[str, Any]) -> ChatResult:
    """A generateContent answer -> ChatResult; raises UpstreamFailure for errors and blocked prompts."""
    if "error" in obj:
        raise failure_from_error(obj["error"], 200, {})
    try:
        candidates = obj.get("candidates") or []
        if not candidates:
            raise _blocked_prompt(obj) or UpstreamFailure("protocol", 200, "response has no candidates")
        cand = candidates[0]
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        for part in (cand.get("content") or {}).get("parts") or []:
            fc = part.get("functionCall")
            if fc:
                calls.append(_tool_call(fc, len(calls)))
            elif part.get("thought"):
                reasoning.append(part.get("text") or "")
            elif "text" in part:
                text.append(part["text"])
        meta = obj.get("usageMetadata")
        return ChatResult(
            text="".join(text),
            finish_reason=map_finish(cand.get("finishReason") or "STOP", bool(calls)),
            usage=usage_from(meta) if isinstance(meta, dict) else Usage(estimated=True),
            tool_calls=calls,
            reasoning="".join(reasoning),
            model=m if isinstance(m := obj.get("modelVersion"), str) else "",
            response_id=i if isinstance(i := obj.get("responseId"), str) else "",
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        # Well-formed JSON with a field of the wrong type (a number for a text, a string for the
        # parts): the upstream's protocol error, never a crash further in (E3).
        raise UpstreamFailure("protocol", 200, "upstream sent a malformed response") from None


def _tool_call(fc: Mapping[str, Any], index: int) -> ToolCall:
    # Gemini sends no call ids (the Live API's optional `id` aside): make stable ones per answer.
    return ToolCall(
        id=str(fc.get("id") or f"call_{index}"),
        name=str(fc.get("name") or ""),
        arguments=orjson.dumps(fc.get("args") or {}).decode(),
    )


class StreamDecoder:
    """Turns streamGenerateContent events (each a partial GenerateContentResponse) into Chunks.

    An event that is not a JSON object (truncated) gives nothing and the stream goes on, up to
    MAX_SKIPPED_EVENTS (RELIABILITY E3, Failover Bench S10); past that `feed` raises.
    """

    __slots__ = ("finished", "_tools", "_usage", "_started", "_events")

    def __init__(self, provider: str = "") -> None:
        self._events = StreamEvents(provider)
        self.finished = False  # a candidate with finishReason arrived: the stream's terminal marker
        self._tools = 0
        self._usage: Usage | None = None
        self._started = False

    def feed(self, data: bytes) -> list[Chunk]:
        obj = self._events.parse(data)
        if obj is None:
            return []  # skipped
        if "error" in obj:
            # Google can report a failure in-band once the 200 is sent.
            raise failure_from_error(obj["error"], 200, {})
        if self.finished:
            return []
        try:
            return self._chunks(obj)
        except (KeyError, IndexError, TypeError, AttributeError):
            # A field of the wrong type: a malformed event, skipped like a truncated one (E3).
            self._events.skip()
            return []

    def _chunks(self, obj: dict[str, Any]) -> list[Chunk]:
        meta = obj.get("usageMetadata")
        if isinstance(meta, dict) and meta:
            self._usage = usage_from(meta)
        candidates = obj.get("candidates") or []
        if not candidates:
            blocked = _blocked_prompt(obj)
            if blocked:
                raise blocked
            return []
        cand = candidates[0]
        chunk = Chunk()
        text: list[str] = []
        reasoning: list[str] = []
        for part in (cand.get("content") or {}).get("parts") or []:
            fc = part.get("functionCall")
            if fc:
                tc = _tool_call(fc, self._tools)
                chunk.tool_calls.append(ToolCallDelta(self._tools, tc.id, tc.name, tc.arguments))
                self._tools += 1
            elif part.get("thought"):
                reasoning.append(part.get("text") or "")
            elif "text" in part:
                text.append(part["text"])
        chunk.text = "".join(text)
        chunk.reasoning = "".join(reasoning)
        reason = cand.get("finishReason")
        if reason:
            self.finished = True
            chunk.finish_reason = map_finish(reason, self._tools > 0)
            chunk.usage = self._usage
        if not (chunk.text or chunk.reasoning or chunk.tool_calls or chunk.finish_reason):
            return []
        if not self._started:
            self._started = True
            chunk.role = "assistant"
        return [chunk]


# --- errors ----------------------------------------------------------------------------------


def classify(status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
    """A non-2xx Gemini answer -> UpstreamFailure (kind per RELIABILITY A4)."""
    try:
        obj = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        err = obj[0].get("error")  # a streamed call can answer with a one-element JSON array
    if not isinstance(err, dict):
        # Not Google's shape (a proxy's HTML page, say): keep its text, unless it is JSON noise.
        text = "" if obj is not None else body[:_MAX_MESSAGE].decode("utf-8", "replace").strip()
        err = {"message": text or f"HTTP {status}"}
    return failure_from_error(err, status, headers)


def failure_from_error(err: Any, status: int, headers: Mapping[str, str]) -> UpstreamFailure:
    if not isinstance(err, dict):
        err = {"message": str(err)}
    code = status if status >= 300 else _int(err.get("code"))
    message = str(err.get("message") or f"HTTP {code}")[:_MAX_MESSAGE]
    gstatus = str(err.get("status") or "")
    details = [d for d in err.get("details") or [] if isinstance(d, dict)]
    reason = next((str(d.get("reason")) for d in details if d.get("@type", "").endswith("ErrorInfo")), "")
    provider_code = reason or gstatus

    if reason.startswith("API_KEY_") or code in (401, 403) or gstatus in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        # RELIABILITY A4/F3: the caller did nothing wrong, and the text may describe our key.
        return UpstreamFailure("auth", code, AUTH_MESSAGE, provider_code=provider_code)
    if code == 429 or gstatus == "RESOURCE_EXHAUSTED":
        delay = retry_after_header(headers)
        if delay is None:
            delay = next(
                (parse_duration(d.get("retryDelay")) for d in details if d.get("@type", "").endswith("RetryInfo")),
                None,
            )
        return UpstreamFailure("rate_limited", code, message, retry_after_s=delay, provider_code=provider_code)
    if code == 408 or (gstatus == "DEADLINE_EXCEEDED" and code < 500):
        return UpstreamFailure("timeout", code, message, provider_code=provider_code)
    if code >= 500 or code == 409:
        return UpstreamFailure("server", code, message, provider_code=provider_code)
    if 400 <= code < 500:
        kind = "context_length" if _CONTEXT_RE.search(message) else "bad_request"
        return UpstreamFailure(kind, code, message, provider_code=provider_code)
    return UpstreamFailure("protocol", code, f"unexpected HTTP status {code}", provider_code=provider_code)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_duration(value: Any) -> float | None:
    """google.protobuf.Duration in JSON form ("2s", "1.5s") -> seconds."""
    m = _DURATION_RE.match(value) if isinstance(value, str) else None
    return float(m.group(1)) if m else None


def retry_after_header(headers: Mapping[str, str]) -> float | None:
    """retry-after-ms, or retry-after as seconds or an HTTP-date (relative to the answer's Date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    # An HTTP-date is measured against the upstream's own Date header: no clock of ours needed.
    try:
        delta = parsedate_to_datetime(value) - parsedate_to_datetime(headers.get("date", ""))
    except (TypeError, ValueError):  # garbage, no Date, or a naive date against an aware one
        return None
    return max(0.0, delta.total_seconds())
