"""OpenAI Chat Completions JSON <-> tollgate.v1 messages: parsing, validation, rendering.

Parsing is strict about shapes the SDK never sends wrong (a clear 400/422 naming the field)
and lenient about fields it does not know (ignored, as OpenAI-compatible servers do).
Rendering builds each stream chunk from a per-stream byte prefix, so a token costs one
small orjson.dumps and a few concatenations.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from google.protobuf.struct_pb2 import Struct

from gateway_http.errors import BridgeError
from tollgate.inprocess import ChatAnswer
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb

ROLES = {"system": pb.ROLE_SYSTEM, "user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT, "tool": pb.ROLE_TOOL,
         "developer": pb.ROLE_DEVELOPER, "function": pb.ROLE_TOOL}
FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length", pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
          pb.FINISH_REASON_CONTENT_FILTER: "content_filter", pb.FINISH_REASON_ERROR: "stop",
          pb.FINISH_REASON_UNSPECIFIED: "stop"}
ROLE_NAMES = {v: k for k, v in ROLES.items() if k != "function"}


def invalid(message: str, param: str | None = None, status: int = 400) -> BridgeError:
    return BridgeError(status, message, param=param, code="invalid_request_error" if status == 400 else "invalid_type")


def load_json(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise invalid("We could not parse the JSON body of your request: the body is empty.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise invalid(f"We could not parse the JSON body of your request ({e.msg}).") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


INFINITIES = (float("inf"), float("-inf"))


def _num(body: dict, name: str, lo: float | None = None, hi: float | None = None) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in INFINITIES:
        raise invalid(f"Invalid type for '{name}': expected a number.", name, 422)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise invalid(f"Invalid value for '{name}': must be between {lo} and {hi}.", name)
    return float(v)


def _int(body: dict, name: str, lo: int = 1) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise invalid(f"Invalid type for '{name}': expected an integer.", name, 422)
    if v < lo:
        raise invalid(f"Invalid value for '{name}': must be at least {lo}.", name)
    return min(v, 2**31 - 1)


def _struct(obj: Any, param: str) -> Struct:
    s = Struct()
    if not isinstance(obj, dict):
        raise invalid(f"Invalid type for '{param}': expected an object.", param, 422)
    try:
        s.update(obj)
    except (ValueError, TypeError):
        raise invalid(f"Invalid value for '{param}': not representable JSON.", param) from None
    return s


def _image(part: dict, where: str) -> pb.ImagePart:
    img = part.get("image_url")
    if isinstance(img, str):
        img = {"url": img}
    if not isinstance(img, dict) or not isinstance(img.get("url"), str):
        raise invalid(f"Invalid value for '{where}.image_url': expected an object with a url.", f"{where}.image_url", 422)
    url = img["url"]
    detail = img.get("detail")
    if detail is None:
        detail = ""
    elif not isinstance(detail, str):
        raise invalid(f"Invalid type for '{where}.image_url.detail': expected a string.", f"{where}.image_url.detail", 422)
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media = header[5:].split(";")[0] or "image/png"
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"Invalid value for '{where}.image_url.url': the data URL is not valid base64.", f"{where}.image_url") from None
        return pb.ImagePart(data=raw, media_type=media, detail=detail)
    if not url.startswith(("http://", "https://")):
        raise invalid(f"Invalid value for '{where}.image_url.url': expected an http(s) or data: URL.", f"{where}.image_url")
    return pb.ImagePart(url=url, detail=detail)


def _message(msg: pb.Message, m: Any, i: int) -> None:
    """Fills `msg` (already in its parent's list: no copy) from messages[i].
    Paths for error texts are formatted only when an error is raised."""
    if not isinstance(m, dict):
        raise invalid(f"Invalid type for 'messages[{i}]': expected an object.", f"messages[{i}]", 422)
    raw_role = m.get("role")
    role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise invalid(f"Invalid value for 'messages[{i}].role': expected one of system, developer, user, assistant, tool.",
                      f"messages[{i}].role")
    msg.role = role
    content = m.get("content")
    if isinstance(content, str):
        msg.text = content
    elif isinstance(content, list):
        where = f"messages[{i}]"
        for j, part in enumerate(content):
            pw = f"{where}.content[{j}]"
            if not isinstance(part, dict):
                raise invalid(f"Invalid type for '{pw}': expected an object.", pw, 422)
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise invalid(f"Invalid type for '{pw}.text': expected a string.", pw, 422)
                msg.parts.append(pb.ContentPart(text=part["text"]))
            elif kind == "image_url":
                msg.parts.append(pb.ContentPart(image=_image(part, pw)))
            else:
                raise invalid(f"Invalid value for '{pw}.type': supported types are text and image_url.", pw)
    elif content is not None:
        raise invalid(f"Invalid type for 'messages[{i}].content': expected a string or an array of parts.",
                      f"messages[{i}].content", 422)
    elif role != pb.ROLE_ASSISTANT:
        raise invalid(f"Missing required parameter: 'messages[{i}].content'.", f"messages[{i}].content")
    if m.get("name") is not None:
        if not isinstance(m["name"], str):
            raise invalid(f"Invalid type for 'messages[{i}].name': expected a string.", f"messages[{i}].name", 422)
        msg.name = m["name"]
    tcs = m.get("tool_calls")
    if tcs is not None:
        where = f"messages[{i}]"
        if not isinstance(tcs, list):
            raise invalid(f"Invalid type for '{where}.tool_calls': expected an array.", f"{where}.tool_calls", 422)
        for tc in tcs:
            fn = tc.get("function") if isinstance(tc, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise invalid(f"Invalid value for '{where}.tool_calls': each needs function.name.", f"{where}.tool_calls")
            args = fn.get("arguments", "")
            msg.tool_calls.append(pb.ToolCall(id=str(tc.get("id", "")), name=fn["name"],
                                              arguments=args if isinstance(args, str) else orjson.dumps(args).decode()))
    if role == pb.ROLE_TOOL:
        tcid = m.get("tool_call_id") or m.get("name") or ""
        if not isinstance(tcid, str) or not tcid:
            raise invalid(f"Missing required parameter: 'messages[{i}].tool_call_id'.", f"messages[{i}].tool_call_id")
        msg.tool_call_id = tcid


# The optional top-level fields chat_input reads. A body with none of them (the usual one:
# model and messages) skips their checks; each check does nothing for an absent field anyway.
OPTIONAL_FIELDS = frozenset({
    "temperature", "top_p", "max_completion_tokens", "max_tokens", "presence_penalty", "frequency_penalty", "seed",
    "stop", "response_format", "tools", "tool_choice", "parallel_tool_calls", "user", "provider", "strategy"})


# Every top-level field the codec interprets. Anything else (n, logprobs, reasoning_effort, ...) and
# max_completion_tokens (which OpenAI's reasoning models take instead of max_tokens) make the
# bridge send the body as well: an OpenAI-shaped route gets it as sent (services/fidelity.py).
KNOWN_FIELDS = (OPTIONAL_FIELDS - {"max_completion_tokens"}) | {"model", "messages", "stream", "stream_options"}


def chat_input(body: dict[str, Any], surface: str = "openai", into: pb.ChatInput | None = None) -> pb.ChatInput:
    """The ChatInput for an OpenAI body. `into` (a new request's empty `input`) is filled in place:
    building a ChatInput and passing it to a request constructor would copy it."""
    model = body.get("model", "")
    if not isinstance(model, str):
        raise invalid("Invalid type for 'model': expected a string.", "model", 422)
    if "\r" in model or "\n" in model or "\0" in model:
        raise invalid("Invalid value for 'model': control characters are not allowed.", "model")
    messages = body.get("messages")
    if messages is None:
        raise invalid("Missing required parameter: 'messages'.", "messages")
    if not isinstance(messages, list):
        raise invalid("Invalid type for 'messages': expected an array.", "messages", 422)
    if not messages:
        raise invalid("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages")
    inp = pb.ChatInput() if into is None else into
    inp.model = model
    inp.surface = surface
    add = inp.messages.add
    for i, m in enumerate(messages):
        # The usual message, {"role": <not tool>, "content": <a string>} and nothing else, needs
        # none of _message()'s other checks: filled here, without the call.
        if type(m) is dict and len(m) == 2 and type(content := m.get("content")) is str \
                and type(raw_role := m.get("role")) is str and (role := ROLES.get(raw_role)) is not None \
                and role != pb.ROLE_TOOL:
            msg = add()
            msg.role = role
            msg.text = content
            continue
        _message(add(), m, i)
    if not body.keys().isdisjoint(OPTIONAL_FIELDS):  # walks the smaller side: at most 15 keys
        _options(inp, body)
    return inp


def _options(inp: pb.ChatInput, body: dict[str, Any]) -> None:
    """Sampling, tools and routing wishes (see OPTIONAL_FIELDS)."""
    s = inp.sampling
    if (v := _num(body, "temperature", 0, 2)) is not None:
        s.temperature = v
    if (v := _num(body, "top_p", 0, 1)) is not None:
        s.top_p = v
    mt = _int(body, "max_completion_tokens")
    mt = mt if mt is not None else _int(body, "max_tokens")
    if mt is not None:
        s.max_tokens = mt
    if (v := _num(body, "presence_penalty", -2, 2)) is not None:
        s.presence_penalty = v
    if (v := _num(body, "frequency_penalty", -2, 2)) is not None:
        s.frequency_penalty = v
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise invalid("Invalid type for 'seed': expected an integer.", "seed", 422)
        s.seed = max(min(seed, 2**63 - 1), -(2**63))
    stop = body.get("stop")
    if isinstance(stop, str):
        s.stop.append(stop)
    elif isinstance(stop, list) and all(isinstance(x, str) for x in stop):
        s.stop.extend(stop[:4])
    elif stop is not None:
        raise invalid("Invalid type for 'stop': expected a string or an array of strings.", "stop", 422)
    rf = body.get("response_format")
    if rf is not None:
        kind = rf.get("type") if isinstance(rf, dict) else None
        if kind == "json_object":
            s.response_format = pb.RESPONSE_FORMAT_JSON_OBJECT
        elif kind == "json_schema":
            s.response_format = pb.RESPONSE_FORMAT_JSON_SCHEMA
            s.json_schema.CopyFrom(_struct(rf.get("json_schema") or {}, "response_format.json_schema"))
        elif kind == "text":
            s.response_format = pb.RESPONSE_FORMAT_TEXT
        else:
            raise invalid("Invalid value for 'response_format.type': expected text, json_object or json_schema.", "response_format")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("Invalid type for 'tools': expected an array.", "tools", 422)
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise invalid(f"Invalid value for 'tools[{i}]': expected a function with a name.", f"tools[{i}]")
            tool = pb.Tool(name=fn["name"], description=str(fn.get("description") or ""))
            if fn.get("parameters") is not None:
                tool.parameters.CopyFrom(_struct(fn["parameters"], f"tools[{i}].function.parameters"))
            inp.tools.append(tool)
    tc = body.get("tool_choice")
    if isinstance(tc, str):
        s.tool_choice = tc
    elif isinstance(tc, dict) and isinstance(tc.get("function"), dict) and isinstance(tc["function"].get("name"), str):
        s.tool_choice = tc["function"]["name"]
    elif tc is not None:
        raise invalid("Invalid type for 'tool_choice': expected a string or {type: function, function: {name}}.", "tool_choice", 422)
    ptc = body.get("parallel_tool_calls")
    if ptc is not None:
        if not isinstance(ptc, bool):
            raise invalid("Invalid type for 'parallel_tool_calls': expected a boolean.", "parallel_tool_calls", 422)
        s.parallel_tool_calls = ptc
    route = inp.route
    for field_name in ("user", "provider", "strategy"):
        v = body.get(field_name)
        if v is None:
            continue
        if not isinstance(v, str):
            raise invalid(f"Invalid type for '{field_name}': expected a string.", field_name, 422)
        if field_name == "user":
            inp.user = v[:256]
        else:
            setattr(route, field_name, v[:256])


def stream_options(body: dict[str, Any]) -> bool:
    """include_usage from stream_options, checking its shape."""
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise invalid("Invalid type for 'stream_options': expected an object.", "stream_options", 422)
    inc = opts.get("include_usage", False)
    if not isinstance(inc, bool):
        raise invalid("Invalid type for 'stream_options.include_usage': expected a boolean.", "stream_options.include_usage", 422)
    return inc


def completion_id(request_id: str) -> str:
    return "chatcmpl-" + request_id.removeprefix("req_")


def usage_json(u: pb.Usage) -> dict[str, Any]:
    return _usage(u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens, u.reasoning_tokens)


def _usage(prompt: int, completion: int, total: int, cached: int, reasoning: int) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def completion_json(resp: ipb.ChatResponse | ChatAnswer, model: str) -> bytes:
    if type(resp) is ChatAnswer:  # in process, asked for (inprocess.py's plain_answer): its values, no tool calls
        p, c = resp.prompt_tokens, resp.completion_tokens
        return _completion(resp.id, resp.created, resp.text, None, resp.reasoning, resp.model or model,
                           resp.finish_reason, _usage(p, c, p + c, resp.cached_tokens, resp.reasoning_tokens))
    return _completion(resp.id, resp.created, resp.text, resp.tool_calls, resp.reasoning, resp.route.model or model,
                       resp.finish_reason, usage_json(resp.usage))


def _completion(request_id: str, created: int, text: str, tcs: Any, reasoning: str, model: str, finish: int,
                usage: dict[str, Any]) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": text if (text or not tcs) else None, "refusal": None}
    if tcs:
        message["tool_calls"] = [{"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
                                 for t in tcs]
    if reasoning:
        message["reasoning_content"] = reasoning
    return orjson.dumps({
        "id": completion_id(request_id), "object": "chat.completion", "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": FINISH[finish]}],
        "usage": usage, "system_fingerprint": None,
    })


class ChunkWriter:
    """Renders one stream's chunks; built when the stream starts (id, created and model fixed)."""

    __slots__ = ("_prefix", "_head", "_content")

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self._head = orjson.dumps({"id": completion_id(request_id), "object": "chat.completion.chunk",
                                   "created": created, "model": model, "system_fingerprint": None})[:-1]
        self._prefix = b"data: " + self._head + b',"choices":[{"index":0,"delta":'
        self._content = self._prefix + b'{"content":'

    def deltas(self, batch: ipb.DeltaBatch) -> bytes:
        ds = batch.deltas
        if len(ds) == 1:
            # One delta per message, as a paced upstream sends them (a token per read): by index.
            # A slice of a upb repeated field first tries the slice as an integer and formats a
            # TypeError, and its iterator ends on a raised IndexError.
            d = ds[0]
            if not (d.role or d.reasoning or d.tool_calls or d.finish_reason):
                text = d.text
                return self._content + orjson.dumps(text) + _OPEN if text else b""
        prefix = self._prefix
        content = self._content
        out: list[bytes] = []  # pieces, joined once
        for d in ds[:]:  # several: one slice beats an index per delta
            role, reasoning, tcs, finish = d.role, d.reasoning, d.tool_calls, d.finish_reason
            if not (role or reasoning or tcs or finish):
                # The per-token common case: {"content": text}, as orjson would write the dict.
                text = d.text
                if text:
                    out += (content, orjson.dumps(text), _OPEN)
                continue
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = ROLE_NAMES.get(role, "assistant")
            text = d.text
            if text or role:
                delta["content"] = text
            if reasoning:
                delta["reasoning_content"] = reasoning
            if tcs:
                delta["tool_calls"] = [
                    {"index": t.index, **({"id": t.id, "type": "function"} if t.id else {}),
                     "function": {**({"name": t.name} if t.name else {}), "arguments": t.arguments}}
                    for t in tcs]
            if finish:
                if delta:
                    out.append(prefix + orjson.dumps(delta) + _CONT)
                out.append(prefix + b'{},"logprobs":null,"finish_reason":"' + FINISH[finish].encode() + b'"}]}\n\n')
            elif delta:
                out.append(prefix + orjson.dumps(delta) + _CONT)
        return b"".join(out)

    def texts(self, texts: tuple[str, ...]) -> bytes:
        """Plain text deltas (each non-empty), rendered as deltas() renders a text-only delta."""
        if len(texts) == 1:
            return self._content + orjson.dumps(texts[0]) + _OPEN
        content = self._content
        return b"".join([content + orjson.dumps(t) + _OPEN for t in texts])

    def role(self) -> bytes:
        return self._prefix + b'{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'

    def usage(self, u: pb.Usage) -> bytes:
        return b"data: " + self._head + b',"choices":[],"usage":' + orjson.dumps(usage_json(u)) + b"}\n\n"


DONE = b"data: [DONE]\n\n"
_CONT = b',"logprobs":null,"finish_reason":null}]}\n\n'  # after a delta object: the rest of a chunk
_OPEN = b"}" + _CONT
