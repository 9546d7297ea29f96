"""What the pass-through reads from a native body before sending it on: model, max tokens and a
prompt estimate, and nothing from a body too complex to parse without stalling the loop (E2)."""

from __future__ import annotations

import orjson

from services.routing.passthrough import NativeRequest, _describe


def native(body: bytes, path: str = "chat/completions") -> NativeRequest:
    return NativeRequest("openai", "POST", path, "", [("content-type", "application/json")], body)


def test_a_plain_body_is_described() -> None:
    req = native(orjson.dumps({"model": "gpt-x", "max_tokens": 77, "messages": [{"role": "user", "content": "hello there"}]}))
    _describe(req)
    assert (req.model, req.max_tokens) == ("gpt-x", 77) and req.prompt_estimate > 0


def test_a_body_of_a_million_empty_arrays_is_sent_on_undescribed() -> None:
    # ~0.4 s of parsing on the event loop if it were read; the upstream judges it instead.
    body = b'{"model": "gpt-x", "max_tokens": 77, "x": [' + b",".join([b"[]"] * 1_000_000) + b"]}"
    req = native(body)
    _describe(req)
    assert (req.model, req.prompt_estimate) == ("", 0)
