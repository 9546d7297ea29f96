"""A hostile OpenAI-shaped upstream (RELIABILITY E3, E9, E10): the model name picks how it misbehaves.

Every answer that is not a fault streams (or returns) TEXT, split into TOKENS, in OpenAI's
chat.completion(.chunk) shapes. The stream faults change only the framing, never the meaning,
unless the name says the upstream breaks:

  sse-plain         LF framing, one chunk per write (the baseline)
  sse-ping          `: ping` comments and a bare `:` between chunks
  sse-split         the byte stream cut inside JSON, inside a 4-byte emoji and between the two
                    LFs of a blank line; each piece is its own write with a pause (its own read)
  sse-cr            CR-only line ends                  sse-crlf   CRLF, cut between CR and LF
  sse-multiline     one event's JSON over two `data:` lines (joined by LF: still valid JSON)
  sse-bom           a UTF-8 BOM first                  sse-nospace `data:{...}` without the space
  sse-u2028         tokens made of U+2028 / U+2029 / U+0085 (raw in the JSON, as orjson writes)
  sse-double-done   `[DONE]` twice                     sse-no-done the finish chunk, then EOF
  sse-malformed     BROKEN_AFTER tokens, then an event that is not JSON, then the rest (the
                    broken event is noise: what the upstream means is the whole TEXT)
E10 (sizes in bytes; every endless answer stops at ENDLESS_CAP so a broken gateway cannot eat
the machine):
  huge-body         200 with a valid completion whose content is HUGE_BODY bytes (Content-Length);
                    asked to stream, it streams normally (the stream cases are the next three)
  endless-body      200, chunked, a completion whose content never ends (not streamed, as above)
  huge-line         a stream: two tokens, then one `data:` line of HUGE_LINE bytes, then the rest
  endless-line      a stream: one token, then a `data:` line that never ends
  endless-stream    a stream of valid token chunks that never ends
  huge-header       200 with a HUGE_HEADER-byte header (stream or not)
Any other path answers something small and valid for its provider (Anthropic messages,
Gemini generateContent, OpenAI embeddings/models, else {"ok": true}), so the fake also serves
the pass-through routes. Every request is recorded with its raw header list (E9).
"""

from __future__ import annotations

import asyncio
import itertools
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

import orjson
from aiohttp import web

TOKENS = ("Hello", ", wörld ", "👋🏽", " — 世界", "\u2028line", "\u2029para ", "tab\t\"q\" \\ ", "end.")
TEXT = "".join(TOKENS)
U2028_TOKENS = ("\u2028", "a\u2029b", "\u0085", "\u2028\u2028", "ok")
BROKEN_AFTER = 3
HUGE_BODY = 50 * 1000 * 1000
HUGE_LINE = 1024 * 1024
HUGE_HEADER = 64 * 1024
ENDLESS_CAP = 128 * 1024 * 1024
PAUSE_S = 0.004  # between writes that must arrive as separate reads
STREAM_FAULTS = ("sse-plain", "sse-ping", "sse-split", "sse-cr", "sse-crlf", "sse-multiline", "sse-bom", "sse-nospace",
                 "sse-u2028", "sse-double-done", "sse-no-done", "sse-malformed")
_ids = itertools.count(1)


def meant(model: str) -> str:
    """The text the upstream means to send for `model` (what a client must see, byte for byte)."""
    if model == "sse-u2028":
        return "".join(U2028_TOKENS)
    return TEXT


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]  # as received, duplicates and order kept
    body: bytes

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


@dataclass
class Hostile:
    base_url: str = ""  # origin + "/v1" (OpenAI-style)
    origin: str = ""  # the bare origin (Anthropic / Gemini style base URLs)
    requests: list[Seen] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # body bytes written per model
    disconnects: int = 0
    open_answers: int = 0


def _head(model: str, cid: str) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model}


def _chunk(head: dict, delta: dict, finish: str | None = None) -> bytes:
    return b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                           "finish_reason": finish}]}) + b"\n\n"


def _usage(head: dict, completion: int) -> bytes:
    return b"data: " + orjson.dumps({**head, "choices": [], "usage": {
        "prompt_tokens": 5, "completion_tokens": completion, "total_tokens": 5 + completion}}) + b"\n\n"


def _events(model: str, head: dict, tokens: tuple[str, ...]) -> list[bytes]:
    """The stream as a list of complete events, [DONE] included."""
    out = [_chunk(head, {"role": "assistant", "content": ""})]
    out += [_chunk(head, {"content": t}) for t in tokens]
    out += [_chunk(head, {}, "stop"), _usage(head, len(tokens)), b"data: [DONE]\n\n"]
    return out


