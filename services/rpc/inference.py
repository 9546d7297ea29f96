"""InferenceService: Chat, StreamChat and Embed, thin over the pipeline."""

from __future__ import annotations

from contextlib import aclosing
from typing import AsyncIterator

from services.catalog.pricing import Catalog
from services.fidelity import Fidelity
from services.media import Media
from services.metering.tokens import estimate_prompt
from services.pipeline import Pipeline, StreamFinished, StreamStarted
from services.limits.open_gate import OPEN_SURFACES
from services.routing.passthrough import Passthrough
from services.rpc import convert
from services.rpc.forward import forward
from services.rpc.interceptors import Ctx, Guard, rate_limit_metadata, stream, unary
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import inference_service_pb2_grpc as ipb_grpc



def open_inference(request) -> str:
    """Seed 004's open mode opens its own surfaces (/api/v1/inference, /ws), not the keyed ones."""
    return "inference" if request.input.surface in OPEN_SURFACES else ""

def route_metadata(request_id: str, outcome) -> tuple[tuple[str, str], ...]:
    route = outcome.route
    t = route.target
    if t is not None and route.attempts:  # every answered request: one tuple, no concatenations
        return rate_limit_metadata(outcome.decision) + (
            ("x-request-id", request_id), ("x-llm-provider", t.provider), ("x-llm-model", t.model),
            ("x-llm-key-id", t.key_id), ("x-tollgate-route", route.header()))
    md = rate_limit_metadata(outcome.decision) + (("x-request-id", request_id),)
    if t is not None:
        md += (("x-llm-provider", t.provider), ("x-llm-model", t.model), ("x-llm-key-id", t.key_id))
    if route.attempts:
        md += (("x-tollgate-route", route.header()),)
    return md


def _route_md(ctx: Ctx, outcome) -> tuple[tuple[str, str], ...]:
    md = route_metadata(ctx.request_id, outcome)
    if ctx.open_decision is not None and outcome.decision is None:
        md = rate_limit_metadata(ctx.open_decision) + md  # open mode: the caller's per-IP count (seed 004)
    return md


def ignored_metadata(req) -> tuple[tuple[str, str], ...]:
    """What the route could not honour and left out (services/fidelity.py): said, never silent."""
    return (("x-tollgate-ignored", ", ".join(req.ignored)),)


