"""An in-process stand-in for a grpc.aio channel: the generated stubs call servicers directly.

A real gRPC hop between two processes costs more CPU here than a whole bare proxy
(../shared/bench/README.md, micro/grpc_hop.py), so the default deployment runs the bridge
and the servicers in one process. This channel keeps everything else identical: the same
generated stubs and messages, the same servicer code (auth, request ids, errors are in the
servicers' guard, not in transport interceptors), metadata in and out, deadlines enforced,
and failures raised as grpc.aio.AioRpcError with the same trailing google.rpc.Status.
Messages are passed by reference, not serialized: callers must not mutate a request after
sending it (the generated code never does).

Register servicers exactly as on a server: `add_XServicer_to_server(servicer, channel)`.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from typing import Any, AsyncIterator, Sequence

import grpc
from grpc.aio import AioRpcError, Metadata

# asyncio.current_task(loop): in 3.11 a Python function over this dict; its lookup alone, once
# per streamed message. From 3.12 current_task is C (and the dict may go).
_running_task = asyncio.tasks._current_tasks.get if sys.version_info < (3, 12) else asyncio.current_task

MetadataLike = Sequence[tuple[str, str | bytes]] | None
# The channel's own deadline fires this much after the servicer's, so the core's declared
# DEADLINE_EXCEEDED (with its ErrorInfo and ledger status) wins; this one is only a backstop.
DEADLINE_GRACE_S = 0.25


class LocalAbort(Exception):
    """Raised by LocalContext.abort(); becomes an AioRpcError at the channel boundary."""

    _tollgate_abort = True

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = trailing


class _Ready:
    """An awaitable that is already done (awaiting it returns None at once)."""

    __slots__ = ()

    def __await__(self):
        return iter(())


_READY = _Ready()


class LocalContext:
    """The subset of grpc.aio.ServicerContext the servicers use."""

    __slots__ = ("_md", "_deadline", "initial", "trailing", "_code", "_details", "_cancelled", "text_deltas",
                 "plain_answer")

    def __init__(self, metadata: MetadataLike, deadline: float | None) -> None:
        self._md = tuple(metadata or ())
        self._deadline = deadline
        self.initial: tuple = ()
        self.trailing: tuple = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._cancelled = False
        # Set by a caller that renders plain text deltas itself (_StreamCall.text_deltas()).
        self.text_deltas = False
        # Set by a caller that renders a unary chat answer from its values (_UnaryCall.plain_answer()).
        self.plain_answer = False

    def invocation_metadata(self) -> tuple:
        return self._md

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def send_initial_metadata(self, metadata: MetadataLike) -> Any:
        # Awaited as grpc.aio's is; nothing to wait for here, so no coroutine per answer.
        self.initial = tuple(metadata or ())
        return _READY

    def set_trailing_metadata(self, metadata: MetadataLike) -> None:
        self.trailing = tuple(metadata or ())

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: MetadataLike = ()) -> None:
        raise LocalAbort(code, details, tuple(trailing_metadata or ()))

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def cancelled(self) -> bool:
        return self._cancelled

    def peer(self) -> str:
        return "inprocess"

    def done(self) -> bool:
        return False


def _error(ctx: LocalContext, code: grpc.StatusCode, details: str, trailing: tuple = ()) -> AioRpcError:
    return AioRpcError(code, Metadata(*ctx.initial), Metadata(*(trailing or ctx.trailing)), details)


def _translate(ctx: LocalContext, exc: BaseException) -> AioRpcError:
    if isinstance(exc, LocalAbort):
        return _error(ctx, exc.code, exc.details, exc.trailing)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return _error(ctx, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    if isinstance(exc, NotImplementedError) or ctx._code == grpc.StatusCode.UNIMPLEMENTED:
        return _error(ctx, grpc.StatusCode.UNIMPLEMENTED, ctx._details or "Method not implemented!")
    return _error(ctx, grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}")


class _Watchdog:
    """Enforces the deadlines of the calls in flight on one event loop with a single periodic
    check, instead of a timer per call and per streamed message: a timer costs more than the
    rest of a message's trip through this channel (bench/cpu_per_request.py). The check runs
    every TICK_S while calls are in flight, so a deadline fires within DEADLINE_GRACE_S +
    TICK_S of passing; the servicers enforce the deadline themselves before that."""

    TICK_S = 0.05

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: dict[int, "_Call"] = {}
        self._ids = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, call: "_Call") -> int:
        key = next(self._ids)
        self._calls[key] = call
        if self._timer is None:
            self._timer = self.loop.call_later(self.TICK_S, self._check)
        return key

    def discard(self, key: int) -> None:
        self._calls.pop(key, None)

    def _check(self) -> None:
        now = time.monotonic()
        for call in [c for c in self._calls.values() if c._expires <= now]:
            call._expire()
        self._timer = self.loop.call_later(self.TICK_S, self._check) if self._calls else None


class _Call:
    """What both call kinds share: the context and the deadline. While the caller waits on the
    servicer, `_waiter` is its task; at the deadline (plus grace) the watchdog cancels that wait
    and the wait turns the cancellation into DEADLINE_EXCEEDED."""

    # Slots: a stream's call lives as long as the stream (no per-call __dict__ held open).
    __slots__ = ("_handler", "_request", "_channel", "_ctx", "_deadline", "_expires", "_expired", "_waiter",
                 "_dog", "_dog_key", "_code")

    def __init__(self, channel: "InProcessChannel", handler: Any, request: Any, metadata: MetadataLike,
                 timeout: float | None) -> None:
        deadline = time.monotonic() + timeout if timeout is not None else None
        self._handler = handler
        self._request = request
        self._channel = channel
        self._ctx = LocalContext(metadata, deadline)
        self._deadline = deadline
        self._expires = deadline + DEADLINE_GRACE_S if deadline is not None else 0.0
        self._expired = False
        self._waiter: asyncio.Task | None = None
        self._dog: _Watchdog | None = None
        self._dog_key = 0
        self._code = grpc.StatusCode.OK

    def _watch(self) -> None:
        if self._deadline is not None and self._dog is None:
            self._dog = self._channel.watchdog()
            self._dog_key = self._dog.add(self)

    def _unwatch(self) -> None:
        if self._dog is not None:
            self._dog.discard(self._dog_key)
            self._dog = None

    def _expire(self) -> None:
        self._unwatch()
        if self._waiter is not None and not self._expired:
            self._expired = True
            self._waiter.cancel()

    def _timed_out(self, task: asyncio.Task | None) -> bool:
        """Whether a CancelledError in our wait was the deadline's (then it is not propagated)."""
        return self._expired and task is not None and task.uncancel() == 0

    async def initial_metadata(self) -> Metadata:
        return Metadata(*self._ctx.initial)

    def initial_pairs(self) -> tuple:
        """The initial metadata as the servicer sent it, (key, value) pairs: what
        initial_metadata() wraps, for a caller that knows it holds an in-process call."""
        return self._ctx.initial

    async def trailing_metadata(self) -> Metadata:
        return Metadata(*self._ctx.trailing)

    async def code(self) -> grpc.StatusCode:
        return self._code


