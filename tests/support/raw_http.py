"""Raw HTTP/1.1 over a socket, for what httpx will not send: lying Content-Lengths, bytes that are
not valid header values, a body trickled while the answer is watched for."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class RawAnswer:
    status: int
    head: bytes
    body: bytes


def host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


def request_head(method: str, path: str, headers: list[tuple[str, str]] | list[tuple[bytes, bytes]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for k, v in headers:
        lines.append((k.encode() if isinstance(k, str) else k) + b": " + (v.encode() if isinstance(v, str) else v))
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def read_answer(reader: asyncio.StreamReader, timeout_s: float = 2.0) -> RawAnswer:
    """One answer's status line, head and (Content-Length) body; `status` 0 when the socket just closed."""
    head = b""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    except asyncio.IncompleteReadError as e:
        head = e.partial
    if not head.startswith(b"HTTP/"):
        return RawAnswer(0, head, b"")
    status = int(head.split(b" ", 2)[1])
    body = b""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                body = await asyncio.wait_for(reader.readexactly(int(value.strip())), timeout_s)
            except asyncio.IncompleteReadError as e:
                body = e.partial
    return RawAnswer(status, head, body)


async def exchange(url: str, data: bytes, timeout_s: float = 2.0) -> RawAnswer:
    """Sends `data` on a fresh connection and reads one answer."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    try:
        writer.write(data)
        await writer.drain()
        return await read_answer(reader, timeout_s)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
