"""Ollama's model-management API, as a model loader uses it (ollama docs/api.md).

`pull` (POST /api/pull) and `create` (POST /api/create) stream NDJSON status lines
({"status": "pulling manifest"}, {"status": "pulling 6a0746a1ec1a", "digest", "total",
"completed"}, ..., {"status": "success"}); a failure after the 200 is an {"error": ...} line,
before it an HTTP error with {"error": ...}. A GGUF file reaches `create` as a blob:
HEAD /api/blobs/sha256:<hex> says whether Ollama has it, POST uploads it. `show` (POST
/api/show) describes a model. Each failure becomes an OllamaError with the HTTP status (0 when
the server was not reached) and Ollama's own words, never a key.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import aiohttp
import orjson

from services.core.types import Target

MAX_LINE = 64 * 1024
CHUNK = 1024 * 1024


class OllamaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # HTTP status; 0 = not reached (refused, timed out, bad answer)
        self.message = message


def native_base(base_url: str) -> str:
    """OLLAMA_BASE_URL is often the OpenAI-compatible http://host:11434/v1: the API is at the root."""
    base = base_url.rstrip("/")
    for suffix in ("/v1", "/api"):
        base = base.removesuffix(suffix)
    return base


class OllamaApi:
    """One configured Ollama, reached through the gateway's pooled session for it."""

    def __init__(self, target: Target, session: aiohttp.ClientSession, api_key: str = "", timeout_s: float = 3600.0):
        self.base = native_base(target.base_url)
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10, sock_read=300)
        self.headers = {"content-type": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    def pull(self, model: str) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/api/pull", {"model": model, "stream": True})

    def create(self, model: str, files: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/api/create", {"model": model, "files": files, "stream": True})

    async def show(self, model: str) -> dict[str, Any]:
        try:
            async with self.session.post(self.base + "/api/show", data=orjson.dumps({"model": model}),
                                         headers=self.headers, timeout=self.timeout) as resp:
                body = await resp.content.read(4 * MAX_LINE)
                if resp.status != 200:
                    raise OllamaError(resp.status, _error_text(body) or f"HTTP {resp.status}")
        except aiohttp.ClientError as e:
            raise OllamaError(0, f"Ollama is unreachable ({type(e).__name__})") from None
        obj = _json(body)
        if not isinstance(obj, dict):
            raise OllamaError(0, "Ollama's /api/show answer is not a JSON object")
        return obj

    async def has_blob(self, digest: str) -> bool:
        try:
            async with self.session.head(f"{self.base}/api/blobs/{digest}", headers=self.headers,
                                         timeout=self.timeout) as resp:
                if resp.status in (200, 404):
                    return resp.status == 200
                raise OllamaError(resp.status, f"HTTP {resp.status} checking a blob")
        except aiohttp.ClientError as e:
            raise OllamaError(0, f"Ollama is unreachable ({type(e).__name__})") from None

    async def push_blob(self, digest: str, path: str, size: int, progress: Callable[[int], None]) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            done = 0
            with open(path, "rb") as f:  # noqa: ASYNC230 - each read runs in a thread below
                while True:
                    data = await asyncio.to_thread(f.read, CHUNK)
                    if not data:
                        return
                    done += len(data)
                    progress(done)
                    yield data

        headers = {k: v for k, v in self.headers.items() if k != "content-type"}
        headers["content-length"] = str(size)
        try:
            async with self.session.post(f"{self.base}/api/blobs/{digest}", data=chunks(), headers=headers,
                                         timeout=self.timeout) as resp:
                body = await resp.content.read(MAX_LINE)
                if resp.status not in (200, 201):
                    raise OllamaError(resp.status, _error_text(body) or f"HTTP {resp.status} uploading the file")
        except aiohttp.ClientError as e:
            raise OllamaError(0, f"Ollama is unreachable ({type(e).__name__})") from None

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self.session.post(self.base + path, data=orjson.dumps(body), headers=self.headers,
                                         timeout=self.timeout) as resp:
                if resp.status != 200:
                    raise OllamaError(resp.status, _error_text(await resp.content.read(MAX_LINE)) or f"HTTP {resp.status}")
                buf = b""
                async for data in resp.content.iter_any():
                    buf += data
                    if len(buf) > MAX_LINE and b"\n" not in buf:
                        raise OllamaError(0, "Ollama sent a status line too long to be one")
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield _status(line)
                if buf.strip():
                    yield _status(buf)
        except aiohttp.ClientError as e:
            raise OllamaError(0, f"Ollama is unreachable ({type(e).__name__})") from None


def _status(line: bytes) -> dict[str, Any]:
    obj = _json(line)
    if not isinstance(obj, dict):
        raise OllamaError(0, "Ollama sent a status line that is not a JSON object")
    if obj.get("error"):
        # After the 200: Ollama's failure is an in-band line (e.g. "pull model manifest: file does not exist").
        raise OllamaError(200, str(obj["error"])[:500])
    return obj


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _error_text(body: bytes) -> str:
    obj = _json(body)
    if isinstance(obj, dict) and isinstance(obj.get("error"), str):
        return obj["error"][:500]
    return ""