class _UnaryCall(_Call):
    __slots__ = ()

    async def _run(self) -> Any:
        ctx = self._ctx
        task = None
        try:
            if self._deadline is not None:
                if time.monotonic() >= self._expires:
                    raise TimeoutError
                task = self._waiter = asyncio.current_task()
                # _watch(), written out with the watchdog's add(): once per call
                dog = self._channel._watchdog
                if dog is None or dog.loop is not asyncio.get_running_loop():
                    dog = self._channel.watchdog()
                self._dog = dog
                self._dog_key = key = next(dog._ids)
                dog._calls[key] = self
                if dog._timer is None:
                    dog._timer = dog.loop.call_later(dog.TICK_S, dog._check)
            return await self._handler.unary_unary(self._request, ctx)
        except asyncio.CancelledError:
            if self._timed_out(task):
                self._code = grpc.StatusCode.DEADLINE_EXCEEDED
                raise _translate(ctx, TimeoutError()) from None
            self._code = grpc.StatusCode.CANCELLED
            raise
        except BaseException as exc:
            err = _translate(ctx, exc)
            self._code = err.code()
            raise err from None
        finally:
            self._waiter = None
            if self._dog is not None:  # _unwatch(), with the watchdog's discard()
                self._dog._calls.pop(self._dog_key, None)
                self._dog = None

    def __await__(self):
        return self._run().__await__()

    def cancel(self) -> bool:
        return False

    def plain_answer(self) -> None:
        """Asks a Chat servicer for its answer as a ChatAnswer where it can (before awaiting):
        only in process, only for a caller that renders both as the message would be rendered.
        Building the ChatResponse and reading it back cost ~27 upb field writes and ~18 reads."""
        self._ctx.plain_answer = True


class ChatAnswer:
    """A unary chat answer's values, as its ChatResponse would carry them (finish_reason the
    message's enum value, tool_calls (id, name, arguments) tuples, `model` the route's), for an
    in-process caller that asked for them (_UnaryCall.plain_answer()). `raw` is always empty: a
    relayed provider answer comes as the message."""

    __slots__ = ("id", "created", "text", "reasoning", "finish_reason", "tool_calls", "model",
                 "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")

    raw = b""

    def __init__(self, id: str, created: int, text: str, reasoning: str, finish_reason: int, tool_calls: list,
                 model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int,
                 reasoning_tokens: int) -> None:
        self.id = id
        self.created = created
        self.text = text
        self.reasoning = reasoning
        self.finish_reason = finish_reason
        self.tool_calls = tool_calls
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cached_tokens = cached_tokens
        self.reasoning_tokens = reasoning_tokens


