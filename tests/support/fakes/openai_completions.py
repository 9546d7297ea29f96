"""OpenAI's legacy Completions API (POST /v1/completions) for the fake OpenAI and the fake Ollama
(Ollama serves it on its OpenAI-compatible /v1 API, suffix included).

Shapes follow the API reference: a `text_completion` with choices[{text, index, logprobs,
finish_reason}] and usage; a stream of `text_completion` chunks, a usage chunk (choices []) when
stream_options.include_usage, then `data: [DONE]`. The answer is "tok0 tok1 …" cut at max_tokens
(default 16); with a `suffix` (fill-in-the-middle) it is "<fill>" — what goes between prompt and suffix.
"""

from __future__ import annotations

import itertools
from typing import Callable

import orjson
from aiohttp import web

_ids = itertools.count(1)


def add_route(app: web.Application, record: Callable[[web.Request, dict], None] | None = None,
              owner: str = "openai") -> None:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if record is not None:
            record(request, body)
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)):
            return web.json_response({"error": {"message": "prompt is required", "type": "invalid_request_error",
                                                "param": "prompt", "code": None}}, status=400)
        max_tokens = body.get("max_tokens") or 16
        pieces = ["<fill>"] if body.get("suffix") else [f"tok{i} " for i in range(min(4, max_tokens))]
        head = {"id": f"cmpl-fake{next(_ids)}", "object": "text_completion", "created": 1_700_000_000,
                "model": body.get("model"), "system_fingerprint": "fp_fake"}
        usage = {"prompt_tokens": len(str(prompt).split()), "completion_tokens": len(pieces),
                 "total_tokens": len(str(prompt).split()) + len(pieces)}
        finish = "length" if len(pieces) == max_tokens and not body.get("suffix") else "stop"
        if not body.get("stream"):
            return web.json_response({**head, "choices": [{"text": "".join(pieces), "index": 0, "logprobs": None,
                                                           "finish_reason": finish}], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, p in enumerate(pieces):
            last = i == len(pieces) - 1
            await resp.write(b"data: " + orjson.dumps({**head, "choices": [{"text": p, "index": 0, "logprobs": None,
                                                                             "finish_reason": finish if last else None}]}) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app.router.add_post("/v1/completions", completions)
