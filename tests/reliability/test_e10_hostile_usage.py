"""RELIABILITY E10, the usage block: an upstream reporting absurd token counts (past 64 bits,
negative) gets its request answered and metered with those counts as 0 (a stream's usage that
comes to nothing is replaced by the gateway's own count, as a missing one is), and the ledger
keeps writing every row after it.

Before: a 100-bit count reached the ledger as it was, its batch could never be written (no JSON
integer, no BIGINT holds it), every flush retried it, and once 10,000 rows waited behind it every
caller got 503; a negative count gave quota back. An upstream can be any caller's own base URL.
"""

from __future__ import annotations

from aiohttp import web

from tests.support.gateway import config, provider, run_gateway
from tests.support.local_server import serve_chat
from tests.support.sse_read import CHAT, bearer

HEAD = b'"id": "chatcmpl-x", "created": 1700000000, "model": "m"'
ANSWER = (b'{' + HEAD + b', "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", '
          b'"content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1e30, "completion_tokens": 3, '
          b'"total_tokens": 1000000000000000000000000000003}}')
STREAM = [
    b'data: {' + HEAD + b', "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}, '
    b'"finish_reason": null}]}\n\n',
    b'data: {' + HEAD + b', "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, '
    b'"finish_reason": "stop"}]}\n\n',
    b'data: {' + HEAD + b', "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": '
    b'99999999999999999999, "completion_tokens": -4, "total_tokens": 1}}\n\n',
    b"data: [DONE]\n\n",
]


async def upstream_chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=ANSWER, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for piece in STREAM:
        await resp.write(piece)
    await resp.write_eof()
    return resp


async def test_absurd_usage_counts_are_metered_as_zero_and_the_ledger_keeps_writing(tmp_path):
    async with serve_chat(upstream_chat) as base_url:
        cfg = config(tmp_path, providers=(provider("self-hosted", base_url, models=("m",)),))
        async with run_gateway(cfg) as gw:
            auth = bearer(await gw.new_key())
            msgs = [{"role": "user", "content": "hello"}]
            r = await gw.http.post(CHAT, json={"model": "m", "messages": msgs}, headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "hi"
            r = await gw.http.post(CHAT, json={"model": "m", "messages": msgs, "stream": True,
                                               "stream_options": {"include_usage": True}}, headers=auth)
            assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text

            rows = await gw.ledger()  # flushes: before the fix this raised on the 100-bit count
            assert len(rows) == 2 and {row.status for row in rows} == {"ok"}
            [answer] = [row for row in rows if not row.estimated]
            assert (answer.prompt_tokens, answer.completion_tokens) == (0, 3)
            # The stream's usage read as 0 and 0, which is no usage at all: metered by the
            # gateway's own count instead (the prompt estimated, the one token streamed).
            [stream] = [row for row in rows if row.estimated]
            assert 0 < stream.prompt_tokens < 50 and stream.completion_tokens == 1
            assert gw.app.ledger.pending == 0

            r = await gw.http.post(CHAT, json={"model": "m", "messages": msgs}, headers=auth)
            assert r.status_code == 200
            assert len(await gw.ledger()) == 3  # and the next row is written too