class _StreamCall(_Call):
    __slots__ = ("_gen", "_finished")

    def __init__(self, channel: "InProcessChannel", handler: Any, request: Any, metadata: MetadataLike,
                 timeout: float | None) -> None:
        super().__init__(channel, handler, request, metadata, timeout)
        self._gen = handler.unary_stream(request, self._ctx)
        self._finished = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self._finished:
            raise StopAsyncIteration
        task = None
        try:
            if self._deadline is not None:
                if time.monotonic() >= self._expires:
                    raise TimeoutError
                dog = self._dog
                if dog is None:  # _watch(), written out: this runs once per streamed message
                    dog = self._dog = self._channel.watchdog()
                    self._dog_key = dog.add(self)
                task = self._waiter = _running_task(dog.loop)
            return await self._gen.__anext__()
        except StopAsyncIteration:
            self._finish()
            raise
        except asyncio.CancelledError:
            self._finish()
            if self._timed_out(task):
                err = _translate(self._ctx, TimeoutError())
                self._code = err.code()
                await self._gen.aclose()
                raise err from None
            self._code = grpc.StatusCode.CANCELLED
            raise
        except BaseException as exc:
            self._finish()
            err = _translate(self._ctx, exc)
            self._code = err.code()
            await self._gen.aclose()
            raise err from None
        finally:
            self._waiter = None

    def _finish(self) -> None:
        self._finished = True
        self._unwatch()

    def text_deltas(self) -> None:
        """Asks the servicer for a batch of plain text deltas as a tuple of str instead of a
        message (before the first read). Only in process, only for a caller that renders them
        as the message would have been rendered: the message is built and read per upstream
        read, which with a token per read cost more than the token's parse."""
        self._ctx.text_deltas = True

    async def read(self) -> Any:
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            return grpc.aio.EOF

    def cancel(self) -> bool:
        """Stops the servicer's stream (the client went away): its finally blocks run now."""
        if self._finished:
            return False
        self._finish()
        self._code = grpc.StatusCode.CANCELLED
        asyncio.ensure_future(self._gen.aclose())
        return True

    async def aclose(self) -> None:
        if not self._finished:
            self._finish()
            self._code = grpc.StatusCode.CANCELLED
            await self._gen.aclose()


class _Multicallable:
    __slots__ = ("_channel", "_path", "_stream")

    def __init__(self, channel: "InProcessChannel", path: str, stream: bool) -> None:
        self._channel = channel
        self._path = path
        self._stream = stream

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: MetadataLike = None, **_: Any):
        handler = self._channel._handlers.get(self._path)  # handler(), written out: once per call
        if handler is None:
            raise AioRpcError(grpc.StatusCode.UNIMPLEMENTED, Metadata(), Metadata(), "Method not found!")
        return (_StreamCall if self._stream else _UnaryCall)(self._channel, handler, request, metadata, timeout)


class InProcessChannel:
    """Quacks like grpc.aio.Channel for generated stubs, and like a server for add_*_to_server."""

    def __init__(self) -> None:
        self._handlers: dict[str, Any] = {}
        self._watchdog: _Watchdog | None = None

    def watchdog(self) -> _Watchdog:
        """The deadline watchdog of the running loop (a new one if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._watchdog is None or self._watchdog.loop is not loop:
            self._watchdog = _Watchdog(loop)
        return self._watchdog

    # -- the server side: what generated add_XServicer_to_server() calls
    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # add_registered_method_handlers gives us the same handlers by name

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, h in handlers.items():
            self._handlers[f"/{service}/{name}"] = h

    def handler(self, path: str) -> Any:
        return self._handlers.get(path)

    # -- the client side: what generated stubs call
    def unary_unary(self, path: str, request_serializer=None, response_deserializer=None, **_: Any) -> _Multicallable:
        return _Multicallable(self, path, False)

    def unary_stream(self, path: str, request_serializer=None, response_deserializer=None, **_: Any) -> _Multicallable:
        return _Multicallable(self, path, True)

    async def close(self, grace: float | None = None) -> None:
        self._handlers.clear()

    async def channel_ready(self) -> None:
        return None


# The call types this channel returns: `type(call) in LOCAL_CALLS` tells them from grpc.aio's.
LOCAL_CALLS = frozenset({_UnaryCall, _StreamCall})
