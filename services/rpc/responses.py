"""ResponsesService: OpenAI's Responses API, thin over services/responses/service.py."""

from __future__ import annotations

from contextlib import aclosing
from typing import AsyncIterator

import orjson

from services.pipeline import StreamStarted
from services.responses.service import Responses
from services.rpc import convert
from services.rpc.inference import route_metadata
from services.rpc.interceptors import Ctx, Guard, stream, unary
from tollgate.v1 import responses_service_pb2 as rpb
from tollgate.v1 import responses_service_pb2_grpc as rpb_grpc


class ResponsesServicer(rpb_grpc.ResponsesServiceServicer):
    """OpenAI's Responses API over services/responses/service.py."""

    def __init__(self, guard: Guard, responses: Responses) -> None:
        self.guard = guard
        self.responses = responses

    @unary()
    async def CreateResponse(self, request: rpb.CreateResponseRequest, ctx: Ctx) -> rpb.CreateResponseResponse:
        ans = await self.responses.create(ctx.principal, request.body, request.surface, ctx.request_id,
                                          ctx.context.time_remaining())
        out = ans.outcome
        await ctx.context.send_initial_metadata(route_metadata(ctx.request_id, out))
        msg = rpb.CreateResponseResponse(id=ans.response["id"], response=ans.raw or orjson.dumps(ans.response))
        convert.fill_usage(msg.usage, out.usage, out.cost_usd)
        convert.fill_route(msg.route, out.route)
        return msg

    @stream()
    async def StreamResponse(self, request: rpb.StreamResponseRequest, ctx: Ctx) -> AsyncIterator[rpb.StreamResponseResponse]:
        events = self.responses.stream(ctx.principal, request.body, request.surface, ctx.request_id,
                                       ctx.context.time_remaining())
        async with aclosing(events):
            async for ev in events:
                if type(ev) is tuple:
                    yield rpb.StreamResponseResponse(type=ev[0], data=ev[1])
                elif isinstance(ev, StreamStarted):
                    await ctx.context.send_initial_metadata(route_metadata(ctx.request_id, ev.outcome))

    @unary()
    async def GetResponse(self, request: rpb.GetResponseRequest, ctx: Ctx) -> rpb.GetResponseResponse:
        return rpb.GetResponseResponse(response=await self.responses.get(ctx.principal, request.id))

    @unary()
    async def DeleteResponse(self, request: rpb.DeleteResponseRequest, ctx: Ctx) -> rpb.DeleteResponseResponse:
        await self.responses.delete(ctx.principal, request.id)
        return rpb.DeleteResponseResponse(id=request.id, deleted=True)
