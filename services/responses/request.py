"""A Responses API request body -> the core's ChatRequest, for routes that are not OpenAI.

What has no chat equivalent is refused by name (400 naming the field), never dropped in
silence: hosted tools (web_search, file_search, computer_use, ...), file inputs, `background`.
`reasoning.effort` becomes Sampling.reasoning_effort (each adapter maps it to its provider's
control, or reports it dropped); `reasoning.summary`, `include`, `truncation`, `store` and
`metadata` concern the gateway's own rendering and storage, not the provider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from services.core.errors import FieldViolation, InvalidArgument
from services.core.types import ChatRequest, ContentPart, Message, RouteHints, Sampling, Tool, ToolCall

MAX_ITEMS = 10_000  # input items after expanding previous_response_id
ROLES = frozenset({"user", "assistant", "system", "developer"})
EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
IGNORED_ITEMS = frozenset({"reasoning"})  # the provider's own hidden state: meaningless to another provider


def bad(message: str, where: str, reason: str = "INVALID_REQUEST") -> InvalidArgument:
    return InvalidArgument(message, reason=reason, field_violations=[FieldViolation(where, message)])


@dataclass(slots=True)
class Parsed:
    """The request's own fields the renderer echoes, and the conversation so far as items."""

    body: dict[str, Any]
    model: str
    stream: bool
    store: bool
    previous_response_id: str
    items: list[dict[str, Any]]  # this request's input as items (a string input becomes one message item)
    history: list[dict[str, Any]] = field(default_factory=list)  # expanded from previous_response_id
    previous_native: bool = False  # the previous response was OpenAI's own (it keeps the chain itself)
    raw: bytes = b""  # the body as sent (an OpenAI route gets exactly this when nothing had to change)


def parse(body: dict[str, Any]) -> Parsed:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("Missing required parameter: 'model'.", "model", "MODEL_REQUIRED")
    # Model names travel in headers and metadata: printable, bounded (RELIABILITY E6, E9).
    if len(model) > 256 or not model.isascii() or not model.isprintable():
        raise bad("model must be printable ASCII, at most 256 characters", "model", "INVALID_MODEL")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad("Invalid type for 'stream': expected a boolean.", "stream")
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise bad("Invalid type for 'store': expected a boolean.", "store")
    if body.get("background"):
        raise bad("background responses are not supported by this gateway.", "background", "UNSUPPORTED_PARAMETER")
    prev = body.get("previous_response_id")
    if prev is not None and (not isinstance(prev, str) or not prev):
        raise bad("Invalid type for 'previous_response_id': expected a string.", "previous_response_id")
    if prev and body.get("conversation") is not None:
        raise bad("previous_response_id and conversation cannot both be set.", "conversation")
    if body.get("conversation") is not None:
        raise bad("conversations are not supported by this gateway; use previous_response_id.", "conversation",
                  "UNSUPPORTED_PARAMETER")
    return Parsed(body, model, bool(stream), store is not False, prev or "", input_items(body.get("input")))


def input_items(inp: Any) -> list[dict[str, Any]]:
    if inp is None:
        return []
    if isinstance(inp, str):
        return [{"type": "message", "role": "user", "content": inp}]
    if not isinstance(inp, list):
        raise bad("Invalid type for 'input': expected a string or an array of input items.", "input")
    for i, item in enumerate(inp):
        if not isinstance(item, dict):
            raise bad(f"Invalid type for 'input[{i}]': expected an object.", f"input[{i}]")
    if len(inp) > MAX_ITEMS:
        raise bad(f"Too many input items: at most {MAX_ITEMS}.", "input", "TOO_MANY_MESSAGES")
    return inp


def to_chat(p: Parsed, surface: str) -> ChatRequest:
    """The conversation (history, then this input) as a ChatRequest for the chat pipeline."""
    body = p.body
    messages: list[Message] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise bad("Invalid type for 'instructions': expected a string.", "instructions")
        if instructions:
            messages.append(Message("system", instructions))
    items = p.history + p.items
    if len(items) > MAX_ITEMS:
        raise bad(f"Too many input items with the previous response's: at most {MAX_ITEMS}.", "input", "TOO_MANY_MESSAGES")
    offset = len(p.history)
    for i, item in enumerate(items):
        _add_item(messages, item, f"input[{i - offset}]" if i >= offset else "previous_response_id")
    if not any(m.role != "system" for m in messages):
        raise bad("Missing required parameter: 'input'.", "input", "MESSAGES_REQUIRED")
    return ChatRequest(p.model, messages, _sampling(body), _tools(body.get("tools")), RouteHints(), False,
                       _user(body), surface)


