"""Native pass-through (seed 003): /v1/{openai,anthropic,gemini}/{path}, any method.

The handler packs a ForwardRequest and relays the ForwardResponse stream: the head becomes the
status and headers, each body message one write, so the caller gets bytes as the provider sends
them. Which provider, which key, what is forwarded and how it is metered is decided in
services/routing/passthrough.py. Errors before the head are OpenAI-shaped JSON; a failure after
it ends the connection without the body's terminator, so the caller sees a truncated answer.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError, openai_bridge_error, openai_error
from gateway_http.state import BRIDGE
from tollgate.client import error_info
from tollgate.v1 import inference_service_pb2 as ipb

PROVIDERS = ("openai", "anthropic", "gemini")
# The caller's headers that may go upstream (the server filters again); never credentials.
FORWARD_HEADERS = frozenset({
    "content-type", "accept", "accept-language", "anthropic-version", "anthropic-beta", "openai-beta",
    "idempotency-key", "x-goog-api-client",
})


async def forward(request: web.Request) -> web.StreamResponse:
    t0 = time.monotonic()
    provider = request.match_info["provider"]
    path = request.rel_url.raw_path[len(f"/v1/{provider}/"):]
    try:
        body = await read_body(request, json=False)  # forwarded as bytes, never parsed here
    except BridgeError as e:
        return openai_bridge_error(e)
    md = calls.metadata(request)
    if not any(k in ("authorization", "x-api-key") for k, _ in md) and "x-goog-api-key" in request.headers:
        md += (("x-api-key", request.headers["x-goog-api-key"]),)  # what Google's SDKs send
    req = ipb.ForwardRequest(
        provider=provider, method=request.method, path=path, query=request.rel_url.raw_query_string, body=body,
        headers=[ipb.Header(name=k.lower(), value=v) for k, v in request.headers.items() if k.lower() in FORWARD_HEADERS])
    call = calls.client(request).inference.Forward(req, metadata=md, timeout=calls.timeout(request))
    return await relay(request, call, t0)


async def relay(request: web.Request, call: Any, t0: float) -> web.StreamResponse:
    """Relays a stream of one head then body messages (ForwardResponse, MediaResponse): the head's
    status and headers, then each body message as one write. An error before the head is
    OpenAI-shaped JSON; after it, the connection is cut (_abort)."""
    response: web.StreamResponse | None = None
    try:
        async for msg in call:
            if msg.WhichOneof("event") == "body":
                await response.write(msg.body)  # type: ignore[union-attr]
            else:
                head = msg.head
                response = web.StreamResponse(status=head.status)
                for h in head.headers:
                    response.headers.add(h.name, h.value)
                await calls.copy_headers(call, response)
                response.headers["X-LLM-Latency-Ms"] = f"{(time.monotonic() - t0) * 1000:.1f}"
                await response.prepare(request)
                request.app[BRIDGE].stalls.watch(request)
        if response is None:
            raise BridgeError(502, "the upstream returned no response")
        await response.write_eof()
    except AioRpcError as e:
        if response is None:
            return openai_error(error_info(e))
        _abort(request)
    except BridgeError as e:
        return openai_bridge_error(e)
    except ConnectionResetError:
        pass  # the caller left; the finally below stops the upstream
    finally:
        call.cancel()
    return response


def _abort(request: web.Request) -> None:
    # What was relayed is flushed, then FIN without the chunked terminator: a truncated body, as
    # the upstream's own failure would look (aiohttp's write_eof then finds the socket closed).
    if request.transport is not None:
        request.transport.close()


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/v1/{provider:%s}/{path:.*}" % "|".join(PROVIDERS), forward)
