"""Anthropic Messages JSON <-> tollgate.v1 messages, so the anthropic SDK can reach any routed model.

Request: `chat_input` (POST /v1/messages body -> ChatInput). `system` becomes a system message;
tool_result blocks become `tool` turns (before the rest of their user turn, as OpenAI-shaped
upstreams need them right after the assistant's tool calls); tool_use blocks become the
assistant's tool calls with `input` as a JSON string. Strict where Anthropic is (max_tokens is
required, temperature 0-1), lenient about fields it does not know.

Answer: `message_json` and `StreamWriter`, which renders Anthropic's event sequence:
message_start, then per block content_block_start / _delta / _stop (a ping after the first
start), message_delta with stop_reason and usage, message_stop. StreamStart carries no usage,
so message_start reports input_tokens 0 and message_delta the real input and output counts;
message_delta's counts are cumulative (the SDK overwrites its snapshot with them), so a client
that adds the two numbers gets the same total as one that takes the last.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from google.protobuf.struct_pb2 import Struct

from gateway_http.errors import BridgeError
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb

STOP_REASONS = {pb.FINISH_REASON_STOP: "end_turn", pb.FINISH_REASON_LENGTH: "max_tokens",
                pb.FINISH_REASON_TOOL_CALLS: "tool_use", pb.FINISH_REASON_CONTENT_FILTER: "refusal",
                pb.FINISH_REASON_ERROR: "end_turn", pb.FINISH_REASON_UNSPECIFIED: "end_turn"}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def invalid(message: str, param: str | None = None) -> BridgeError:
    return BridgeError(400, message, param=param, code="invalid_request_error")


def load_json(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise invalid("There was an error parsing the body of your request: the body is empty.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise invalid(f"There was an error parsing the body of your request: {e.msg}.") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def _text_of(content: Any, where: str) -> str:
    """A string, or the text of a list of text blocks (system prompts, tool results)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(f"{where}: Input should be a valid string or list of text blocks", where)
    out = []
    for i, b in enumerate(content):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise invalid(f"{where}.{i}: Input should be a text block", f"{where}.{i}")
        out.append(b["text"])
    return "\n".join(out)


