"""The adapter interface every provider module implements, and the shared call context.

An adapter translates one wire format: core ChatRequest -> provider request, provider
response/stream -> core ChatResult / Chunk lists, and provider errors -> UpstreamFailure.
It owns no sessions: the one pooled aiohttp.ClientSession per upstream is handed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping, Protocol

import aiohttp
import orjson

from services.core.errors import UpstreamFailure
from services.core.types import ChatRequest, ChatResult, Chunk, EmbedRequest, EmbedResult, Target

# RELIABILITY E3 / Failover Bench S10: a malformed event is skipped, the rest of the stream kept. More
# than this many in one stream is not a glitch but an upstream speaking something else: a failure.
MAX_SKIPPED_EVENTS = 8
log = logging.getLogger("tollgate.providers")


@dataclass(slots=True)
class Call:
    """Everything one attempt needs besides the request: where, with which key, how long."""

    target: Target
    api_key: str  # the provider key in clear; never logged, never put in an error
    session: aiohttp.ClientSession  # the upstream's shared pooled session
    timeout_s: float  # this attempt's budget (already <= the request's time left)
    first_token_timeout_s: float | None = None
    idle_timeout_s: float | None = None  # max silence between stream reads


class Adapter(Protocol):
    kind: str

    async def chat(self, req: ChatRequest, call: Call) -> ChatResult:
        """One non-streamed attempt. Raises UpstreamFailure on any upstream problem."""

    def stream_chat(self, req: ChatRequest, call: Call) -> AsyncIterator[list[Chunk]]:
        """One streamed attempt: yields the chunks each upstream read produced, in order.

        Raises UpstreamFailure before or during the stream; the last batch carries
        `finish_reason` and, where the provider reports it, `usage`.
        """

    async def embed(self, req: EmbedRequest, call: Call) -> EmbedResult:
        """Embeddings; adapters whose provider has none raise UpstreamFailure('bad_request')."""

    async def list_models(self, call: Call) -> list[str]:
        """The provider's own model ids (used by catalogue refresh; optional)."""

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamFailure:
        """This provider's error answer as an UpstreamFailure kind (RELIABILITY A4)."""

    @staticmethod
    def native_headers(headers: dict[str, str], secret: str) -> None:
        """Seed 003's pass-through: puts the provider key (and any header its API requires) in `headers`."""

    @staticmethod
    def native_url(base_url: str, path: str, query: str) -> str:
        """Seed 003's pass-through: the provider URL for `path` below its API root."""


class MalformedEvent(Exception):
    """A stream event whose data is not a JSON object (truncated, or not JSON at all)."""


def skip_malformed(skipped: int, provider: str) -> int:
    """Count one skipped malformed event; past MAX_SKIPPED_EVENTS the stream is a failure."""
    skipped += 1
    if skipped > MAX_SKIPPED_EVENTS:
        raise UpstreamFailure("protocol", 200, "upstream sent too many malformed stream events")
    if skipped == 1:  # once per stream: the provider's name, never its key or the event's text
        log.warning("skipped a malformed stream event from provider %s", provider)
    return skipped


class StreamEvents:
    """One stream's event objects for the Anthropic, Gemini and Ollama decoders (RELIABILITY E3).

    `parse` hands back an event's JSON object, or None for a malformed one (truncated, not JSON,
    not an object): that event is skipped and the stream goes on, up to MAX_SKIPPED_EVENTS.
    """

    __slots__ = ("provider", "skipped")

    def __init__(self, provider: str = "") -> None:
        self.provider = provider  # only for the one warning; never a key
        self.skipped = 0

    def parse(self, data: bytes) -> dict[str, Any] | None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is dict:  # orjson makes exact dicts
            return obj
        self.skip()
        return None

    def skip(self) -> None:
        """One more malformed event (a decoder found one that parsed but is not its shape)."""
        self.skipped = skip_malformed(self.skipped, self.provider)
