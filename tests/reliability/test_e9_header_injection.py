"""RELIABILITY E9: control characters in `model` or a key are refused; the caller's credentials and
hop-by-hop headers never reach an upstream.

`model` travels in JSON bodies but comes back in the X-LLM-Model response header, so a control
character in it must be a 400 in the surface's shape before anything is routed. A CR, LF or NUL
in X-API-Key / Authorization never gets past aiohttp's parser (its own 400); the refusal must not
write the key into a log line. Upstream, the fake records every header it receives: on the routed
surfaces and on the pass-through routes it must see the gateway's provider key and nothing of the
caller's Authorization, X-API-Key, X-Admin-Key, Cookie, Proxy-Authorization, or the hop-by-hop
headers (Connection and what it names, Keep-Alive, TE, Trailer, Proxy-Connection).
"""

from __future__ import annotations

import logging

import orjson
import pytest
import pytest_asyncio

from tests.support import error_shapes
from tests.support.fakes.hostile import run_hostile
from tests.support.gateway import ADMIN_KEY, config, provider, run_gateway
from tests.support.raw_http import exchange, request_head

pytestmark = pytest.mark.asyncio(loop_scope="module")

OPENAI_SECRET, ANTHROPIC_SECRET, GEMINI_SECRET = "sk-upstream-openai", "sk-ant-upstream", "AIza-upstream-gemini"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory):
    async with run_hostile() as hostile:
        cfg = config(tmp_path_factory.mktemp("e9"), providers=(
            provider("oa", hostile.base_url, keys=(OPENAI_SECRET,)),  # no allow-list: any model name is routed here
            provider("claude", hostile.origin, kind="anthropic", keys=(ANTHROPIC_SECRET,), models=("claude-x",)),
            provider("gem", hostile.origin, kind="gemini", keys=(GEMINI_SECRET,), models=("gemini-x",)),
        ))
        async with run_gateway(cfg) as gw:
            yield gw, hostile, await gw.new_key(tier="unlimited")


# ------------------------------------------------------------------------------- control chars in model

SURFACES = [  # (id, path, shape, body builder)
    ("chat", "/v1/chat/completions", "openai", lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}]}),
    ("chat-stream", "/v1/chat/completions", "openai",
     lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ("messages", "/v1/messages", "anthropic",
     lambda m: {"model": m, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    ("messages-stream", "/v1/messages", "anthropic",
     lambda m: {"model": m, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ("embeddings", "/v1/embeddings", "openai", lambda m: {"model": m, "input": "hi"}),
    ("api-chat", "/api/chat", "api", lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}]}),
    ("api-quick", "/api/quick", "api", lambda m: {"model": m, "prompt": "hi"}),
    ("api-v1-inference", "/api/v1/inference", "seed004", lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}]}),
]
CHARS = {"crlf": "\r\n", "lf": "\n", "cr": "\r", "nul": "\x00", "soh": "\x01", "vt": "\x0b", "del": "\x7f"}
OTHER_CTL = {"soh", "vt", "del"}

# Model names with control characters (embeddings, and C0/DEL beyond CR/LF/NUL everywhere) were diagnosed
# here as xfails; services/rpc/convert.check_model and gateway_http/calls.copy_headers fixed them.


def _marks(surface: str, char: str) -> list:
    return []


@pytest.mark.parametrize("sid,path,shape,build,char", [
    pytest.param(sid, path, shape, build, c, id=f"{sid}-{c}", marks=_marks(sid, c))
    for sid, path, shape, build in SURFACES for c in CHARS])
async def test_control_characters_in_model_are_400(shared, sid, path, shape, build, char):
    gw, hostile, key = shared
    before, rows0 = len(hostile.requests), len(await gw.ledger())
    body = orjson.dumps(build("gpt" + CHARS[char] + "X-Injected: 1"))
    head = request_head("POST", path, [("Authorization", "Bearer " + key), ("Content-Type", "application/json"),
                                       ("Content-Length", str(len(body)))])
    answer = await exchange(gw.url, head + body)  # raw: a dropped connection is status 0, not an exception
    assert answer.status == 400, answer
    assert b"x-injected" not in answer.head.lower()
    error_shapes.SHAPES[shape](answer.body, 400)
    assert len(hostile.requests) == before  # refused before routing
    assert len(await gw.ledger()) == rows0


# ------------------------------------------------------------------------------- control chars in keys

KEY_VALUES = {"crlf": "\r\n", "lf": "\n", "cr": "\r", "nul": "\x00",
              "obs-fold": "\r\n\tfolded", "soh": "\x01", "del": "\x7f"}


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization", "X-Admin-Key"])
@pytest.mark.parametrize("bad", list(KEY_VALUES))
async def test_control_characters_in_a_key_are_refused_by_the_parser(shared, header, bad):
    gw, hostile, key = shared
    before = len(hostile.requests)
    value = ("Bearer " + key if header == "Authorization" else ADMIN_KEY if header == "X-Admin-Key" else key) + KEY_VALUES[bad]
    path = "/api/admin/keys" if header == "X-Admin-Key" else "/v1/chat/completions"
    body = b'{"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "name": "n"}'
    head = request_head("POST", path, [(header.encode(), value.encode()), (b"Content-Type", b"application/json"),
                                       (b"Content-Length", str(len(body)).encode())])
    answer = await exchange(gw.url, head + body)
    assert answer.status == 400, answer  # aiohttp's own refusal (text/plain) is fine here
    assert len(hostile.requests) == before
    r = await gw.http.get("/v1/models", headers={"Authorization": "Bearer " + key})
    assert r.status_code == 200  # and the gateway goes on serving


