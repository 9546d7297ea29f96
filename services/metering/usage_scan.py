"""Usage in a relayed provider-native body (seed 003's pass-through), found as it streams by.

`UsageMeter` looks for the provider's usage without parsing every event: it keeps the raw last
event that mentions usage (per SSE event name) and parses only those at the end; a JSON body is
kept whole up to KEEP_BYTES, beyond that only its tail. It also counts the text relayed, for an
estimate when no usage comes. OpenAI, Anthropic (also Responses) and Gemini spellings are read.
"""

from __future__ import annotations

import re

import orjson

from services.core.types import Usage, token_count
from services.providers.sse import SSEParser

KEEP_BYTES = 1024 * 1024  # a JSON body up to this is scanned whole for usage
TAIL_BYTES = 256 * 1024  # beyond it, only the tail (where every provider puts usage)
# String values that carry text in answers (stream deltas included). Possessive: no backtracking,
# so a string cut at a read boundary costs one pass, never an exponential search.
_TEXT = re.compile(rb'"(?:text|content|partial_json|arguments|thinking|delta)"\s*:\s*"((?:[^"\\]++|\\.)*+)"')


class UsageMeter:
    """Finds the provider's usage in a relayed body, fed piece by piece as it is relayed."""

    __slots__ = ("_parser", "_last", "_buf", "_size", "_scanned", "chars", "pieces", "_merged")

    def __init__(self, sse: bool) -> None:
        self._parser = SSEParser() if sse else None
        self._last: dict[str, bytes] = {}  # SSE: the last data mentioning usage, per event name
        self._buf = bytearray()  # JSON: the body (or its tail past KEEP_BYTES)
        self._size = 0  # JSON: bytes seen in all
        self._scanned = False
        self.chars = 0  # text relayed, for an estimate when no usage comes
        self.pieces = 0
        self._merged: dict = {}  # the usage object reported() found (for its cache counts)

    def feed(self, data: bytes) -> None:
        """Raises ValueError when one SSE event is over the parser's limit (RELIABILITY E10)."""
        if self._parser is None:
            self._size += len(data)
            self._buf += data
            if len(self._buf) > KEEP_BYTES:
                del self._buf[:-TAIL_BYTES]
            return
        for ev in self._parser.feed(data):
            self._event(ev.event, ev.data)

    def close(self) -> None:
        if self._parser is not None:
            for ev in self._parser.close():
                self._event(ev.event, ev.data)

    def _event(self, name: str, data: bytes) -> None:
        if b'"usage' in data:
            self._last[name] = data
        self._count(data)

    def _count(self, data: bytes | bytearray) -> None:
        for t in _TEXT.finditer(data):
            n = len(t.group(1))
            if n:
                self.chars += n
                self.pieces += 1

    def reported(self) -> tuple[int, int] | None:
        """(prompt, completion) as the provider reported them, or None."""
        merged: dict = {}
        if self._parser is None:
            if not self._scanned:
                # Counted once, on what is kept; a long body's count is scaled up from its tail.
                self._scanned = True
                self._count(self._buf)
                if self._size > len(self._buf) and self._buf:
                    self.chars = round(self.chars * self._size / len(self._buf))
            u = _last_object(self._buf)
            if u is None:
                return None
            merged = u
        else:
            # Anthropic: message_start has input_tokens, message_delta the cumulative output_tokens.
            for data in self._last.values():
                try:
                    u = _usage_of(orjson.loads(data))
                except orjson.JSONDecodeError:
                    continue
                if u:
                    merged.update(u)
            if not merged:
                return None
        self._merged = merged
        return _counts(merged)

    def document(self) -> dict | None:
        """A whole JSON object answer, parsed (for fields other than usage: an image count, an
        audio duration); None for a stream, a non-JSON body (audio bytes, text) or a cut one."""
        if self._parser is not None or self._size != len(self._buf) or self._buf.lstrip()[:1] != b"{":
            return None
        try:
            doc = orjson.loads(self._buf)
        except orjson.JSONDecodeError:
            return None
        return doc if isinstance(doc, dict) else None

    def usage(self, prompt_estimate: int, complete: bool, ok: bool) -> Usage:
        got = self.reported()
        if not ok:  # an error answer: what it reports, else nothing was generated
            return Usage(*(got or (0, 0)), estimated=not complete)
        if got is not None and complete:
            read, write = _cache(self._merged)
            return Usage(got[0], got[1], cached_tokens=read, cache_write_tokens=write)
        streamed = max(self.pieces, round(self.chars / 4)) if self.chars else 0
        prompt = got[0] if got and got[0] else prompt_estimate
        return Usage(prompt, max(streamed, got[1] if got else 0), estimated=True)


def _usage_of(obj: object) -> dict | None:
    if not isinstance(obj, dict):
        return None
    for holder in (obj, obj.get("message"), obj.get("response")):
        if isinstance(holder, dict):
            u = holder.get("usage") or holder.get("usageMetadata")
            if isinstance(u, dict):
                return u
    return None


def _counts(u: dict) -> tuple[int, int]:
    if "promptTokenCount" in u or "candidatesTokenCount" in u:  # Gemini: thoughts are billed as output
        return token_count(u.get("promptTokenCount")), token_count(u.get("candidatesTokenCount")) + token_count(u.get("thoughtsTokenCount"))
    if "input_tokens" in u or "output_tokens" in u:  # Anthropic, OpenAI Responses
        cache = token_count(u.get("cache_creation_input_tokens")) + token_count(u.get("cache_read_input_tokens"))
        return token_count(u.get("input_tokens")) + cache, token_count(u.get("output_tokens"))
    return token_count(u.get("prompt_tokens")), token_count(u.get("completion_tokens"))


def _cache(u: dict) -> tuple[int, int]:
    """(cache reads, cache writes) among the prompt tokens, in each provider's words."""
    if "cache_read_input_tokens" in u or "cache_creation_input_tokens" in u:  # Anthropic
        return token_count(u.get("cache_read_input_tokens")), token_count(u.get("cache_creation_input_tokens"))
    for name in ("input_tokens_details", "prompt_tokens_details"):  # OpenAI Responses, Chat Completions
        d = u.get(name)
        if isinstance(d, dict):
            return token_count(d.get("cached_tokens")), 0
    return token_count(u.get("cachedContentTokenCount")), 0  # Gemini


def _last_object(buf: bytes | bytearray) -> dict | None:
    """The last `"usage": {...}` / `"usageMetadata": {...}` object in a JSON text, parsed."""
    for key in (b'"usageMetadata"', b'"usage"'):
        i = buf.rfind(key)
        while i >= 0:
            j = i + len(key)
            while j < len(buf) and buf[j] in b" \t\r\n":
                j += 1
            if j < len(buf) and buf[j:j + 1] == b":":
                j += 1
                while j < len(buf) and buf[j] in b" \t\r\n":
                    j += 1
                end = _object_end(buf, j) if buf[j:j + 1] == b"{" else -1
                if end > 0:
                    try:
                        obj = orjson.loads(buf[j:end])
                    except orjson.JSONDecodeError:
                        obj = None
                    if isinstance(obj, dict):
                        return obj
            i = buf.rfind(key, 0, i)
    return None


def _object_end(buf: bytes | bytearray, start: int) -> int:
    depth, in_str, esc = 0, False, False
    for k in range(start, min(len(buf), start + 65536)):
        c = buf[k]
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:
                esc = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return k + 1
    return -1