class InferenceServicer(ipb_grpc.InferenceServiceServicer):
    """Chat, StreamChat, Embed, Forward, Media and CountTokens, thin over the pipeline."""

    def __init__(self, guard: Guard, pipeline: Pipeline, catalog: Catalog, fidelity: Fidelity, media: Media,
                 passthrough: Passthrough, max_messages: int) -> None:
        self.guard = guard
        self.pipeline = pipeline
        self.catalog = catalog
        self.fidelity = fidelity
        self.media = media
        self.passthrough = passthrough
        self.max_messages = max_messages

    def _clamp(self, req):
        # RELIABILITY E1: max_tokens over the model's maximum is clamped, not sent on (nor reserved).
        info = self.catalog.get(req.model) if req.sampling.max_tokens else None
        if info is not None and info.max_completion_tokens and req.sampling.max_tokens > info.max_completion_tokens:
            req.sampling.max_tokens = info.max_completion_tokens
        return req

    @unary(open_kind=open_inference)
    async def Chat(self, request: ipb.ChatRequest, ctx: Ctx) -> ipb.ChatResponse:
        req = convert.chat_request(request.input, self.max_messages)
        if req.sampling.max_tokens:  # only a max_tokens may need clamping
            self._clamp(req)
        if req.raw_body and (target := self.fidelity.plan(req)) is not None:
            raw, out = await self.fidelity.chat(ctx.principal, req, target, ctx.request_id, ctx.context.time_remaining())
            await ctx.context.send_initial_metadata(_route_md(ctx, out))
            return ipb.ChatResponse(id=ctx.request_id, raw=raw)
        result, out = await self.pipeline.chat(ctx.principal, req, ctx.request_id, ctx.context.time_remaining())
        md = route_metadata(ctx.request_id, out)  # _route_md(), written out: once per request
        if ctx.open_decision is not None and out.decision is None:
            md = rate_limit_metadata(ctx.open_decision) + md  # open mode: the caller's per-IP count (seed 004)
        await ctx.context.send_initial_metadata(md + ignored_metadata(req) if req.ignored else md)
        if getattr(ctx.context, "plain_answer", False):  # an in-process caller that renders the values
            answer = convert.chat_answer(result, ctx.request_id, out.route, out.usage, out.created)
            if answer is not None:
                return answer
        return convert.chat_response(result, ctx.request_id, out.route, out.usage, out.cost_usd, out.created, out.decision)

    @stream(open_kind=open_inference)
    async def StreamChat(self, request: ipb.StreamChatRequest, ctx: Ctx) -> AsyncIterator[ipb.StreamChatResponse]:
        req = self._clamp(convert.chat_request(request.input, self.max_messages, request.include_usage))
        if req.raw_body and (target := self.fidelity.plan(req)) is not None:
            async for piece in self.fidelity.stream(ctx.principal, req, target, ctx.request_id, ctx.context.time_remaining()):
                if type(piece) is bytes:
                    yield ipb.StreamChatResponse(raw=piece)
                else:
                    await ctx.context.send_initial_metadata(_route_md(ctx, piece))
                    msg = ipb.StreamChatResponse()
                    msg.start.id = ctx.request_id
                    convert.fill_route(msg.start.route, piece.route)
                    msg.start.created = int(piece.created)
                    msg.start.raw = True
                    yield msg
            return
        # An in-process caller that renders plain text itself gets a batch of it as a tuple of
        # str (inprocess.py's text_deltas); anything else in the batch, and every other caller,
        # gets the message.
        texts = getattr(ctx.context, "text_deltas", False)
        async for ev in self.pipeline.stream(ctx.principal, req, ctx.request_id, ctx.context.time_remaining()):
            if type(ev) is list:
                if texts and (plain := convert.plain_texts(ev)) is not None:
                    if plain:
                        yield plain
                    continue
                msg = convert.delta_batch(ev)
                if msg is not None:
                    yield msg
            elif isinstance(ev, StreamStarted):
                out = ev.outcome
                md = _route_md(ctx, out)
                await ctx.context.send_initial_metadata(md + ignored_metadata(req) if req.ignored else md)
                msg = ipb.StreamChatResponse()  # filled in place: no copy per nesting level
                st = msg.start
                st.id = ctx.request_id
                convert.fill_route(st.route, out.route)
                st.created = int(out.created)
                convert.fill_rate_limit(st, out.decision)
                yield msg
            elif isinstance(ev, StreamFinished):
                out = ev.outcome
                if request.include_usage:
                    msg = ipb.StreamChatResponse()
                    convert.fill_usage(msg.usage, out.usage, out.cost_usd)
                    yield msg
                msg = ipb.StreamChatResponse()
                end = msg.end
                end.finish_reason = convert.FINISH_VALUES.get(out.finish_reason, 1)
                convert.fill_usage(end.usage, out.usage, out.cost_usd)
                convert.fill_route(end.route, out.route)
                yield msg

    @unary()
    async def Embed(self, request: ipb.EmbedRequest, ctx: Ctx) -> ipb.EmbedResponse:
        req = convert.embed_request(request)
        result, out = await self.pipeline.embed(ctx.principal, req, ctx.request_id, ctx.context.time_remaining())
        await ctx.context.send_initial_metadata(_route_md(ctx, out))
        return ipb.EmbedResponse(
            id=ctx.request_id, usage=convert.usage(out.usage, out.cost_usd), route=convert.route(out.route),
            embeddings=[ipb.Embedding(index=i, values=v) for i, v in enumerate(result.vectors)])

    Forward = forward  # services/rpc/forward.py: seed 003's pass-through

    @stream()
    async def Media(self, request: ipb.MediaRequest, ctx: Ctx) -> AsyncIterator[ipb.MediaResponse]:
        req = self.media.request(request.operation, request.model, request.body, request.content_type)
        events = self.media.run(ctx.principal, req, ctx.request_id, ctx.context.time_remaining())
        async with aclosing(events):
            async for ev in events:
                if type(ev) is bytes:
                    yield ipb.MediaResponse(body=ev)
                else:
                    out, ex = ev.outcome, ev.exchange
                    await ctx.context.send_initial_metadata(route_metadata(ctx.request_id, out))
                    yield ipb.MediaResponse(head=ipb.ForwardHead(
                        id=ctx.request_id, status=ex.status, route=convert.route(out.route),
                        headers=[ipb.Header(name=k, value=v) for k, v in ex.headers]))

    @unary()
    async def CountTokens(self, request: ipb.CountTokensRequest, ctx: Ctx) -> ipb.CountTokensResponse:
        req = convert.chat_request(request.input, self.max_messages)
        n, target = await self.fidelity.count_tokens(req, ctx.context.time_remaining())
        if target is None:
            return ipb.CountTokensResponse(input_tokens=estimate_prompt(req), estimated=True)
        msg = ipb.CountTokensResponse(input_tokens=n)
        r = msg.route
        r.provider, r.kind, r.model, r.key_id = target.provider, target.kind, target.model, target.key_id
        return msg