async def test_a_refused_key_is_not_written_to_the_log(shared):
    gw, hostile, key = shared
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        head = request_head("GET", "/v1/models", [(b"X-API-Key", key.encode() + b"\x00")])
        answer = await exchange(gw.url, head)
    finally:
        root.removeHandler(handler)
    assert answer.status == 400
    logged = "\n".join(handler.format(r) for r in records)
    assert records, "the refusal is logged somewhere (else this test proves nothing)"
    assert key not in logged and key[:12] not in logged


# ------------------------------------------------------------------------------- what reaches upstream

CALLER_SECRET_HEADERS = {
    "Cookie": "session=caller-cookie-secret",
    "Proxy-Authorization": "Basic Y2FsbGVyOnNlY3JldA==",
    "Connection": "keep-alive, X-Hop-Secret",
    "X-Hop-Secret": "named-in-connection",
    "Keep-Alive": "timeout=5, max=100",
    "TE": "trailers",
    "Trailer": "X-Trailer-Secret",
    "Proxy-Connection": "keep-alive",
}
NEVER_UPSTREAM = {"cookie", "proxy-authorization", "x-admin-key", "x-hop-secret", "keep-alive", "te", "trailer",
                  "proxy-connection"}
ROUTES = [  # (id, method, path, body, provider's auth header, its expected value)
    ("chat", "POST", "/v1/chat/completions", {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]},
     "authorization", "Bearer " + OPENAI_SECRET),
    ("chat-stream", "POST", "/v1/chat/completions",
     {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "stream": True}, "authorization", "Bearer " + OPENAI_SECRET),
    ("embeddings", "POST", "/v1/embeddings", {"model": "gpt-x", "input": "hi"}, "authorization", "Bearer " + OPENAI_SECRET),
    ("messages", "POST", "/v1/messages", {"model": "gpt-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
     "authorization", "Bearer " + OPENAI_SECRET),
    ("api-chat", "POST", "/api/chat", {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]},
     "authorization", "Bearer " + OPENAI_SECRET),
    ("passthrough-openai", "POST", "/v1/openai/chat/completions",
     {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}, "authorization", "Bearer " + OPENAI_SECRET),
    ("passthrough-openai-get", "GET", "/v1/openai/models", None, "authorization", "Bearer " + OPENAI_SECRET),
    ("passthrough-anthropic", "POST", "/v1/anthropic/v1/messages",
     {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "x-api-key", ANTHROPIC_SECRET),
    ("passthrough-gemini", "POST", "/v1/gemini/v1beta/models/gemini-x:generateContent",
     {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, "x-goog-api-key", GEMINI_SECRET),
]


@pytest.mark.parametrize("how", ["bearer", "x-api-key", "admin-key"])
@pytest.mark.parametrize("rid,method,path,body,auth_name,auth_value", ROUTES, ids=[r[0] for r in ROUTES])
async def test_caller_credentials_and_hop_by_hop_headers_never_reach_the_upstream(
        shared, rid, method, path, body, auth_name, auth_value, how):
    gw, hostile, key = shared
    before = len(hostile.requests)
    headers = dict(CALLER_SECRET_HEADERS)
    headers.update({"bearer": {"Authorization": "Bearer " + key}, "x-api-key": {"X-API-Key": key},
                    "admin-key": {"X-Admin-Key": ADMIN_KEY}}[how])
    if "gemini" in path:
        headers["X-Goog-Api-Key"] = key  # what Google's SDKs send: must be swapped, not relayed
    query = {"key": key, "alt": "json"} if "gemini" in path else None
    r = await gw.http.request(method, path, json=body, headers=headers, params=query)
    assert r.status_code == 200, r.text
    seen = hostile.requests[before:]
    assert len(seen) == 1, [(s.method, s.path) for s in seen]
    up = seen[0]
    names = up.header_names()
    assert not names & NEVER_UPSTREAM, names & NEVER_UPSTREAM
    values = {k.lower(): v for k, v in up.headers}
    assert values.get(auth_name) == auth_value, (auth_name, values.get(auth_name))
    for k, v in up.headers:
        assert key not in v and key[:12] not in v, (k, "the caller's key reached the upstream")
        assert ADMIN_KEY not in v, (k, "the admin key reached the upstream")
        assert "caller-" not in v and "Y2FsbGVy" not in v, (k, v)
        if k.lower() == "connection":
            assert "x-hop-secret" not in v.lower()
    assert key not in up.query and key not in up.path, "the caller's key reached the upstream URL"
    assert key.encode() not in up.body
    if auth_name != "authorization":
        assert "authorization" not in names
    if auth_name != "x-api-key":
        assert "x-api-key" not in names
