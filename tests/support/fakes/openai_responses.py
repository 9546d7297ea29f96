"""OpenAI's Responses API on the fake OpenAI upstream: POST /v1/responses (JSON or SSE), GET and
DELETE /v1/responses/{id}, previous_response_id against the responses it stored itself.

Shapes follow the API reference: a `response` object (id resp_…, object "response", status,
output items of type message / function_call / reasoning, usage with input_tokens,
output_tokens, total_tokens and their details); the stream is `event: <type>` + `data: {…}`
with a sequence_number from 0: response.created, response.in_progress, then per item
output_item.added → (content_part.added → output_text.delta… → output_text.done →
content_part.done | function_call_arguments.delta… → .done) → output_item.done, and
response.completed with the whole response. The model answers "tok0 tok1 …" (`tokens-N`: N
words, default 4); `fault-tool` calls the first function tool with {"x": 1}; `fault-reasoning`
puts a reasoning item first; `fault-400` / `fault-503` answer those errors.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from aiohttp import web

_ids = itertools.count(1)


def _usage(inp: int, out: int, reasoning: int = 0) -> dict:
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": inp + out}


def _error(status: int, message: str, etype: str, param: str | None = None) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        body=orjson.dumps({"error": {"message": message, "type": etype, "param": param, "code": None}}))


def add_routes(app: web.Application, state: Any) -> None:
    stored: dict[str, dict] = {}

    async def create(request: web.Request) -> web.StreamResponse:
        from tests.support.fakes.openai import Recorded

        body = await request.json()
        state.requests.append(Recorded(request.path, dict(request.headers), body))
        model = str(body.get("model", ""))
        if model == "fault-400":
            return _error(400, "Invalid value for 'temperature'.", "invalid_request_error", "temperature")
        if model == "fault-503":
            return _error(503, "The server is overloaded.", "server_error")
        prev = body.get("previous_response_id")
        if prev is not None and prev not in stored:
            return _error(400, f"Previous response with id '{prev}' not found.", "invalid_request_error",
                          "previous_response_id")
        n = int(model.split("-")[1]) if model.startswith("tokens-") else 4
        rid = f"resp_fake{next(_ids):04d}"
        out: list[dict] = []
        reasoning = 0
        if model == "fault-reasoning":
            out.append({"id": f"rs_{rid}", "type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking"}]})
            reasoning = 5
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        if model == "fault-tool" and tools:
            out.append({"id": f"fc_{rid}", "type": "function_call", "status": "completed", "call_id": f"call_{rid}",
                        "name": tools[0]["name"], "arguments": '{"x": 1}'})
        else:
            text = " ".join(f"tok{i}" for i in range(n))
            out.append({"id": f"msg_{rid}", "type": "message", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
        resp = {"id": rid, "object": "response", "created_at": 1_700_000_000, "status": "completed", "error": None,
                "incomplete_details": None, "instructions": body.get("instructions"), "model": model, "output": out,
                "parallel_tool_calls": True, "previous_response_id": prev, "store": body.get("store", True),
                "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
                "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools") or [], "temperature": 1.0, "top_p": 1.0, "truncation": "disabled",
                "usage": _usage(9, max(n, 1) + reasoning, reasoning), "user": None, "metadata": {}}
        if body.get("store", True):
            stored[rid] = resp
        if not body.get("stream"):
            return web.Response(content_type="application/json", body=orjson.dumps(resp))
        return await _stream(request, resp)

    async def get(request: web.Request) -> web.Response:
        resp = stored.get(request.match_info["id"])
        if resp is None:
            return _error(404, "No response found.", "invalid_request_error")
        return web.Response(content_type="application/json", body=orjson.dumps(resp))

    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses/{id}", get)


async def _stream(request: web.Request, resp: dict) -> web.StreamResponse:
    sr = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await sr.prepare(request)
    seq = itertools.count()

    async def send(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": next(seq), **fields}
        await sr.write(f"event: {kind}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n")

    shell = {**resp, "status": "in_progress", "output": [], "usage": None}
    await send("response.created", response=shell)
    await send("response.in_progress", response=shell)
    for i, item in enumerate(resp["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            await send("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "content": []})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            await send("response.content_part.added", item_id=item["id"], output_index=i, content_index=0, part=part)
            for w, word in enumerate(text.split(" ")):
                await send("response.output_text.delta", item_id=item["id"], output_index=i, content_index=0,
                           delta=word if w == 0 else " " + word, logprobs=[])
            await send("response.output_text.done", item_id=item["id"], output_index=i, content_index=0, text=text, logprobs=[])
            await send("response.content_part.done", item_id=item["id"], output_index=i, content_index=0,
                       part={**part, "text": text})
        elif item["type"] == "function_call":
            await send("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "arguments": ""})
            await send("response.function_call_arguments.delta", item_id=item["id"], output_index=i, delta=item["arguments"])
            await send("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                       name=item["name"], arguments=item["arguments"])
        else:
            await send("response.output_item.added", output_index=i, item={**item, "summary": []})
        await send("response.output_item.done", output_index=i, item=item)
    await send("response.completed", response=resp)
    return sr
