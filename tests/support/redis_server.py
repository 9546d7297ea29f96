"""The Redis that tests use: REDIS_URL (default redis://127.0.0.1:6379/0), or a skip or failure.

Unreachable Redis fails the test when CI=true (CI must run it) and skips it with the reason
otherwise. Only 127.0.0.1 is ever targeted. `redis_prefix` gives each test its own key prefix
and deletes those keys afterwards. `TcpProxy` stands between a client and Redis so a test can
cut it (refused, like a dead Redis) or pause it (silent, like a SIGSTOPped one) without
touching the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

DEFAULT_URL = "redis://127.0.0.1:6379/0"
LOCAL_HOSTS = ("127.0.0.1",)


def _unusable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Redis required in CI: {reason}")
    pytest.skip(f"Redis not available: {reason} (start one on 127.0.0.1 or set REDIS_URL)")


def redis_url_or_skip() -> str:
    """REDIS_URL if something answers there, else skip (or fail when CI=true)."""
    url = os.environ.get("REDIS_URL", DEFAULT_URL)
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 6379
    if parts.scheme != "redis" or host not in LOCAL_HOSTS:
        _unusable(f"REDIS_URL {parts.scheme}://{host}:{port} is not redis://127.0.0.1 (tests only touch loopback)")
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        _unusable(f"nothing answers at {host}:{port} ({exc})")
    if not answer.startswith((b"+PONG", b"-NOAUTH")):
        _unusable(f"{host}:{port} does not answer PING like Redis ({answer[:32]!r})")
    return url


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


def new_prefix() -> str:
    """A key prefix no other test uses."""
    return f"tgtest:{uuid.uuid4().hex[:12]}:"


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under `prefix`; returns how many there were."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    await delete_prefix(redis_url, prefix)


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """127.0.0.1:<port> -> target. stop() refuses and drops every connection, start() comes back
    on the same port; `paused` holds every byte (nothing answers, nothing is refused)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self.port = 0
        self.paused = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        upstream_writer = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
            self._writers.add(upstream_writer)
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        except OSError:
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            self._handlers.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                while self.paused:
                    await asyncio.sleep(0.01)
                writer.write(data)
                await writer.drain()
        writer.close()


class OwnRedis:
    """A redis-server of the test's own on a free 127.0.0.1 port (never the shared one), which the
    test may kill and start again on the same port. No persistence: a restart comes back empty,
    as a replacement Redis would. Only the process started here is ever signalled, by its PID."""

    def __init__(self) -> None:
        self.port = closed_port()
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout_s: float = 10.0) -> None:
        import shutil

        exe = shutil.which("redis-server")
        if exe is None:
            _unusable("no redis-server binary to start a test's own Redis")
        self._proc = await asyncio.create_subprocess_exec(
            exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "yes", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while loop.time() < end:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                answer = await reader.read(64)
                writer.close()
                if answer.startswith(b"+PONG"):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.02)
        raise AssertionError(f"own redis-server on port {self.port} did not answer within {timeout_s} s")

    async def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        self._proc = None


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    server = OwnRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
