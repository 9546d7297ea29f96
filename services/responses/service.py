"""The Responses API's core: previous_response_id, translation to the chat pipeline, storage.

`create()` and `stream()` parse the caller's body, expand `previous_response_id` from the
caller's own stored responses (one read), run the request through the chat pipeline (so it is
admitted, routed, failed over and metered exactly like chat: one ledger row), render the
Responses API objects, and store the result before the caller sees it complete, so the next
turn may land on any replica sharing the database.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator

import orjson

from services.core.principal import Principal
from services.core import errors as E
from tollgate.json_bound import too_complex
from services.core.types import Target
from services.fidelity import raise_upstream_error, whole_answer
from services.clock import Clock
from services.pipeline import ForwardStarted, Outcome, Pipeline, StreamFinished, StreamStarted
from services.routing.candidates import CandidateIndex
from services.routing.passthrough import NativeRequest, Passthrough, native_request
from services.providers.sse import SSEParser
from services.responses import render
from services.responses.request import Parsed, bad, parse, to_chat
from services.store.repos.responses import StoredResponse
from services.store.store import Store

log = logging.getLogger("tollgate.responses")

MAX_STORED_ITEMS_BYTES = 8 * 1024 * 1024  # a longer conversation is answered but cannot be continued by id
SURFACE = "openai_responses"


def owner_of(p: Principal) -> str:
    """Responses belong to the user (all their tokens), or to the key when it has no user."""
    return "u:" + p.user_id if p.user_id else "k:" + p.key_id


def load_body(raw: bytes) -> dict[str, Any]:
    why = too_complex(raw)
    if why is not None:
        raise E.InvalidArgument(why, reason="BODY_TOO_COMPLEX")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise E.InvalidArgument("the body is not valid JSON", reason="INVALID_JSON") from None
    if not isinstance(body, dict):
        raise E.InvalidArgument("the body must be a JSON object", reason="INVALID_JSON")
    return body


@dataclass(slots=True)
class Answer:
    """A whole answer: the response object (and its JSON as the upstream sent it) and how it was served."""

    response: dict[str, Any]
    outcome: Outcome
    raw: bytes = b""


@dataclass(slots=True)
class NativeResponses(NativeRequest):
    """A Responses API request relayed to OpenAI as sent: metered under the Responses surface."""

    @property
    def surface(self) -> str:
        return SURFACE


# Terminal events of a Responses API stream: each holds the whole response.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class Responses:
    def __init__(self, pipeline: Pipeline, store: Store, clock: Clock, index: CandidateIndex, relay: Passthrough,
                 *, ttl_s: float, max_per_owner: int) -> None:
        self.pipeline = pipeline
        self.store = store
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_per_owner = max_per_owner
        self.index = index
        self.relay = relay

    def native_target(self, model: str) -> Target | None:
        """The first candidate when it is OpenAI itself: the request goes there as sent (no failover to
        another provider, as for any pass-through: the wire format is OpenAI's)."""
        try:
            views = self.index.resolve(model)
        except E.TollgateError:
            return None  # the chat path raises the same error, in its own words
        t = views[0].target if views else None
        return t if t is not None and t.kind == "openai" else None

    async def _prepare(self, p: Principal, raw: bytes) -> Parsed:
        parsed = parse(load_body(raw))
        parsed.raw = raw
        if parsed.previous_response_id:
            row = await self.store.get_response(parsed.previous_response_id, owner_of(p))
            if row is None:
                raise E.NotFound(f"Previous response with id '{parsed.previous_response_id}' not found.",
                                 reason="RESPONSE_NOT_FOUND",
                                 field_violations=[E.FieldViolation("previous_response_id", "not found")])
            if not row.items:
                raise bad("The previous response's conversation was over the gateway's storage bound; "
                          "send the whole input instead of previous_response_id.", "previous_response_id")
            parsed.history = orjson.loads(row.items) + orjson.loads(row.response)["output"]
            parsed.previous_native = row.native
        return parsed

    def _native_request(self, parsed: Parsed, target: Target, headers: list[tuple[str, str]]) -> NativeResponses:
        body, raw = parsed.body, parsed.raw
        changed = {}
        if target.model != parsed.model:
            changed["model"] = target.model  # "openai/gpt-4.1" names the provider; OpenAI wants "gpt-4.1"
        if parsed.previous_response_id and not parsed.previous_native:
            # Answered by another provider: OpenAI has never seen it, so the conversation goes in full.
            changed["input"] = parsed.history + parsed.items
            changed["previous_response_id"] = None
        if changed:
            body = {k: v for k, v in {**body, **changed}.items() if v is not None}
            raw = orjson.dumps(body)
        req = native_request(target.provider, "POST", "responses", "", [("content-type", "application/json")] + headers, raw)
        return NativeResponses(**{f.name: getattr(req, f.name) for f in dataclasses.fields(NativeRequest)})

    async def _native_create(self, p: Principal, parsed: Parsed, target: Target, request_id: str,
                             time_remaining: float | None, headers: list[tuple[str, str]]) -> Answer:
        req = self._native_request(parsed, target, headers)
        raw, started = await whole_answer(self.pipeline.forward(p, req, self.relay, request_id, time_remaining))
        try:
            resp = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise E.Unavailable("OpenAI's answer is not JSON", reason="UPSTREAM_PROTOCOL_ERROR") from None
        if not isinstance(resp, dict) or not isinstance(resp.get("id"), str):
            raise E.Unavailable("OpenAI's answer is not a response object", reason="UPSTREAM_PROTOCOL_ERROR")
        await self._store(p, parsed, resp, native=True)
        return Answer(resp, started.outcome, raw)

    async def _native_stream(self, p: Principal, parsed: Parsed, target: Target, request_id: str,
                             time_remaining: float | None,
                             headers: list[tuple[str, str]]) -> AsyncIterator[StreamStarted | tuple[str, bytes]]:
        req = self._native_request(parsed, target, headers)
        sse = SSEParser()
        events = self.pipeline.forward(p, req, self.relay, request_id, time_remaining)
        async with aclosing(events):
            async for ev in events:
                if type(ev) is bytes:
                    for e in sse.feed(ev):
                        kind, data = await self._native_event(p, parsed, e.event, e.data)
                        yield kind, data
                elif isinstance(ev, ForwardStarted):
                    if not ev.exchange.ok:
                        await raise_upstream_error(ev, events)
                    yield StreamStarted(ev.outcome)
            for e in sse.close():
                yield await self._native_event(p, parsed, e.event, e.data)

    async def _native_event(self, p: Principal, parsed: Parsed, kind: str, data: bytes) -> tuple[str, bytes]:
        if not kind or kind in TERMINAL:
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict):
                kind = kind or str(doc.get("type", ""))
                resp = doc.get("response")
                if kind in TERMINAL and isinstance(resp, dict) and isinstance(resp.get("id"), str):
                    await self._store(p, parsed, resp, native=True)  # before the caller sees the end
        return kind, data

    async def create(self, p: Principal, raw: bytes, surface: str, request_id: str,
                     time_remaining: float | None, headers: list[tuple[str, str]] = ()) -> Answer:
        parsed = await self._prepare(p, raw)
        target = self.native_target(parsed.model)
        if target is not None:
            return await self._native_create(p, parsed, target, request_id, time_remaining, list(headers))
        req = to_chat(parsed, surface or SURFACE)
        result, out = await self.pipeline.chat(p, req, request_id, time_remaining)
        status, reason = render.status_of(result.finish_reason)
        usage = out.usage
        if usage is not None and result.usage.reasoning_tokens and not usage.reasoning_tokens:
            usage.reasoning_tokens = result.usage.reasoning_tokens
        resp = render.response_object(parsed, response_id(request_id), out.created, out.route.upstream_model or req.model,
                                      status, render.output_of(result), usage, reason)
        await self._store(p, parsed, resp)
        return Answer(resp, out)

    async def stream(self, p: Principal, raw: bytes, surface: str, request_id: str, time_remaining: float | None,
                     headers: list[tuple[str, str]] = ()) -> AsyncIterator[StreamStarted | tuple[str, bytes]]:
        parsed = await self._prepare(p, raw)
        target = self.native_target(parsed.model)
        if target is not None:
            events = self._native_stream(p, parsed, target, request_id, time_remaining, list(headers))
            async with aclosing(events):
                async for ev in events:
                    yield ev
            return
        req = to_chat(parsed, surface or SURFACE)
        req.include_usage = True
        writer: render.EventWriter | None = None
        events = self.pipeline.stream(p, req, request_id, time_remaining)
        async with aclosing(events):
            async for ev in events:
                if type(ev) is list:
                    for e in writer.feed(ev):  # type: ignore[union-attr]
                        yield e
                elif isinstance(ev, StreamStarted):
                    yield ev
                    out = ev.outcome
                    t = out.route.target
                    writer = render.EventWriter(parsed, response_id(request_id), out.created, t.model if t else req.model)
                    for e in writer.start():
                        yield e
                elif isinstance(ev, StreamFinished):
                    closing, resp = writer.finish(ev.outcome.finish_reason, ev.outcome.usage)  # type: ignore[union-attr]
                    await self._store(p, parsed, resp)  # before `response.completed`: the next turn may follow at once
                    for e in closing:
                        yield e

    async def get(self, p: Principal, rid: str) -> bytes:
        row = await self.store.get_response(rid, owner_of(p)) if rid else None
        if row is None:
            raise E.NotFound(f"Response with id '{rid[:128]}' not found.", reason="RESPONSE_NOT_FOUND")
        return row.response.encode()

    async def delete(self, p: Principal, rid: str) -> None:
        if not rid or not await self.store.delete_response(rid, owner_of(p)):
            raise E.NotFound(f"Response with id '{rid[:128]}' not found.", reason="RESPONSE_NOT_FOUND")

    async def _store(self, p: Principal, parsed: Parsed, resp: dict[str, Any], native: bool = False) -> None:
        if not parsed.store:
            return
        items = orjson.dumps(parsed.history + parsed.items)
        now = self.clock.now()
        row = StoredResponse(resp["id"], owner_of(p), now, now + self.ttl_s, native, orjson.dumps(resp).decode(),
                             items.decode() if len(items) <= MAX_STORED_ITEMS_BYTES else "")
        try:
            await self.store.save_response(row, self.max_per_owner)
        except Exception as e:  # the answer is metered and good; only its continuation by id is lost
            log.warning("storing response %s failed: %s", resp["id"], type(e).__name__)


def response_id(request_id: str) -> str:
    """The response id shares the request id's random part: a ledger row and its response match."""
    return "resp_" + request_id.removeprefix("req_")
