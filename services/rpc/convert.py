"""Proto <-> core conversions: where tollgate.v1 messages stop and core.types begin."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict

from services.core.errors import FieldViolation, InvalidArgument
from services.core.types import (
    ChatRequest, ChatResult, Chunk, ContentPart, EmbedRequest, Message, RouteHints, Sampling, Tool, ToolCall, Usage,
)
from services.limits.base import Decision
from services.routing.route_log import RouteLog
from tollgate.inprocess import ChatAnswer
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb

ROLE_NAMES = {pb.ROLE_UNSPECIFIED: "user", pb.ROLE_SYSTEM: "system", pb.ROLE_USER: "user",
              pb.ROLE_ASSISTANT: "assistant", pb.ROLE_TOOL: "tool", pb.ROLE_DEVELOPER: "developer"}
ROLE_VALUES = {v: k for k, v in ROLE_NAMES.items() if k != pb.ROLE_UNSPECIFIED}
FINISH_VALUES = {"": pb.FINISH_REASON_UNSPECIFIED, "stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH,
                 "tool_calls": pb.FINISH_REASON_TOOL_CALLS, "content_filter": pb.FINISH_REASON_CONTENT_FILTER,
                 "error": pb.FINISH_REASON_ERROR}
FORMATS = {pb.RESPONSE_FORMAT_UNSPECIFIED: "", pb.RESPONSE_FORMAT_TEXT: "text",
           pb.RESPONSE_FORMAT_JSON_OBJECT: "json_object", pb.RESPONSE_FORMAT_JSON_SCHEMA: "json_schema"}


MODEL_MAX = 256
# A request without routing wishes (nearly every one) shares this one; nothing writes a RouteHints.
NO_HINTS = RouteHints()


MODEL_REQUIRED = ("api_v1",)  # surfaces whose seed has no default model (004)


def check_model(model: str, field: str = "model") -> None:
    """Model names travel in headers and metadata: printable, bounded (RELIABILITY E6, E9)."""
    # For ASCII text isprintable() is exactly "no C0 control, no DEL"; C1 controls are not ASCII.
    if len(model) > MODEL_MAX or not model.isascii() or not model.isprintable():
        raise InvalidArgument(f"{field} must be printable ASCII, at most {MODEL_MAX} characters", reason="INVALID_MODEL",
                              field_violations=[FieldViolation(field, "printable ASCII, at most 256 characters")])


def chat_request(inp: pb.ChatInput, max_messages: int, include_usage: bool = False) -> ChatRequest:
    # Once per request. Each read of a upb field builds a new Python object (a str, or a
    # container wrapper for a repeated field): read each once, and skip the empty ones.
    model = inp.model
    if len(model) > MODEL_MAX or not model.isascii() or not model.isprintable():
        check_model(model)  # raises: the test written out for the usual name
    if not model and inp.surface in MODEL_REQUIRED:
        # Seed 004: a request without `model` is refused in its words, not given the default model.
        raise InvalidArgument("Validation error", reason="MODEL_REQUIRED",
                              field_violations=[FieldViolation("model", "Model is required")])
    messages = inp.messages
    if not messages:
        raise InvalidArgument("messages must not be empty", reason="MESSAGES_REQUIRED",
                              field_violations=[FieldViolation("messages", "at least one message is required")])
    if len(messages) > max_messages:
        raise InvalidArgument(f"too many messages: {len(messages)} > {max_messages}", reason="TOO_MANY_MESSAGES",
                              field_violations=[FieldViolation("messages", f"at most {max_messages} messages")])
    msgs = []
    # By index: a upb repeated field's iterator ends on an IndexError, formatted and raised.
    for i in range(len(messages)):
        m = messages[i]
        role = ROLE_NAMES.get(m.role)
        if role is None:
            raise InvalidArgument(f"messages[{i}].role is not a known role", reason="INVALID_ROLE",
                                  field_violations=[FieldViolation(f"messages[{i}].role", "unknown role")])
        msg = Message(role, m.text, [], m.name, [], m.tool_call_id)
        parts = m.parts
        if parts:
            msg.parts = [_part(p) for p in parts]
        tool_calls = m.tool_calls
        if tool_calls:
            msg.tool_calls = [ToolCall(t.id, t.name, t.arguments) for t in tool_calls]
        msgs.append(msg)
    sampling = _sampling(inp.sampling) if inp.HasField("sampling") else Sampling()  # unset: the defaults
    if sampling.max_tokens is not None and sampling.max_tokens < 1:
        raise InvalidArgument("max_tokens must be at least 1", reason="INVALID_MAX_TOKENS",
                              field_violations=[FieldViolation("sampling.max_tokens", "must be >= 1")])
    tools = inp.tools
    tools = [Tool(t.name, t.description, MessageToDict(t.parameters) if t.HasField("parameters") else {})
             for t in tools] if tools else []
    if inp.HasField("route"):
        r = inp.route
        hints = RouteHints(r.provider, r.strategy, r.key_id)
    else:
        hints = NO_HINTS
    req = ChatRequest(model, msgs, sampling, tools, hints, include_usage, inp.user, inp.surface or "grpc")
    raw = inp.raw_body
    if raw:  # fields only the provider understands (services/fidelity.py); empty on the usual request
        req.raw_body = raw
        req.extra_fields = tuple(inp.extra_fields)
        req.raw_headers = dict(inp.raw_headers)
    return req


def _sampling(s: pb.Sampling) -> Sampling:
    if not s.ListFields():
        return Sampling()  # set but empty: the defaults
    return Sampling(
        temperature=s.temperature if s.HasField("temperature") else None,
        top_p=s.top_p if s.HasField("top_p") else None,
        max_tokens=s.max_tokens if s.HasField("max_tokens") else None,
        stop=list(s.stop),
        seed=s.seed if s.HasField("seed") else None,
        presence_penalty=s.presence_penalty if s.HasField("presence_penalty") else None,
        frequency_penalty=s.frequency_penalty if s.HasField("frequency_penalty") else None,
        response_format=FORMATS.get(s.response_format, ""),
        json_schema=MessageToDict(s.json_schema) if s.HasField("json_schema") else None,
        tool_choice=s.tool_choice,
        parallel_tool_calls=s.parallel_tool_calls if s.HasField("parallel_tool_calls") else None,
        reasoning_effort=s.reasoning_effort,
    )


def _part(p: pb.ContentPart) -> ContentPart:
    if p.WhichOneof("part") == "image":
        img = p.image
        return ContentPart("image", image_url=img.url, data=img.data, media_type=img.media_type, detail=img.detail)
    return ContentPart("text", text=p.text)


def embed_request(r: ipb.EmbedRequest) -> EmbedRequest:
    check_model(r.model)
    if not r.inputs:
        raise InvalidArgument("inputs must not be empty", reason="INPUT_REQUIRED",
                              field_violations=[FieldViolation("inputs", "at least one input is required")])
    return EmbedRequest(model=r.model, inputs=list(r.inputs), dimensions=r.dimensions if r.HasField("dimensions") else None,
                        route=RouteHints(r.route.provider, r.route.strategy, r.route.key_id), user=r.user,
                        surface=r.surface or "grpc")


# Responses are filled in place (fill_*): a message passed as a keyword is copied into its parent,
# once per level, and these run on every request. Every field is proto3 implicit presence, so a
# zero is the same as unset: only non-zero values are written (each write costs a upb call).


def fill_usage(dst: pb.Usage, u: Usage | None, cost: float = 0.0) -> None:
    # A field written to a submessage sets it in its parent (upb reifies it, even for a zero):
    # SetInParent() only when nothing is written.
    if u is None:
        dst.SetInParent()
        return
    dst.prompt_tokens = u.prompt_tokens
    dst.completion_tokens = u.completion_tokens
    dst.total_tokens = u.prompt_tokens + u.completion_tokens
    if u.estimated:
        dst.estimated = True
    if u.cached_tokens:
        dst.cached_tokens = u.cached_tokens
    if u.reasoning_tokens:
        dst.reasoning_tokens = u.reasoning_tokens
    if cost:
        dst.cost_usd = cost


def fill_route(dst: pb.Route, log: RouteLog) -> None:
    t = log.target  # no SetInParent(): `strategy` is always written, which sets it (fill_usage)
    if t is not None:
        dst.provider = t.provider
        dst.kind = t.kind
        dst.model = log.upstream_model or t.model
        dst.key_id = t.key_id
    dst.strategy = log.strategy
    add = dst.attempts.add
    for a in log.attempts:
        d = add()  # then attribute writes: cheaper than add(**fields) on upb
        d.provider = a.provider
        d.key_id = a.key_id
        d.model = a.model
        d.outcome = a.outcome
        if a.status:
            d.status = a.status
        if a.latency_ms:
            d.latency_ms = a.latency_ms


def fill_rate_limit(parent: ipb.ChatResponse | ipb.StreamStart, d: Decision | None) -> None:
    """Sets `parent.rate_limit` from `d`; leaves it unset when there is no decision."""
    if d is None:
        return
    dst = parent.rate_limit  # written below: set in its parent without SetInParent() (fill_usage)
    dst.limit = d.limit
    dst.remaining = d.remaining
    dst.used = d.used
    dst.reset_at = d.reset_at
    dst.rule = d.rule


def usage(u: Usage | None, cost: float = 0.0) -> pb.Usage:
    out = pb.Usage()
    fill_usage(out, u, cost)
    return out


def route(log: RouteLog) -> pb.Route:
    out = pb.Route()
    fill_route(out, log)
    return out


def rate_limit(d: Decision | None) -> pb.RateLimitState | None:
    if d is None:
        return None
    return pb.RateLimitState(limit=d.limit, remaining=d.remaining, used=d.used, reset_at=d.reset_at, rule=d.rule)


def chat_response(res: ChatResult, request_id: str, log: RouteLog, u: Usage | None, cost: float,
                  created: float, d: Decision | None) -> ipb.ChatResponse:
    out = ipb.ChatResponse()  # attribute writes: cheaper than keywords on upb, zeros skipped
    out.id = request_id
    if res.text:
        out.text = res.text
    if res.reasoning:
        out.reasoning = res.reasoning
    out.finish_reason = FINISH_VALUES.get(res.finish_reason, pb.FINISH_REASON_STOP)
    out.created = int(created)
    if res.tool_calls:
        add = out.tool_calls.add
        for t in res.tool_calls:
            add(id=t.id, name=t.name, arguments=t.arguments)
    fill_usage(out.usage, u, cost)
    fill_route(out.route, log)
    fill_rate_limit(out, d)
    return out


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def chat_answer(res: ChatResult, request_id: str, log: RouteLog, u: Usage | None,
                created: float) -> ChatAnswer | None:
    """chat_response()'s values as a ChatAnswer, for an in-process caller that renders them
    (inprocess.py's plain_answer); None when a value would not go into the message as it is
    (a tool call, a value of another type, a count outside int32: the message's rules apply
    then, its errors included)."""
    t = log.target
    model = (log.upstream_model or t.model) if t is not None else ""
    text, reasoning = res.text, res.reasoning
    if res.tool_calls or type(text) is not str or type(reasoning) is not str or type(model) is not str:
        return None
    p = c = cached = reasoning_tokens = 0
    if u is not None:
        p, c, cached, reasoning_tokens = u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens
        for n in (p, c, p + c, cached, reasoning_tokens):  # int32 in the message: it would refuse these
            if type(n) is not int or not INT32_MIN <= n <= INT32_MAX:
                return None
    return ChatAnswer(request_id, int(created), text, reasoning,
                      FINISH_VALUES.get(res.finish_reason, pb.FINISH_REASON_STOP), [], model, p, c, cached,
                      reasoning_tokens)


def plain_texts(batch: list[Chunk]) -> tuple[str, ...] | None:
    """The batch as its texts when every delta in it is plain text (what delta_batch would put in
    a message as `text` alone; a chunk carrying nothing, i.e. only usage, is left out as there),
    else None: the message it is. For an in-process caller that renders text deltas itself."""
    if len(batch) == 1:  # a token per upstream read: no loop
        c = batch[0]
        if c.role or c.reasoning or c.finish_reason or c.tool_calls:
            return None
        return (c.text,) if c.text else ()
    out = []
    for c in batch:
        if c.role or c.reasoning or c.finish_reason or c.tool_calls:
            return None
        if c.text:
            out.append(c.text)
    return tuple(out)


def delta_batch(batch: list[Chunk]) -> ipb.StreamChatResponse | None:
    """The batch's deltas as one message; None when it holds none (only usage: that travels in
    its own message)."""
    # Once per upstream read, a delta per token: add() fills the repeated field in place,
    # several times cheaper than building ChoiceDelta messages and copying the list in.
    # Only non-default fields are set (proto3 implicit presence: the same message).
    msg = ipb.StreamChatResponse()
    out = msg.delta
    add = out.deltas.add
    n = 0
    for c in batch:
        text = c.text
        if text and not (c.role or c.reasoning or c.finish_reason or c.tool_calls):
            add().text = text  # a token of text, nearly every delta: the short way
            n += 1
            continue
        role, reasoning, finish, tcs = c.role, c.reasoning, c.finish_reason, c.tool_calls
        if not (text or role or reasoning or tcs or finish):
            continue  # a usage-only chunk: usage travels in its own message
        d = add()
        n += 1
        if text:
            d.text = text
        if reasoning:
            d.reasoning = reasoning
        if finish:
            d.finish_reason = FINISH_VALUES.get(finish, 0)
        if role:
            d.role = ROLE_VALUES.get(role, pb.ROLE_ASSISTANT)
        if tcs:
            d.tool_calls.extend(pb.ToolCallDelta(index=t.index, id=t.id, name=t.name, arguments=t.arguments) for t in tcs)
    return msg if n else None