def _split_points(data: bytes) -> list[int]:
    """Offsets that cut inside JSON, inside a 4-byte emoji and between the LFs of a blank line."""
    cuts = set()
    emoji = "👋".encode()
    i = data.find(emoji)
    if i >= 0:
        cuts.update({i + 1, i + 2, i + 3})
    start = 0
    while (j := data.find(b'"content":"', start)) >= 0:
        cuts.add(j + 5)  # inside the key
        cuts.add(j + 13)  # inside the value
        start = j + 1
    start = 0
    while (j := data.find(b"\n\n", start)) >= 0:
        cuts.add(j + 1)
        start = j + 2
    return sorted(c for c in cuts if 0 < c < len(data))


def stream_pieces(model: str) -> list[bytes]:
    """The writes for a stream fault, in order (tests may look at them)."""
    head = _head(model, f"chatcmpl-hostile{next(_ids)}")
    tokens = U2028_TOKENS if model == "sse-u2028" else TOKENS
    ev = _events(model, head, tokens)
    if model in ("sse-plain", "sse-u2028"):
        return ev
    if model == "sse-ping":
        out = [b": ping\n\n"]
        for e in ev:
            out += [e, b":\n\n", b": ping\n\n"]
        return out
    if model == "sse-split":
        data = b"".join(ev)
        cuts = [0, *_split_points(data), len(data)]
        return [data[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
    if model == "sse-cr":
        return [e.replace(b"\n", b"\r") for e in ev]
    if model == "sse-crlf":
        out = []
        for e in ev:
            crlf = e.replace(b"\n", b"\r\n")
            cut = crlf.index(b"\r\n") + 1  # between the CR and the LF of the first line end
            out += [crlf[:cut], crlf[cut:]]
        return out
    if model == "sse-multiline":
        out = []
        for e in ev:
            if e.startswith(b'data: {"id"'):
                body = e[len(b"data: "):-2]
                cut = body.index(b',"object"') + 1  # after a comma between keys: LF there is whitespace
                out.append(b"data: " + body[:cut] + b"\ndata: " + body[cut:] + b"\n\n")
            else:
                out.append(e)
        return out
    if model == "sse-bom":
        return [b"\xef\xbb\xbf" + ev[0], *ev[1:]]
    if model == "sse-nospace":
        return [e.replace(b"data: ", b"data:", 1) for e in ev]
    if model == "sse-double-done":
        return [*ev, b"data: [DONE]\n\n"]
    if model == "sse-no-done":
        return ev[:-1]
    if model == "sse-malformed":
        return [*ev[:1 + BROKEN_AFTER], b'data: {"choices":[{"delta":{"content":"bro\n\n', *ev[1 + BROKEN_AFTER:]]
    raise KeyError(model)


def make_app(state: Hostile) -> web.Application:
    async def any_request(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        state.requests.append(Seen(request.method, request.path, request.query_string, list(request.headers.items()), raw))
        path = request.path
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if path.endswith("/chat/completions"):
            return await _chat(request, state, body)
        if path.endswith("/embeddings"):
            inputs = body.get("input") if isinstance(body.get("input"), list) else [body.get("input")]
            return _json({"object": "list", "model": str(body.get("model")), "usage": {"prompt_tokens": 1, "total_tokens": 1},
                          "data": [{"object": "embedding", "index": i, "embedding": [0.5, 0.25]} for i in range(len(inputs))]})
        if path.endswith("/models"):
            return _json({"object": "list", "data": [{"id": "any", "object": "model", "created": 0, "owned_by": "hostile"}]})
        if path.endswith("/completions"):  # the legacy Completions API: a small valid text_completion
            done = {"id": f"cmpl-hostile{next(_ids)}", "object": "text_completion", "created": 1_700_000_000,
                    "model": str(body.get("model")), "choices": [{"text": "ok", "index": 0, "logprobs": None,
                                                                  "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            if body.get("stream") is not True:
                return _json(done)
            sr = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await sr.prepare(request)
            await sr.write(b"data: " + orjson.dumps(done) + b"\n\ndata: [DONE]\n\n")
            return sr
        if path.endswith("/responses"):  # OpenAI's Responses API: a small valid response, or its two-event stream
            resp = {"id": f"resp_hostile{next(_ids)}", "object": "response", "created_at": 1_700_000_000, "status": "completed",
                    "model": str(body.get("model")), "output": [{"type": "message", "id": "msg_h", "status": "completed",
                    "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]}],
                    "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}}
            if body.get("stream") is not True:
                return _json(resp)
            sr = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await sr.prepare(request)
            for n, (kind, r) in enumerate((("response.created", {**resp, "status": "in_progress", "output": []}),
                                           ("response.completed", resp))):
                await sr.write(f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, "sequence_number": n,
                                                                                   "response": r}) + b"\n\n")
            return sr
        if path.endswith("/messages"):
            return _json({"id": "msg_hostile", "type": "message", "role": "assistant", "model": str(body.get("model")),
                          "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
                          "usage": {"input_tokens": 1, "output_tokens": 1}})
        if ":generateContent" in path:
            return _json({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
                          "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}})
        return _json({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", any_request)
    return app


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type="application/json")


def _completion(model: str, text: str) -> dict:
    return {"id": f"chatcmpl-hostile{next(_ids)}", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


async def _chat(request: web.Request, state: Hostile, body: dict) -> web.StreamResponse:
    model = str(body.get("model", ""))
    stream = bool(body.get("stream"))
    state.open_answers += 1
    try:
        if model == "huge-header":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream" if stream else "application/json",
                                               "X-Pad": "p" * HUGE_HEADER})
            await resp.prepare(request)
            await resp.write(b"".join(stream_pieces("sse-plain")) if stream else orjson.dumps(_completion(model, TEXT)))
            return resp
        if model == "huge-body" and not stream:
            return await _big_completion(request, state, model, HUGE_BODY)
        if model == "endless-body" and not stream:
            return await _big_completion(request, state, model, None)
        if model in ("huge-line", "endless-line", "endless-stream"):
            return await _big_stream(request, state, model)
        if model in STREAM_FAULTS and stream:
            return await _pieces(request, state, model, stream_pieces(model))
        tokens = U2028_TOKENS if model == "sse-u2028" else TOKENS
        if stream:
            return await _pieces(request, state, model, _events(model, _head(model, f"chatcmpl-hostile{next(_ids)}"), tokens))
        return _json(_completion(model, "".join(tokens)))
    finally:
        state.open_answers -= 1


async def _pieces(request: web.Request, state: Hostile, model: str, pieces: list[bytes]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    pause = PAUSE_S if model in STREAM_FAULTS else 0.0  # a normal answer need not be read piece by piece
    try:
        for p in pieces:
            await resp.write(p)
            state.sent[model] = state.sent.get(model, 0) + len(p)
            await asyncio.sleep(pause)
    except (asyncio.CancelledError, ConnectionResetError):
        state.disconnects += 1
        raise
    return resp


async def _big_completion(request: web.Request, state: Hostile, model: str, size: int | None) -> web.StreamResponse:
    """A valid completion whose content is `size` bytes of 'x' (None: never ends, up to ENDLESS_CAP)."""
    head = orjson.dumps(_completion(model, "@@"))
    pre, post = head.split(b"@@")
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    if size is not None:
        resp.content_length = len(pre) + size + len(post)
    await resp.prepare(request)
    block = b"x" * (1024 * 1024)
    left = ENDLESS_CAP if size is None else size
    try:
        await resp.write(pre)
        while left > 0:
            piece = block if left >= len(block) else block[:left]
            await resp.write(piece)
            left -= len(piece)
            state.sent[model] = state.sent.get(model, 0) + len(piece)
        await resp.write(post)
    except (asyncio.CancelledError, ConnectionResetError):
        state.disconnects += 1
        raise
    return resp


async def _big_stream(request: web.Request, state: Hostile, model: str) -> web.StreamResponse:
    head = _head(model, f"chatcmpl-hostile{next(_ids)}")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    async def send(data: bytes) -> None:
        await resp.write(data)
        state.sent[model] = state.sent.get(model, 0) + len(data)

    try:
        await send(_chunk(head, {"role": "assistant", "content": ""}))
        await send(_chunk(head, {"content": TOKENS[0]}))
        await asyncio.sleep(PAUSE_S)
        if model == "huge-line":
            await send(_chunk(head, {"content": TOKENS[1]}))
            await send(_chunk(head, {"content": "y" * HUGE_LINE}))
            for t in TOKENS[2:]:
                await send(_chunk(head, {"content": t}))
            await send(_chunk(head, {}, "stop") + b"data: [DONE]\n\n")
        elif model == "endless-line":
            await send(b'data: {"choices":[{"index":0,"delta":{"content":"')
            block = b"z" * 65536
            while state.sent[model] < ENDLESS_CAP:
                await send(block)
        else:  # endless-stream
            block = b"".join(_chunk(head, {"content": "w "}) for _ in range(256))
            while state.sent[model] < ENDLESS_CAP:
                await send(block)
                await asyncio.sleep(0)
    except (asyncio.CancelledError, ConnectionResetError):
        state.disconnects += 1
        raise
    return resp


@asynccontextmanager
async def run_hostile() -> AsyncIterator[Hostile]:
    state = Hostile()
    runner = web.AppRunner(make_app(state), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    state.base_url = state.origin + "/v1"
    try:
        yield state
    finally:
        await runner.cleanup()
