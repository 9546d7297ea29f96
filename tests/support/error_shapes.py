"""Each surface's error body, as its callers parse it: one checker per shape, returning the body.

openai     {"error": {"message", "type", "param", "code"}}             /v1/chat/completions, /v1/embeddings,
                                                                       /v1/models, pass-through, seed 002
anthropic  {"type": "error", "error": {"type", "message"}}             /v1/messages
api        {"error": title, "message", "code", "details"?}             /api/chat, /api/quick, /api/models, /api/admin/*
users      {"error": {"code", "message", "details"?}, "requestId"?}    /api/auth/*, /api/keys, /api/tokens
seed004    {"error": {"code": <status>, "message", "type", "details"?}} /api/v1/*
"""

from __future__ import annotations

from typing import Any, Callable

import orjson


def _load(raw: bytes | str) -> Any:
    return orjson.loads(raw)


def openai(raw: bytes | str, status: int | None = None) -> dict:
    body = _load(raw)
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, body
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["type"], str) and err["type"], body
    return body


def anthropic(raw: bytes | str, status: int | None = None) -> dict:
    body = _load(raw)
    assert body["type"] == "error", body
    assert isinstance(body["error"]["type"], str) and body["error"]["type"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


def api(raw: bytes | str, status: int | None = None) -> dict:
    body = _load(raw)
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["code"], str) and body["code"], body
    return body


def users(raw: bytes | str, status: int | None = None) -> dict:
    body = _load(raw)
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


def seed004(raw: bytes | str, status: int | None = None) -> dict:
    body = _load(raw)
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["type"], str) and err["type"], body
    if status is not None:
        assert err["code"] == status, body
    return body


SHAPES: dict[str, Callable[..., dict]] = {"openai": openai, "anthropic": anthropic, "api": api, "users": users,
                                          "seed004": seed004}
