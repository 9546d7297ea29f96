"""InferenceService.Forward: provider-native pass-through (seed 003), thin over Pipeline.forward.

The first message is the upstream's head (status, relayable headers, route), then body bytes
as they arrive. Route and rate-limit numbers also go out as initial metadata, as for StreamChat.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterator

from services.pipeline import ForwardStarted, Outcome
from services.routing.passthrough import native_request
from services.rpc import convert
from services.rpc.interceptors import Ctx, credentials, rate_limit_metadata, stream
from tollgate.v1 import inference_service_pb2 as ipb


def _metadata(request_id: str, out: Outcome) -> tuple[tuple[str, str], ...]:
    md = rate_limit_metadata(out.decision) + (("x-request-id", request_id),)
    t = out.route.target
    if t is not None:
        md += (("x-llm-provider", t.provider), ("x-llm-model", t.model), ("x-llm-key-id", t.key_id))
    if out.route.attempts:
        md += (("x-tollgate-route", out.route.header()),)
    return md


@stream()
async def Forward(self: Any, request: ipb.ForwardRequest, ctx: Ctx) -> AsyncIterator[ipb.ForwardResponse]:
    """InferenceServicer.Forward: `self` is the servicer (its guard, pipeline and passthrough)."""
    req = native_request(request.provider, request.method, request.path, request.query,
                         [(h.name, h.value) for h in request.headers], request.body)
    req.caller_secrets = credentials(ctx.context)
    events = self.pipeline.forward(ctx.principal, req, self.passthrough, ctx.request_id, ctx.context.time_remaining())
    async with aclosing(events):
        async for ev in events:
            if type(ev) is bytes:
                yield ipb.ForwardResponse(body=ev)
            elif isinstance(ev, ForwardStarted):
                out, ex = ev.outcome, ev.exchange
                await ctx.context.send_initial_metadata(_metadata(ctx.request_id, out))
                yield ipb.ForwardResponse(head=ipb.ForwardHead(
                    id=ctx.request_id, status=ex.status, route=convert.route(out.route),
                    headers=[ipb.Header(name=k, value=v) for k, v in ex.headers]))


forward = Forward