def _image(block: dict, where: str) -> pb.ImagePart:
    src = block.get("source")
    kind = src.get("type") if isinstance(src, dict) else None
    if kind == "base64":
        media = src.get("media_type")
        if not isinstance(media, str) or media not in IMAGE_TYPES:
            raise invalid(f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
                          f"{where}.source.media_type")
        try:
            data = base64.b64decode(src.get("data") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise invalid(f"{where}.source.data: invalid base64 data", f"{where}.source.data") from None
        if not data:
            raise invalid(f"{where}.source.data: Field required", f"{where}.source.data")
        return pb.ImagePart(data=data, media_type=media)
    if kind == "url" and isinstance(src.get("url"), str) and src["url"].startswith(("http://", "https://")):
        return pb.ImagePart(url=src["url"])
    raise invalid(f"{where}.source: expected a base64 or url image source", f"{where}.source")


def _tool_result(block: dict, where: str) -> tuple[pb.Message, list[pb.ContentPart]]:
    """A tool_result as a `tool` turn; images in it come back to ride on the user turn that follows."""
    tid = block.get("tool_use_id")
    if not isinstance(tid, str) or not tid:
        raise invalid(f"{where}.tool_use_id: Field required", f"{where}.tool_use_id")
    content = block.get("content", "")
    texts, images = [], []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for k, inner in enumerate(content):
            kind = inner.get("type") if isinstance(inner, dict) else None
            if kind == "text" and isinstance(inner.get("text"), str):
                texts.append(inner["text"])
            elif kind == "image":
                images.append(pb.ContentPart(image=_image(inner, f"{where}.content.{k}")))
            else:
                raise invalid(f"{where}.content.{k}: Input should be a text or image block", f"{where}.content.{k}")
    elif content is not None:
        raise invalid(f"{where}.content: Input should be a valid string or list", f"{where}.content")
    return pb.Message(role=pb.ROLE_TOOL, text="\n".join(texts), tool_call_id=tid), images


def _messages(m: Any, i: int, extras: list[str] | None = None) -> list[pb.Message]:
    where = f"messages.{i}"
    if not isinstance(m, dict):
        raise invalid(f"{where}: Input should be an object", where)
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise invalid(f"{where}.role: Input should be 'user' or 'assistant'", f"{where}.role")
    content = m.get("content")
    if isinstance(content, str):
        return [pb.Message(role=pb.ROLE_USER if role == "user" else pb.ROLE_ASSISTANT, text=content)]
    if not isinstance(content, list):
        raise invalid(f"{where}.content: Input should be a valid string or list", f"{where}.content")
    out: list[pb.Message] = []
    parts: list[pb.ContentPart] = []
    calls: list[pb.ToolCall] = []
    for j, b in enumerate(content):
        bw = f"{where}.content.{j}"
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            if not isinstance(b.get("text"), str):
                raise invalid(f"{bw}.text: Input should be a valid string", f"{bw}.text")
            parts.append(pb.ContentPart(text=b["text"]))
        elif kind == "document" and isinstance(b.get("source"), dict) and b["source"].get("type") == "text":
            parts.append(pb.ContentPart(text=str(b["source"].get("data") or "")))
        elif kind == "image" and role == "user":
            parts.append(pb.ContentPart(image=_image(b, bw)))
        elif kind == "tool_result" and role == "user":
            msg, images = _tool_result(b, bw)
            out.append(msg)
            parts.extend(images)
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str) or not b["name"]:
                raise invalid(f"{bw}: tool_use blocks need an id and a name", bw)
            args = b.get("input", {})
            if not isinstance(args, dict):
                raise invalid(f"{bw}.input: Input should be a valid dictionary", f"{bw}.input")
            calls.append(pb.ToolCall(id=b["id"], name=b["name"], arguments=orjson.dumps(args).decode()))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # signed by the provider that wrote it; other upstreams cannot take it back
        elif extras is not None and isinstance(kind, str):
            extras.append(f"{bw}.type")  # Anthropic's own (server tool results, documents, ...): as sent, or refused
        else:
            raise invalid(f"{bw}.type: block type {kind!r} is not supported in a {role} message here", f"{bw}.type")
    if role == "assistant":
        text = "".join(p.text for p in parts)
        if text or calls or not out:
            out.append(pb.Message(role=pb.ROLE_ASSISTANT, text=text, tool_calls=calls))
    elif parts:
        if len(parts) == 1 and parts[0].WhichOneof("part") == "text":
            out.append(pb.Message(role=pb.ROLE_USER, text=parts[0].text))
        else:
            out.append(pb.Message(role=pb.ROLE_USER, parts=parts))
    return out


