"""GET /ws: seed 000's and seed 004's WebSocket protocols on one socket, each turn a StreamChat RPC.

Seed 000:  -> {"type": "authenticate", "apiKey"}         <- {"type": "authenticated"}
           -> {"type": "chat", "messages", model?, maxTokens?, temperature?, id?}
           <- {"type": "token", "content"} ... then {"type": "done", "model", "provider", "finishReason", "usage"}
Seed 004:  -> {"type": "inference_request", "id", "data": {model, messages, temperature, max_tokens}, apiKey?}
           <- {"type": "inference_response", "id", "data": {"content"}} ... then one with
              {"finish_reason", "usage", "model", "created"}
Both:      <- {"type": "heartbeat", "timestamp": ms} every heartbeat_s; {"type": "error", "id", "error":
              {"code", "message", "type"}}; {"type": "close", "reason", "code"} before the server closes.

The key comes from the upgrade request's Authorization / X-API-Key, an `authenticate` message, or
`apiKey` on a request; the server judges it (a ListModels call with it), never the bridge.
Bounds (RELIABILITY E8): frames over max_frame_bytes close 1009; no accepted key within
auth_timeout_s closes 1008; binary frames and malformed JSON get an `error` and the socket stays;
at most max_inflight answers at once, one per id. A socket that goes away cancels its RPCs, which
cancels the upstream requests (the ledger still gets its one row).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from grpc.aio import AioRpcError

from gateway_http import calls
from gateway_http.errors import BridgeError, http_status
from gateway_http.openai import codec
from gateway_http.seeds import api
from gateway_http.seeds.inference import bridge_error_object, error_object, error_type, rpc_error
from gateway_http.state import BRIDGE
from gateway_http.traced import WsTurn
from tollgate.json_bound import KEY_SCAN_FLOOR_BYTES, too_complex
from tollgate.client import RpcErrorInfo, error_info
from tollgate.v1 import chat_pb2 as pb
from tollgate.v1 import inference_service_pb2 as ipb
from tollgate.v1 import model_service_pb2 as mpb


@dataclass
class WsLimits:
    """Per-socket bounds; one mutable instance per app (tests shorten the timers)."""

    max_frame_bytes: int = 1024 * 1024
    auth_timeout_s: float = 5.0
    heartbeat_s: float = 30.0
    max_inflight: int = 4
    max_key_chars: int = 512
    max_connections: int = 1000  # seed 004's WS_MAX_CONNECTIONS: sockets open at once (503 past it)
    open_sockets: int = 0


WS_LIMITS = web.AppKey("ws_limits", WsLimits)


OPEN_EVENT = "x-tollgate-open-event"  # services/limits/open_gate.py: what this keyless call is
MESSAGE_TYPES = frozenset(("authenticate", "chat", "inference_request", "close", "ping", "heartbeat", "pong"))


def _key_metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", "Bearer " + key),)


class Socket:
    """One connection: its credentials, its answers in flight, and a lock so frames never interleave."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, limits: WsLimits,
                 md: tuple[tuple[str, str], ...], authenticated: bool) -> None:
        self.request = request
        self.ws = ws
        self.limits = limits
        self.md = md
        self.authenticated = authenticated
        self.inflight: dict[str, asyncio.Task] = {}
        self._lock = asyncio.Lock()
        # Traces on: the span of the message on_frame is handling (messages are read one at a
        # time); an answer's task takes its message's turn along and ends it.
        self.tracing = request.app[BRIDGE].tracing
        self.turn: WsTurn | None = None

    async def send(self, obj: dict[str, Any]) -> bool:
        """False once the peer is gone (the caller stops)."""
        if self.ws.closed:
            return False
        try:
            async with self._lock:
                await self.ws.send_str(orjson.dumps(obj).decode())
            return True
        except (ConnectionError, RuntimeError):
            return False

    async def error(self, rid: str | None, err: dict[str, Any], turn: WsTurn | None = None) -> bool:
        if (turn := turn or self.turn) is not None and isinstance(err.get("code"), int):
            turn.status = err["code"]
        return await self.send({"type": "error", "id": rid, "error": err})

    async def invalid(self, rid: str | None, message: str, status: int = 400) -> bool:
        return await self.error(rid, {"code": status, "message": message, "type": error_type(status)})

    async def close(self, code: int, reason: str) -> None:
        await self.send({"type": "close", "reason": reason, "code": code})
        await self.ws.close(code=code, message=reason.encode()[:120])

    # -- credentials

    async def check(self, md: tuple[tuple[str, str], ...]) -> RpcErrorInfo | None:
        """Asks the server whether `md` authenticates (a one-row catalogue read; charges nothing)."""
        try:
            await calls.client(self.request).models.ListModels(mpb.ListModelsRequest(page_size=1), metadata=md,
                                                               timeout=calls.timeout(self.request))
            return None
        except AioRpcError as e:
            return error_info(e)

    def _key(self, raw: Any) -> str:
        if not isinstance(raw, str) or not raw or len(raw) > self.limits.max_key_chars:
            raise BridgeError(400, "Invalid 'apiKey': expected a non-empty string.", param="apiKey")
        if any(c in raw for c in "\r\n\0"):  # RELIABILITY E9
            raise BridgeError(400, "Invalid 'apiKey': control characters are not allowed.", param="apiKey")
        return raw

    async def authenticate(self, raw: Any, rid: str | None, reply: bool) -> bool:
        try:
            key = self._key(raw)
        except BridgeError as e:
            await self.error(rid, bridge_error_object(e))
            return False
        md = _key_metadata(key) + calls.forwarded(self.request)
        info = await self.check(md if self.turn is None else self.turn.metadata(md))
        if info is not None:
            await self.error(rid, error_object(api_key_required(info)))
            return False
        self.md, self.authenticated = md, True
        if reply:
            await self.send({"type": "authenticated", "success": True})
        return True

    # -- messages

    async def on_frame(self, data: str | None) -> None:
        """One message from the peer: a text frame's data, or None for a binary frame."""
        if self.tracing is None:
            await self.handle(data)
            return
        self.turn = turn = WsTurn(self.tracing, self.request)
        try:
            await self.handle(data)
        finally:
            if self.turn is turn:  # not handed to an answer's task (start() takes it)
                self.turn = None
                turn.end()

    async def handle(self, data: str | None) -> None:
        if data is None:
            await self.invalid(None, "Binary frames are not supported; send JSON text frames.")
            return
        # A key is 5 characters at least, so only a frame this long can hold too many (E2).
        if len(data) > KEY_SCAN_FLOOR_BYTES and (why := too_complex(data.encode())) is not None:
            await self.invalid(None, why)
            return
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            await self.invalid(None, f"Malformed JSON ({e.msg}).")
            return
        if not isinstance(msg, dict):
            await self.invalid(None, "A message must be a JSON object with a 'type'.")
            return
        kind, rid = msg.get("type"), msg.get("id")
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int)) or len(str(rid)) > 200):
            await self.invalid(None, "Invalid 'id': expected a string of at most 200 characters.")
            return
        rid = None if rid is None else str(rid)
        if self.turn is not None and kind in MESSAGE_TYPES:
            self.turn.named(kind)
        if kind == "authenticate":
            await self.authenticate(msg.get("apiKey"), rid, reply=True)
        elif kind == "chat":
            await self.start(rid, msg, seed000=True)
        elif kind == "inference_request":
            await self.start(rid, msg, seed000=False)
        elif kind == "close":
            await self.close(1000, "Client requested close")
        elif kind == "ping":
            await self.send({"type": "pong", "timestamp": int(time.time() * 1000)})
        elif kind in ("heartbeat", "pong"):
            pass
        else:
            await self.invalid(rid, "Unknown message type; expected authenticate, chat, inference_request or close.")

    async def start(self, rid: str | None, msg: dict[str, Any], seed000: bool) -> None:
        data = msg if seed000 else msg.get("data")
        if not isinstance(data, dict):
            await self.invalid(rid, "Invalid 'data': expected an object with model and messages.")
            return
        if not seed000 and not data.get("model"):
            # Seed 004's inference_request names its model (as /api/v1/inference must, in the core).
            await self.error(rid, {"code": 400, "message": "Validation error", "type": "validation",
                                   "details": {"field": "model", "message": "Model is required"}})
            return
        raw_key = msg.get("apiKey", data.get("apiKey"))
        if raw_key is not None and not await self.authenticate(raw_key, rid, reply=False):
            return
        try:
            inp = api.chat_input(data, "ws") if seed000 else codec.chat_input(data, "ws")
        except BridgeError as e:
            await self.error(rid, bridge_error_object(e))
            return
        slot = rid or ""
        if slot in self.inflight:
            await self.invalid(rid, "A request with this id is still being answered on this socket.", 409)
            return
        if len(self.inflight) >= self.limits.max_inflight:
            await self.invalid(rid, f"Too many requests in flight on this socket (at most {self.limits.max_inflight}).", 429)
            return
        turn = self.turn
        task = asyncio.create_task(self.answer(rid, inp, seed000, turn))
        self.inflight[slot] = task
        if turn is not None:  # the answer's end (or its cancellation) ends the message's span
            self.turn = None
            task.add_done_callback(lambda t: turn.end(cancelled=t.cancelled()))
        task.add_done_callback(lambda t: self.inflight.pop(slot, None) if self.inflight.get(slot) is t else None)

    async def answer(self, rid: str | None, inp: pb.ChatInput, seed000: bool, turn: WsTurn | None = None) -> None:
        md = self.md if turn is None else turn.metadata(self.md)
        call = calls.client(self.request).inference.StreamChat(ipb.StreamChatRequest(input=inp), metadata=md,
                                                               timeout=calls.timeout(self.request))
        created, model, base = 0, inp.model, {"id": rid} if rid is not None else {}
        try:
            async for msg in call:
                kind = msg.WhichOneof("event")
                if kind == "delta":
                    text = "".join(d.text for d in msg.delta.deltas)
                    if not text:
                        continue
                    out = {"type": "token", **base, "content": text} if seed000 else \
                        {"type": "inference_response", "id": rid, "data": {"content": text}}
                    if not await self.send(out):
                        return
                elif kind == "start":
                    self.authenticated = True
                    created, model = msg.start.created, msg.start.route.model or inp.model
                elif kind == "end":
                    e = msg.end
                    model = e.route.model or model
                    fin = codec.FINISH[e.finish_reason]
                    if seed000:
                        await self.send({"type": "done", **base, "model": model, "provider": e.route.provider,
                                         "finishReason": fin, "usage": api.usage_json(e.usage)})
                    else:
                        await self.send({"type": "inference_response", "id": rid, "data": {
                            "finish_reason": fin, "usage": codec.usage_json(e.usage), "model": model, "created": created}})
        except AioRpcError as e:
            await self.error(rid, error_object(api_key_required(error_info(e))), turn)
        finally:
            call.cancel()  # the peer left or the answer ended: either way nothing more is read upstream

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.limits.heartbeat_s)
            if not await self.send({"type": "heartbeat", "timestamp": int(time.time() * 1000)}):
                return


