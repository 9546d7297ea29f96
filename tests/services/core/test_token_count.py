"""token_count: what every adapter reads an upstream's token counters through."""

from __future__ import annotations

import pytest

from services.core.types import MAX_TOKEN_COUNT, token_count
from services.providers import anthropic_codec, gemini_codec, ollama_codec


@pytest.mark.parametrize("value, count", [
    (12, 12), (0, 0), (MAX_TOKEN_COUNT, MAX_TOKEN_COUNT), (12.9, 12), ("12", 12),
    (None, 0), (True, 0), (-5, 0), (-0.5, 0), (MAX_TOKEN_COUNT + 1, 0), (10**30, 0), (1e30, 0),
    (float("nan"), 0), (float("inf"), 0), ("abc", 0), ("1e3", 0), ("9" * 40, 0), ([1], 0), ({"n": 1}, 0),
])
def test_token_count(value: object, count: int) -> None:
    assert token_count(value) == count


def test_every_adapter_reads_absurd_counts_as_zero() -> None:
    """Each provider's own usage block, with one sane counter and the rest absurd."""
    a = anthropic_codec.usage_from(anthropic_codec._usage_fields(
        {"input_tokens": 10**30, "output_tokens": 5, "cache_read_input_tokens": -3, "cache_creation_input_tokens": 1e300}))
    assert (a.prompt_tokens, a.completion_tokens, a.cached_tokens, a.cache_write_tokens) == (0, 5, 0, 0)
    g = gemini_codec.usage_from({"promptTokenCount": 7, "candidatesTokenCount": -1, "thoughtsTokenCount": 10**30,
                                 "cachedContentTokenCount": "x"})
    assert (g.prompt_tokens, g.completion_tokens, g.reasoning_tokens, g.cached_tokens) == (7, 0, 0, 0)
    o = ollama_codec.usage_from({"prompt_eval_count": 10**30, "eval_count": 9})
    assert (o.prompt_tokens, o.completion_tokens) == (0, 9)
