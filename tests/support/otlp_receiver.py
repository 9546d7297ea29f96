"""A small OTLP/HTTP trace receiver on 127.0.0.1: what a collector would get from a gateway.

POST /v1/traces with a protobuf ExportTraceServiceRequest (opentelemetry-proto decodes it, gzip
or not), answered with an ExportTraceServiceResponse as the OTLP spec says. Every span is kept
flat: name, kind, trace and span ids in hex, parent id, attributes as Python values, the service
name of its resource.
"""

from __future__ import annotations

import asyncio
import gzip
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    service: str


@dataclass
class Receiver:
    url: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    exports: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, pred, timeout_s: float = 10.0) -> list[ReceivedSpan]:
        async with asyncio.timeout(timeout_s):
            while not (found := [s for s in self.spans if pred(s)]):
                self.arrived.clear()
                await self.arrived.wait()
        return found


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    return getattr(v, which) if which else None


@asynccontextmanager
async def run_otlp_receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def traces(request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        req = ExportTraceServiceRequest.FromString(raw)
        state.exports += 1
        for rs in req.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    state.spans.append(ReceivedSpan(s.name, s.kind, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                                    {a.key: _value(a.value) for a in s.attributes}, service))
        state.arrived.set()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()