def _number(body: dict, name: str, lo: float, hi: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or not lo <= v <= hi:
        raise invalid(f"{name}: Input should be a number between {lo:g} and {hi:g}", name)
    return float(v)


def _tools(body: dict, inp: pb.ChatInput, extras: list[str] | None = None) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list", "tools")
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise invalid(f"tools.{i}.name: Field required", f"tools.{i}.name")
        if t.get("type") not in (None, "custom") and extras is not None:
            extras.append(f"tools.{i}.type")  # a server tool: sent as is to Anthropic, refused elsewhere
            continue
        if t.get("type") not in (None, "custom"):
            raise invalid(f"tools.{i}.type: {t['type']!r} is a server tool; only custom tools can be routed to any model",
                          f"tools.{i}.type")
        schema = t.get("input_schema")
        if not isinstance(schema, dict):
            raise invalid(f"tools.{i}.input_schema: Field required", f"tools.{i}.input_schema")
        params = Struct()
        try:
            params.update(schema)
        except (ValueError, TypeError):
            raise invalid(f"tools.{i}.input_schema: not representable JSON", f"tools.{i}.input_schema") from None
        inp.tools.append(pb.Tool(name=t["name"], description=str(t.get("description") or ""), parameters=params))
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(kind, str):
        kind = None
    if kind == "tool":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise invalid("tool_choice.name: Field required", "tool_choice.name")
        inp.sampling.tool_choice = choice["name"]
    elif kind in TOOL_CHOICES:
        inp.sampling.tool_choice = TOOL_CHOICES[kind]
    else:
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True:
        inp.sampling.parallel_tool_calls = False


# Top-level fields the codec interprets. Any other (thinking, metadata, top_k, service_tier,
# container, mcp_servers, ...), cache_control anywhere, and an anthropic-beta header make the
# bridge send the body as well: an Anthropic route gets it as sent (services/fidelity.py).
KNOWN_FIELDS = frozenset({"model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature",
                          "top_p", "tools", "tool_choice"})


def chat_input(body: dict[str, Any], require_max_tokens: bool = True,
               extras: list[str] | None = None) -> pb.ChatInput:
    """`extras` (a list): lenient about Anthropic's own block and tool types, named into it instead."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required", "model")
    if any(c in model for c in "\r\n\0"):
        raise invalid("model: control characters are not allowed", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: at least one message is required", "messages")
    inp = pb.ChatInput(model=model, surface="anthropic")
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            inp.messages.append(pb.Message(role=pb.ROLE_SYSTEM, text=text))
    for i, m in enumerate(messages):
        inp.messages.extend(_messages(m, i, extras))
    s = inp.sampling
    mt = body.get("max_tokens")
    if mt is None:
        if require_max_tokens:
            raise invalid("max_tokens: Field required", "max_tokens")
    elif isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        raise invalid("max_tokens: Input should be an integer greater than or equal to 1", "max_tokens")
    else:
        s.max_tokens = min(mt, 2**31 - 1)
    if (v := _number(body, "temperature", 0.0, 1.0)) is not None:
        s.temperature = v
    if (v := _number(body, "top_p", 0.0, 1.0)) is not None:
        s.top_p = v
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(x, str) for x in stops):
            raise invalid("stop_sequences: Input should be a valid list of strings", "stop_sequences")
        s.stop.extend(stops)
    _tools(body, inp, extras)
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict) or not isinstance(meta.get("user_id", ""), (str, type(None))):
            raise invalid("metadata: Input should be an object with an optional string user_id", "metadata")
        if isinstance(meta.get("user_id"), str):
            inp.user = meta["user_id"][:256]
    thinking = body.get("thinking")
    if thinking is not None and (not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str)):
        raise invalid("thinking: Input should be an object with a type", "thinking")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean", "stream")
    return inp


def wants_thinking(body: dict[str, Any]) -> bool:
    """Reasoning is shown as thinking blocks only when asked for, as Anthropic does."""
    t = body.get("thinking")
    return isinstance(t, dict) and t.get("type") in ("enabled", "adaptive")


def message_id(request_id: str) -> str:
    return "msg_" + request_id.removeprefix("req_")


def tool_id(request_id: str, i: int) -> str:
    return f"toolu_{request_id.removeprefix('req_')}_{i}"


def usage_json(u: pb.Usage) -> dict[str, int]:
    return {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens}


def stop_reason(finish: int, has_tools: bool) -> str:
    reason = STOP_REASONS.get(finish, "end_turn")
    return "tool_use" if has_tools and reason == "end_turn" else reason


def message_json(resp: ipb.ChatResponse, model: str, thinking: bool) -> bytes:
    content: list[dict[str, Any]] = []
    if thinking and resp.reasoning:
        content.append({"type": "thinking", "thinking": resp.reasoning, "signature": ""})
    if resp.text or not resp.tool_calls:
        content.append({"type": "text", "text": resp.text})
    for i, t in enumerate(resp.tool_calls):
        try:
            args = orjson.loads(t.arguments) if t.arguments else {}
        except orjson.JSONDecodeError:
            args = {"_raw": t.arguments}  # a model wrote broken JSON: keep it visible, not lost
        content.append({"type": "tool_use", "id": t.id or tool_id(resp.id, i), "name": t.name,
                        "input": args if isinstance(args, dict) else {"_value": args}})
    return orjson.dumps({
        "id": message_id(resp.id), "type": "message", "role": "assistant", "model": resp.route.model or model,
        "content": content, "stop_reason": stop_reason(resp.finish_reason, bool(resp.tool_calls)),
        "stop_sequence": None, "usage": usage_json(resp.usage),
    })


def frame(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


PING = frame("ping", {"type": "ping"})


class StreamWriter:
    """Renders one stream's events; content blocks open and close in order, as Anthropic's do."""

    __slots__ = ("_id", "_model", "_thinking", "_index", "_open", "_tools", "_pinged", "_usage", "_request_id")

    def __init__(self, request_id: str, model: str, thinking: bool) -> None:
        self._request_id = request_id
        self._id = message_id(request_id)
        self._model = model
        self._thinking = thinking
        self._index = -1  # the latest block's index
        self._open = ""  # the open block's type: "" | "text" | "thinking" | "tool_use"
        self._tools: dict[int, int] = {}  # upstream tool-call index -> block index
        self._pinged = False
        self._usage: pb.Usage | None = None

    def start(self) -> bytes:
        return frame("message_start", {"type": "message_start", "message": {
            "id": self._id, "type": "message", "role": "assistant", "model": self._model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})

    def _begin(self, block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self._index += 1
        self._open = block["type"]
        out.append(frame("content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}))
        if not self._pinged:
            self._pinged = True
            out.append(PING)

    def _close(self, out: list[bytes]) -> None:
        if self._open:
            out.append(frame("content_block_stop", {"type": "content_block_stop", "index": self._index}))
            self._open = ""

    def _delta(self, index: int, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(frame("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))

    def deltas(self, batch: ipb.DeltaBatch) -> bytes:
        out: list[bytes] = []
        for d in batch.deltas:
            if d.reasoning and self._thinking:
                if self._open != "thinking":
                    self._begin({"type": "thinking", "thinking": "", "signature": ""}, out)
                self._delta(self._index, {"type": "thinking_delta", "thinking": d.reasoning}, out)
            if d.text:
                if self._open != "text":
                    self._begin({"type": "text", "text": ""}, out)
                self._delta(self._index, {"type": "text_delta", "text": d.text}, out)
            for t in d.tool_calls:
                block = self._tools.get(t.index)
                if block is None:
                    self._begin({"type": "tool_use", "id": t.id or tool_id(self._request_id, len(self._tools)),
                                 "name": t.name, "input": {}}, out)
                    block = self._tools[t.index] = self._index
                if t.arguments:
                    # A late fragment of an earlier call still names that call's block.
                    self._delta(block, {"type": "input_json_delta", "partial_json": t.arguments}, out)
        return b"".join(out)

    def usage(self, u: pb.Usage) -> None:
        self._usage = u

    def end(self, end: ipb.StreamEnd) -> bytes:
        out: list[bytes] = []
        if self._index < 0:
            self._begin({"type": "text", "text": ""}, out)  # as the non-streamed answer: one text block
        self._close(out)
        u = self._usage if self._usage is not None else end.usage
        out.append(frame("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": stop_reason(end.finish_reason, bool(self._tools)),
                                               "stop_sequence": None},
            "usage": usage_json(u)}))
        out.append(frame("message_stop", {"type": "message_stop"}))
        return b"".join(out)


def estimate_tokens(inp: pb.ChatInput) -> int:
    """count_tokens: a rough estimate (~4 characters a token, framing per message); flagged as such."""
    chars = 0
    n = 3
    for m in inp.messages:
        n += 3
        chars += len(m.text) + sum(len(p.text) for p in m.parts) + sum(len(t.name) + len(t.arguments) for t in m.tool_calls)
        n += 85 * sum(1 for p in m.parts if p.WhichOneof("part") == "image")
    for t in inp.tools:
        chars += len(t.name) + len(t.description) + len(str(t.parameters))
    return n + round(chars / 4)