def _add_item(messages: list[Message], item: dict[str, Any], where: str) -> None:
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"
    if kind == "message":
        role = item.get("role")
        if role not in ROLES:
            raise bad(f"Invalid value for '{where}.role': expected user, assistant, system or developer.", f"{where}.role")
        text, parts = _content(item.get("content"), f"{where}.content")
        msg = Message(role, text, parts)
        messages.append(msg)
    elif kind == "function_call":
        call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments", "")
        if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(args, str):
            raise bad(f"'{where}' (function_call) needs string call_id, name and arguments.", where)
        last = messages[-1] if messages else None
        # Consecutive calls are one assistant turn with several tool calls, as chat providers expect.
        if last is None or last.role != "assistant" or (last.tool_calls == [] and last.parts):
            last = Message("assistant", "")
            messages.append(last)
        last.tool_calls.append(ToolCall(call_id, name, args))
    elif kind == "function_call_output":
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str):
            raise bad(f"'{where}.call_id' must be a string.", f"{where}.call_id")
        if isinstance(output, list):
            text, _ = _content(output, f"{where}.output")
            output = text
        if not isinstance(output, str):
            raise bad(f"'{where}.output' must be a string.", f"{where}.output")
        messages.append(Message("tool", output, tool_call_id=call_id))
    elif kind in IGNORED_ITEMS:
        return
    else:
        raise bad(f"Input items of type '{kind}' ({where}) need an OpenAI route; this route speaks chat.",
                  f"{where}.type", "UNSUPPORTED_PARAMETER")


def _content(content: Any, where: str) -> tuple[str, list[ContentPart]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise bad(f"Invalid type for '{where}': expected a string or an array of content parts.", where)
    parts: list[ContentPart] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise bad(f"'{where}[{j}].text' must be a string.", f"{where}[{j}].text")
            parts.append(ContentPart("text", text=text))
        elif kind == "refusal":
            parts.append(ContentPart("text", text=str(part.get("refusal", ""))))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise bad(f"'{where}[{j}]': images by file_id need an OpenAI route; send image_url.",
                          f"{where}[{j}].file_id", "UNSUPPORTED_PARAMETER")
            parts.append(ContentPart("image", image_url=url, detail=str(part.get("detail") or "")))
        else:
            raise bad(f"Content parts of type '{kind}' ({where}[{j}]) need an OpenAI route.", f"{where}[{j}].type",
                      "UNSUPPORTED_PARAMETER")
    if all(p.type == "text" for p in parts):
        return "".join(p.text for p in parts), []
    return "", parts


def _number(body: dict, name: str, lo: float, hi: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise bad(f"Invalid value for '{name}': expected a number between {lo} and {hi}.", name)
    return float(v)


def _sampling(body: dict) -> Sampling:
    s = Sampling(temperature=_number(body, "temperature", 0, 2), top_p=_number(body, "top_p", 0, 1))
    mot = body.get("max_output_tokens")
    if mot is not None:
        if isinstance(mot, bool) or not isinstance(mot, int) or mot < 1:
            raise bad("Invalid value for 'max_output_tokens': expected a positive integer.", "max_output_tokens")
        s.max_tokens = min(mot, 2**31 - 1)
    ptc = body.get("parallel_tool_calls")
    if ptc is not None:
        if not isinstance(ptc, bool):
            raise bad("Invalid type for 'parallel_tool_calls': expected a boolean.", "parallel_tool_calls")
        s.parallel_tool_calls = ptc
    tc = body.get("tool_choice")
    if isinstance(tc, str):
        if tc not in ("auto", "none", "required"):
            raise bad("Invalid value for 'tool_choice': expected auto, none, required or a function.", "tool_choice")
        s.tool_choice = tc
    elif isinstance(tc, dict):
        if tc.get("type") != "function" or not isinstance(tc.get("name"), str):
            raise bad(f"tool_choice of type '{tc.get('type')}' needs an OpenAI route.", "tool_choice", "UNSUPPORTED_PARAMETER")
        s.tool_choice = tc["name"]
    elif tc is not None:
        raise bad("Invalid type for 'tool_choice'.", "tool_choice")
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):
        kind = fmt.get("type")
        if kind == "json_schema":
            schema = fmt.get("schema")
            if not isinstance(schema, dict):
                raise bad("'text.format.schema' must be a JSON Schema object.", "text.format.schema")
            # OpenAI's chat wrapper {name, schema, strict}: what every adapter takes (and unwraps where needed).
            wrapper = {"name": fmt.get("name") or "response", "schema": schema}
            if isinstance(fmt.get("strict"), bool):
                wrapper["strict"] = fmt["strict"]
            s.response_format, s.json_schema = "json_schema", wrapper
        elif kind == "json_object":
            s.response_format = "json_object"
        elif kind not in (None, "text"):
            raise bad(f"Invalid value for 'text.format.type': {kind!r}.", "text.format.type")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        effort = reasoning["effort"]
        if effort not in EFFORTS:
            raise bad("Invalid value for 'reasoning.effort'.", "reasoning.effort")
        s.reasoning_effort = effort
    return s


def _tools(tools: Any) -> list[Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad("Invalid type for 'tools': expected an array.", "tools")
    out = []
    for i, t in enumerate(tools):
        kind = t.get("type") if isinstance(t, dict) else None
        if kind != "function":
            raise bad(f"Tools of type '{kind}' (tools[{i}]) are hosted by OpenAI: they need an OpenAI route.",
                      f"tools[{i}].type", "UNSUPPORTED_PARAMETER")
        name, params = t.get("name"), t.get("parameters") or {}
        if not isinstance(name, str) or not name or not isinstance(params, dict):
            raise bad(f"'tools[{i}]' needs a name and a parameters object.", f"tools[{i}]")
        out.append(Tool(name, str(t.get("description") or ""), params))
    return out


def _user(body: dict) -> str:
    for k in ("user", "safety_identifier"):
        v = body.get(k)
        if isinstance(v, str):
            return v[:256]
    return ""