def api_key_required(info: RpcErrorInfo) -> RpcErrorInfo:
    """Seed 000's words for a missing key, whatever the server's phrasing."""
    if info.reason == "API_KEY_REQUIRED":
        info.message = api.KEY_REQUIRED[1]
    return info


async def websocket(request: web.Request) -> web.StreamResponse:
    limits = request.app[WS_LIMITS]
    if limits.max_connections and limits.open_sockets >= limits.max_connections:
        return web.Response(status=503, content_type="application/json", headers={"Retry-After": "1"},
                            body=orjson.dumps({"error": {"code": 503, "type": "upstream", "message":
                                               f"Too many WebSocket connections open ({limits.max_connections}); retry shortly"}}))
    md = calls.metadata(request)
    ws = web.WebSocketResponse(max_msg_size=limits.max_frame_bytes, heartbeat=None)
    sock = Socket(request, ws, limits, md, authenticated=False)
    # The upgrade's own credentials (or auth switched off) authenticate at once; a key the
    # server refuses is refused before the upgrade, in seed 004's error shape.
    keyless = not md or md[0][0] == calls.FORWARDED
    # Keyless, the check counts as a /ws connect for open mode's per-IP limit (seed 004: 5 a minute).
    info = await sock.check(md + ((OPEN_EVENT, "ws_connect"),) if keyless else md)
    if info is not None and (not keyless or http_status(info) != 401):
        return rpc_error(api_key_required(info))
    sock.authenticated = info is None
    await ws.prepare(request)
    limits.open_sockets += 1
    request.app[BRIDGE].stalls.watch(request)
    loop = asyncio.get_running_loop()
    auth_deadline = loop.time() + limits.auth_timeout_s
    beat = asyncio.create_task(sock.heartbeat())
    try:
        while not ws.closed:
            timeout = None if sock.authenticated else auth_deadline - loop.time()
            if timeout is not None and timeout <= 0:
                await sock.close(1008, "Authentication required: no API key accepted in time")
                break
            try:
                msg = await ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                continue  # the loop head decides: authenticated meanwhile, or out of time
            if msg.type == WSMsgType.TEXT:
                await sock.on_frame(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.on_frame(None)
            else:  # CLOSE, CLOSING, CLOSED, or ERROR (e.g. a frame over the limit: aiohttp closed it 1009)
                break
    finally:
        tasks = [beat, *sock.inflight.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        limits.open_sockets -= 1
        if not ws.closed:
            await ws.close()
    return ws


def add_routes(app: web.Application) -> None:
    settings = app[BRIDGE].settings
    app[WS_LIMITS] = WsLimits(heartbeat_s=settings.ws_heartbeat_s, max_connections=settings.ws_max_connections)
    app.router.add_get("/ws", websocket)
