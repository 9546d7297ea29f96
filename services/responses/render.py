"""Chat answers -> Responses API objects: the `response` object and its event stream.

Shapes follow OpenAI's API reference for `response` objects and streaming events: every event
carries `type` and a `sequence_number` counting from 0; an output item is announced with
`response.output_item.added`, filled by deltas and closed by `response.output_item.done` with
the same id; the stream ends with `response.completed` (or `response.incomplete`) holding the
whole response and its usage. The official openai SDK's stream accumulator checks exactly
these identities (tests/gateway_http/test_responses_sdk.py).
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from services.core.types import ChatResult, Chunk, ToolCall, Usage
from services.responses.request import Parsed

FINISH_STATUS = {"length": ("incomplete", "max_output_tokens"), "content_filter": ("incomplete", "content_filter")}


def new_id(prefix: str) -> str:
    return prefix + "_" + os.urandom(12).hex()


def usage_json(u: Usage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.prompt_tokens + u.completion_tokens}


def response_object(p: Parsed, rid: str, created_at: float, model: str, status: str = "in_progress",
                    output: list[dict] | None = None, usage: Usage | None = None,
                    incomplete: str = "", error: dict | None = None) -> dict[str, Any]:
    b = p.body
    text = b.get("text") if isinstance(b.get("text"), dict) else {}
    reasoning = b.get("reasoning") if isinstance(b.get("reasoning"), dict) else {}
    return {
        "id": rid, "object": "response", "created_at": int(created_at), "status": status,
        "background": False, "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": b.get("instructions"), "max_output_tokens": b.get("max_output_tokens"),
        "max_tool_calls": b.get("max_tool_calls"), "model": model, "output": output if output is not None else [],
        "parallel_tool_calls": b.get("parallel_tool_calls", True), "previous_response_id": p.previous_response_id or None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default", "store": p.store, "temperature": b.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity", "medium")},
        "tool_choice": b.get("tool_choice", "auto"), "tools": b.get("tools") or [],
        "top_logprobs": b.get("top_logprobs", 0), "top_p": b.get("top_p", 1.0),
        "truncation": b.get("truncation", "disabled"), "usage": usage_json(usage), "user": b.get("user"),
        "metadata": b.get("metadata") or {},
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}] if text else []}


def call_item(item_id: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id or new_id("call"),
            "name": call.name, "arguments": call.arguments}


def status_of(finish: str) -> tuple[str, str]:
    return FINISH_STATUS.get(finish, ("completed", ""))


def output_of(result: ChatResult) -> list[dict[str, Any]]:
    out = []
    if result.reasoning:
        out.append(reasoning_item(new_id("rs"), result.reasoning))
    if result.text or not result.tool_calls:
        out.append(message_item(new_id("msg"), result.text))
    out += [call_item(new_id("fc"), c) for c in result.tool_calls]
    return out


class EventWriter:
    """Turns the chat stream's chunk batches into Responses API events (type, JSON bytes)."""

    def __init__(self, p: Parsed, rid: str, created_at: float, model: str) -> None:
        self.p, self.rid, self.created_at, self.model = p, rid, created_at, model
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished and open items, in output_index order
        self._text: dict[str, Any] | None = None  # the open message item and its text so far
        self._reasoning: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}  # tool-call index -> its open item
        self._texts: list[str] = []
        self._summary: list[str] = []

    def event(self, kind: str, **fields: Any) -> tuple[str, bytes]:
        fields["type"] = kind
        fields["sequence_number"] = self.seq
        self.seq += 1
        return kind, orjson.dumps(fields)

    def start(self) -> list[tuple[str, bytes]]:
        r = response_object(self.p, self.rid, self.created_at, self.model)
        return [self.event("response.created", response=r), self.event("response.in_progress", response=r)]

    def feed(self, batch: list[Chunk]) -> list[tuple[str, bytes]]:
        ev: list[tuple[str, bytes]] = []
        for c in batch:
            if c.reasoning:
                if self._reasoning is None:
                    ev += self._close_text()
                    ev += self._open_reasoning()
                self._summary.append(c.reasoning)
                ev.append(self.event("response.reasoning_summary_text.delta", item_id=self._reasoning["id"],
                                     output_index=self._reasoning["index"], summary_index=0, delta=c.reasoning))
            if c.text:
                if self._text is None:
                    ev += self._close_reasoning()
                    ev += self._open_text()
                self._texts.append(c.text)
                ev.append(self.event("response.output_text.delta", item_id=self._text["id"],
                                     output_index=self._text["index"], content_index=0, delta=c.text, logprobs=[]))
            for d in c.tool_calls:
                item = self._calls.get(d.index)
                if item is None:
                    ev += self._close_reasoning()
                    ev += self._close_text()
                    item = self._open_call(d.index, d.id, d.name)
                    ev.append(self.event("response.output_item.added", output_index=item["index"], item=self._call_json(item, "in_progress")))
                if d.arguments:
                    item["args"].append(d.arguments)
                    ev.append(self.event("response.function_call_arguments.delta", item_id=item["id"],
                                         output_index=item["index"], delta=d.arguments))
        return ev

    def finish(self, finish_reason: str, usage: Usage | None) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        """The closing events and the whole response (for storage), ending with response.completed."""
        ev = self._close_reasoning() + self._close_text()
        for index in sorted(self._calls):
            item = self._calls[index]
            done = self._call_json(item, "completed")
            ev.append(self.event("response.function_call_arguments.done", item_id=item["id"], output_index=item["index"],
                                 name=done["name"], arguments=done["arguments"]))
            ev.append(self.event("response.output_item.done", output_index=item["index"], item=done))
            self.output[item["index"]] = done
        self._calls.clear()
        if not self.output:  # an empty answer is still one (empty) message, as OpenAI sends it
            ev += self._open_text() + self._close_text()
        status, reason = status_of(finish_reason)
        r = response_object(self.p, self.rid, self.created_at, self.model, status, self.output, usage, reason)
        ev.append(self.event("response.completed" if status == "completed" else "response.incomplete", response=r))
        return ev, r

    # --- items -----------------------------------------------------------------------------

    def _open_text(self) -> list[tuple[str, bytes]]:
        item = message_item(new_id("msg"), "", "in_progress")
        item["content"] = []
        self._text = {"id": item["id"], "index": len(self.output)}
        self._texts = []
        self.output.append(item)
        return [self.event("response.output_item.added", output_index=self._text["index"], item=item),
                self.event("response.content_part.added", item_id=item["id"], output_index=self._text["index"],
                           content_index=0, part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})]

    def _close_text(self) -> list[tuple[str, bytes]]:
        t = self._text
        if t is None:
            return []
        self._text = None
        text = "".join(self._texts)
        done = message_item(t["id"], text)
        self.output[t["index"]] = done
        part = done["content"][0]
        return [self.event("response.output_text.done", item_id=t["id"], output_index=t["index"], content_index=0,
                           text=text, logprobs=[]),
                self.event("response.content_part.done", item_id=t["id"], output_index=t["index"], content_index=0, part=part),
                self.event("response.output_item.done", output_index=t["index"], item=done)]

    def _open_reasoning(self) -> list[tuple[str, bytes]]:
        item = reasoning_item(new_id("rs"), "")
        self._reasoning = {"id": item["id"], "index": len(self.output)}
        self._summary = []
        self.output.append(item)
        return [self.event("response.output_item.added", output_index=self._reasoning["index"], item=item),
                self.event("response.reasoning_summary_part.added", item_id=item["id"],
                           output_index=self._reasoning["index"], summary_index=0, part={"type": "summary_text", "text": ""})]

    def _close_reasoning(self) -> list[tuple[str, bytes]]:
        r = self._reasoning
        if r is None:
            return []
        self._reasoning = None
        text = "".join(self._summary)
        done = reasoning_item(r["id"], text)
        self.output[r["index"]] = done
        return [self.event("response.reasoning_summary_text.done", item_id=r["id"], output_index=r["index"],
                           summary_index=0, text=text),
                self.event("response.reasoning_summary_part.done", item_id=r["id"], output_index=r["index"],
                           summary_index=0, part={"type": "summary_text", "text": text}),
                self.event("response.output_item.done", output_index=r["index"], item=done)]

    def _open_call(self, index: int, call_id: str, name: str) -> dict[str, Any]:
        item = {"id": new_id("fc"), "index": len(self.output), "call_id": call_id or new_id("call"), "name": name, "args": []}
        self._calls[index] = item
        self.output.append(self._call_json(item, "in_progress"))
        return item

    @staticmethod
    def _call_json(item: dict[str, Any], status: str) -> dict[str, Any]:
        return {"id": item["id"], "type": "function_call", "status": status, "call_id": item["call_id"],
                "name": item["name"], "arguments": "".join(item["args"]) if status == "completed" else ""}
