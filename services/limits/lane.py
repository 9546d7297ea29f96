"""Lane: one long-lived, pipelined connection to Redis for the limiter's scripts (issue 20).

redis-py's asyncio client spends ~80-100 µs of CPU on every command here (a pool checkout with
its timeout, packing, a reply read under wait_for; bench/README.md "Issue 20"), more than the
rest of the limiter. A Lane writes each command to one socket as it comes and hands replies back
in order (hiredis parses them), so concurrent requests share the connection as a pipeline:
~8-15 µs per command, and at c=64 Redis reads many commands per round trip.

What it keeps from redis-py's behaviour, for FailoverLimiter (RELIABILITY C4): a lost or refused
connection raises redis.exceptions.ConnectionError (a broken one fails every call waiting on it,
and the next call connects afresh); error replies raise ResponseError, NOSCRIPT NoScriptError.
It has no timeouts of its own: FailoverLimiter bounds every call, and a call it gives up on is
only cancelled here (its reply, when it comes, is read and dropped, keeping the order); a hung
connection is dropped by FailoverLimiter's recovery (`drop()`).

Used for plain TCP URLs (redis://host:port/db, with AUTH and SELECT); other clients (TLS, unix
sockets) keep redis-py for every command.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

CONNECT_TIMEOUT_S = 5.0  # as redis.py's SOCKET_FLOOR_S: a cold connect on a busy host is slow


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: hiredis packs str, bytes, int and float in C (~2.5 µs for an admit's
    30 arguments, against ~7 µs here, issue 20); anything else (a bool) as below."""
    try:
        return hiredis.pack_command(args)
    except TypeError:
        return _pack(args)


def _pack(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            b = a.encode()
        elif isinstance(a, bytes):
            b = a
        elif isinstance(a, int):
            b = b"%d" % a
        else:
            b = repr(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[asyncio.Future] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.pending: list[bytes] = []  # commands written at the end of this loop iteration (flush)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # a protocol error: nothing after it can be trusted
                self.fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiting:
                self.fail(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            fut = waiting.popleft()
            if fut.done():
                continue  # its caller gave up (cancelled): the reply is read and dropped, in order
            if isinstance(reply, ResponseError):
                fut.set_exception(NoScriptError(str(reply)) if str(reply).startswith("NOSCRIPT") else reply)
            else:
                fut.set_result(reply)

    def flush(self) -> None:
        """Writes the commands queued during this loop iteration, in one write."""
        data, self.pending = b"".join(self.pending), []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Connection to Redis lost: {exc or 'closed by the server'}"))

    def fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        self.lane._forget(self)
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Lane:
    """The connection (see the module docstring): `call()` one command, `send()` several."""

    def __init__(self, host: str, port: int, db: int = 0, username: str | None = None,
                 password: str | None = None) -> None:
        self._host, self._port, self._db = host, port, db
        self._username, self._password = username, password
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    @classmethod
    def for_client(cls, client: Any) -> Lane | None:
        """A Lane to the server of a redis-py asyncio client, if it is a plain TCP one; else None."""
        from redis.asyncio.connection import Connection

        pool = getattr(client, "connection_pool", None)
        if pool is None or pool.connection_class is not Connection:
            return None  # TLS, unix socket, or a custom connection: redis-py does it all
        kw = pool.connection_kwargs
        return cls(kw.get("host", "localhost"), int(kw.get("port", 6379)), int(kw.get("db", 0) or 0),
                   kw.get("username"), kw.get("password"))

    async def call(self, *args: Any) -> Any:
        proto = self._proto if self._proto is not None else await self._connect()
        return await self._send(proto, [args])[0]

    async def send(self, commands: list[tuple[Any, ...]]) -> list[asyncio.Future]:
        """Writes the commands at once (one write, one read for Redis); their replies' futures in order."""
        proto = self._proto if self._proto is not None else await self._connect()
        return self._send(proto, commands)

    def drop(self) -> None:
        """Closes the connection; calls waiting on it fail with ConnectionError, the next connects afresh."""
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.fail(RedisConnectionError("Connection to Redis dropped"))

    async def close(self) -> None:
        self.drop()
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None

    # -- internals ------------------------------------------------------------------------------

    def _send(self, proto: _Protocol, commands: list[tuple[Any, ...]]) -> list[asyncio.Future]:
        if proto.lost is not None or proto.transport is None or proto.transport.is_closing():
            self._forget(proto)  # the next call connects afresh
            raise RedisConnectionError("Connection to Redis lost")
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in commands]
        data = b"".join(pack(c) for c in commands)
        if not proto.waiting:
            # Nothing in flight (c=1): write now. Otherwise the commands of this loop iteration
            # go out together at its end: one write (a loopback write wakes redis-server and
            # costs ~50 µs here on a busy host) for all of them.
            proto.transport.write(data)
        else:
            if not proto.pending:
                loop.call_soon(proto.flush)
            proto.pending.append(data)
        proto.waiting.extend(futs)
        return futs

    def _forget(self, proto: _Protocol) -> None:
        if self._proto is proto:
            self._proto = None

    async def _connect(self) -> _Protocol:
        # One connect for all the callers that find no connection; its own task, so a caller
        # that is cancelled (FailoverLimiter's bound) does not cancel the others' connect.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._open(), name="limiter-lane-connect")
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self), self._host, self._port), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            raise RedisConnectionError(f"Error connecting to Redis at {self._host}:{self._port}: "
                                       f"{type(exc).__name__}") from None
        hello: list[tuple[Any, ...]] = []
        if self._password:
            hello.append(("AUTH", self._username, self._password) if self._username else ("AUTH", self._password))
        if self._db:
            hello.append(("SELECT", self._db))
        if hello:
            try:
                for fut in self._send(proto, hello):
                    await fut
            except BaseException:
                proto.fail(RedisConnectionError("Redis refused the connection's AUTH or SELECT"))
                raise
        if proto.lost is not None:  # closed while it was being set up
            raise proto.lost
        self._proto = proto
        return proto
