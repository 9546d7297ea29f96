"""Plain dataclasses the core works in: requests, chunks, results, usage, targets.

Proto types stop at rpc/convert.py; everything past it (pipeline, router, adapters, ledger)
speaks these. `slots=True` keeps per-request objects small and cheap to build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ContentPart:
    """One piece of a message: text, or an image by URL or inline bytes."""

    type: str  # "text" | "image"
    text: str = ""
    image_url: str = ""  # http(s) URL or data: URL as the caller sent it
    media_type: str = ""  # e.g. "image/png" when data is inline
    data: bytes = b""  # inline image bytes (decoded from base64)
    detail: str = ""  # OpenAI's "auto" | "low" | "high"


@dataclass(slots=True)
class ToolCall:
    """A function call the model asked for; arguments stay a JSON string as providers send it."""

    id: str
    name: str
    arguments: str = ""


@dataclass(slots=True)
class Message:
    """A chat turn. `parts` is empty for plain text held in `text` (the common, cheap case)."""

    role: str  # "system" | "developer" | "user" | "assistant" | "tool"
    text: str = ""
    parts: list[ContentPart] = field(default_factory=list)
    name: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""  # for role == "tool"

    def plain_text(self) -> str:
        if not self.parts:
            return self.text
        return "".join(p.text for p in self.parts if p.type == "text")


@dataclass(slots=True)
class Tool:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Sampling:
    """Generation parameters; None means 'not set, use the provider default'."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: str = ""  # "" | "text" | "json_object" | "json_schema"
    json_schema: dict[str, Any] | None = None
    tool_choice: str = ""  # "" | "auto" | "none" | "required" | a function name
    parallel_tool_calls: bool | None = None
    reasoning_effort: str = ""  # "" | "none" | "minimal" | "low" | "medium" | "high" | "xhigh" (OpenAI's names)


@dataclass(slots=True)
class RouteHints:
    """What the caller asked of the router: a provider, a strategy, a provider key id."""

    provider: str = ""  # "" or "auto" means any
    strategy: str = ""
    key_id: str = ""


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    sampling: Sampling = field(default_factory=Sampling)
    tools: list[Tool] = field(default_factory=list)
    route: RouteHints = field(default_factory=RouteHints)
    include_usage: bool = False
    user: str = ""
    surface: str = "grpc"  # which front door: grpc, openai, anthropic, api_chat, ...
    # Set only when the caller sent fields the gateway does not interpret (services/fidelity.py):
    raw_body: bytes = b""  # the body as sent, for a route of the surface's own wire format
    extra_fields: tuple[str, ...] = ()  # those fields' names
    raw_headers: dict[str, str] | None = None  # anthropic-version / anthropic-beta / openai-beta as sent
    ignored: tuple[str, ...] = ()  # what a route of another format could not honour, told in X-Tollgate-Ignored


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    cached_tokens: int = 0  # prompt tokens read from the provider's cache (part of prompt_tokens)
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0  # prompt tokens written to the cache (Anthropic; part of prompt_tokens)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Past any context window or answer; sums of a few such counts stay exact in every store's
# BIGINT, in orjson's 64-bit integers and in Redis's Lua doubles.
MAX_TOKEN_COUNT = 2**31 - 1


def token_count(value: object) -> int:
    """An upstream's token counter as a count to meter: a whole number in 0..MAX_TOKEN_COUNT;
    anything else (missing, text, NaN, negative, absurd) counts 0, as a missing counter does.
    An upstream's usage block is its input: a count past 64 bits stalled the ledger for every
    caller (no batch with it could be written), and a negative one gave quota back."""
    if type(value) is int:
        return value if 0 <= value <= MAX_TOKEN_COUNT else 0
    if type(value) is float:
        return int(value) if 0 <= value <= MAX_TOKEN_COUNT else 0  # NaN fails both tests
    if type(value) is str and len(value) <= 12:  # some OpenAI-compatible servers send "12"
        try:
            return token_count(int(value))
        except ValueError:
            return 0
    return 0


@dataclass(slots=True)
class ToolCallDelta:
    """A streamed fragment of a tool call; `index` ties fragments of one call together."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class Chunk:
    """One streamed delta. Adapters yield lists of these: what arrived in one read."""

    text: str = ""
    role: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str = ""  # "" | "stop" | "length" | "tool_calls" | "content_filter" | "error"
    usage: Usage | None = None  # set on the chunk that carries the provider's usage


def has_content(chunks: list[Chunk]) -> bool:
    """Whether a batch holds a first token: text, a tool call or reasoning (not a bare role)."""
    return any(c.text or c.tool_calls or c.reasoning for c in chunks)


@dataclass(slots=True)
class ChatResult:
    """A whole (non-streamed) answer."""

    text: str
    finish_reason: str
    usage: Usage
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str = ""
    model: str = ""  # the model the upstream says answered
    response_id: str = ""


@dataclass(slots=True)
class EmbedRequest:
    model: str
    inputs: list[str]
    dimensions: int | None = None
    route: RouteHints = field(default_factory=RouteHints)
    user: str = ""
    surface: str = "grpc"


@dataclass(slots=True)
class EmbedResult:
    vectors: list[list[float]]
    usage: Usage
    model: str = ""


@dataclass(slots=True, frozen=True)
class Target:
    """One routing candidate: a provider, one of its keys, and the upstream model name."""

    provider: str  # provider name as configured (unique)
    kind: str  # provider kind: openai, anthropic, gemini, ollama, demo, ...
    key_id: str  # public id of the provider key, safe to show; never the key
    model: str  # model name sent upstream
    base_url: str
    timeout_s: float = 60.0
    owner: str = ""  # user id for a user's own provider key; "" for the gateway's
    guarded: bool = False  # a caller-supplied base URL (a loaded model's): SSRF-guarded connector (F8)
