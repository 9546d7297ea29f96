"""Issue 15 point 2: encoded path traversal through the native pass-through is refused.

`/v1/openai/..%2f..%2fapi/admin/keys` used to reach the upstream with the gateway's provider key:
the guard split the path on a literal `/` before decoding it. Every decoded form is looked at
now. A property test over encodings (raw, %xx in either case, double-encoded %25xx, backslashes)
against the guard, then explicit cases over a real socket to a gateway whose upstream records
every request it gets: none may arrive there.
"""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.errors import InvalidArgument
from services.routing import passthrough
from tests.support.gateway import config, provider, run_gateway
from tests.support.local_server import serve_app
from tests.support.raw_http import exchange, request_head

# --- the guard, by property ----------------------------------------------------------------------


def _encodings(ch: str) -> st.SearchStrategy[str]:
    """One character as a client (or a proxy in front of the gateway) might spell it."""
    hx = f"{ord(ch):02x}"
    forms = [f"%{hx}", f"%{hx.upper()}", f"%25{hx}", f"%25{hx.upper()}", f"%2525{hx}", f"%{hx[0]}{hx[1].upper()}"]
    return st.sampled_from(forms + [ch])


def _spelled(text: str) -> st.SearchStrategy[str]:
    return st.tuples(*[_encodings(c) if c in "./\\" else st.just(c) for c in text]).map("".join)


SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_:", min_size=1, max_size=8)
ESCAPE = st.sampled_from(["../", "..\\", "./", "..;/", "\\"])


@settings(max_examples=400, deadline=None)
@given(before=st.lists(SEGMENT, max_size=3), escape=ESCAPE.flatmap(_spelled), times=st.integers(1, 3),
       after=st.sampled_from(["api/admin/keys", "admin", "", "v1/models"]))
def test_every_spelling_of_a_dot_segment_or_backslash_is_refused(before, escape, times, after):
    path = "".join(s + "/" for s in before) + escape * times + after
    with pytest.raises(InvalidArgument) as caught:
        passthrough.native_request("openai", "GET", path, "", [], b"")
    assert caught.value.reason == "INVALID_PATH"


@settings(max_examples=200, deadline=None)
@given(segments=st.lists(st.one_of(SEGMENT, SEGMENT.map(lambda s: s + "%20" + s), st.just("...x"), st.just("a.b")),
                         min_size=1, max_size=5))
def test_plain_paths_still_pass(segments):
    path = "/".join(segments)
    assert passthrough.native_request("openai", "GET", path, "", [], b"").path == path
    assert passthrough.upstream_url("openai", "http://h/v1", path, "").startswith("http://h/v1/")


def test_explicit_spellings():
    for path in ("..%2f..%2fapi/admin/keys", "%2e%2e%2f%2e%2e%2fapi/admin/keys", "%2E%2e%2F..%2fx",
                 "%252e%252e%252fapi", "%25252e%25252e/x", "a/..%5capi", "a/%5c..%5cb", "..%5C..%5Cx",
                 "%c0%ae%c0%ae/x".replace("%c0%ae", "%2e"), "a/%EF%BC%8E%EF%BC%8E/b", "a/..;x/b", "a/%00/b"):
        assert not passthrough.plain_path(path), path
    for path in ("chat/completions", "models/gemini-2.5-flash:streamGenerateContent", "files/a%20b", "v1/models/x.y"):
        assert passthrough.plain_path(path), path
    with pytest.raises(InvalidArgument):
        passthrough.upstream_url("openai", "http://h/v1", "..%2fadmin", "")


# --- through a real socket ------------------------------------------------------------------------

ATTACKS = (
    "/v1/openai/..%2f..%2fapi/admin/keys",
    "/v1/openai/..%2F..%2Fapi/admin/keys",
    "/v1/openai/%2e%2e%2f%2e%2e%2fapi/admin/keys",
    "/v1/openai/%2E%2e%2F%2e%2E%2Fapi/admin/keys",
    "/v1/openai/%252e%252e%252f%252e%252e%252fapi/admin/keys",
    "/v1/openai/%252e%252e/%252e%252e/api/admin/keys",
    "/v1/openai/models/..%5c..%5capi/admin/keys",
    "/v1/openai/models/%5C..%5C..%5Capi",
    "/v1/openai/a/%2e%2e;x/%2e%2e/admin",
    "/v1/anthropic/..%2f..%2fv1/organizations/api_keys",
    "/v1/anthropic/v1/%2e%2e%2f%2e%2e%2fadmin",
    "/v1/gemini/v1beta/..%2f..%2fadmin",
)


@pytest.fixture
async def recording_upstream():
    seen: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    async with serve_app(app) as origin:
        yield origin, seen


async def test_encoded_traversal_never_reaches_the_upstream(tmp_path, recording_upstream):
    origin, seen = recording_upstream
    cfg = config(tmp_path, providers=(provider("primary", origin + "/v1"),
                                      provider("claude", origin, kind="anthropic", keys=("sk-ant-upstream",)),
                                      provider("gem", origin, kind="gemini", keys=("gem-upstream-key",))))
    async with run_gateway(cfg) as gw:
        key = await gw.new_key()
        for path in ATTACKS:
            answer = await exchange(gw.url, request_head("GET", path, [("X-API-Key", key), ("Connection", "close")]))
            assert answer.status == 400, (path, answer.head)
            err = orjson.loads(answer.body)["error"]  # the pass-through's error format (OpenAI's shape)
            assert err["type"] == "invalid_request_error" and "dot segments" in err["message"], (path, err)
            assert b"sk-test-upstream" not in answer.body
        # A literal ../ is resolved by the HTTP layer before any route: never the pass-through.
        answer = await exchange(gw.url, request_head("GET", "/v1/openai/../../api/admin/keys",
                                                     [("X-API-Key", key), ("Connection", "close")]))
        assert answer.status in (400, 401, 403, 404), answer.head
        assert seen == [], seen
        # The same gateway still relays a plain path.
        answer = await exchange(gw.url, request_head("GET", "/v1/openai/models", [("X-API-Key", key), ("Connection", "close")]))
        assert answer.status == 200 and seen == ["/v1/models"]
