"""OpenAI's images and audio endpoints on the fake OpenAI: POST /v1/images/generations (gpt-image-1's
shape: data[].b64_json and token usage), /v1/audio/speech (audio bytes, audio/mpeg) and
/v1/audio/transcriptions (multipart upload; {"text", "usage": {"type": "tokens", ...}})."""

from __future__ import annotations

import base64
import math
import struct
from typing import Callable

from aiohttp import web

PNG_1PX = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


def add_routes(app: web.Application, record: Callable[[web.Request, dict], None]) -> None:
    async def images(request: web.Request) -> web.Response:
        body = await request.json()
        record(request, body)
        n = int(body.get("n") or 1)
        if str(body.get("model", "")).startswith("dall-e"):  # DALL·E answers carry no usage
            return web.json_response({"created": 1_700_000_000, "data": [
                {"url": "https://example.invalid/img.png", "revised_prompt": body.get("prompt", "")}] * n})
        return web.json_response({"created": 1_700_000_000, "data": [{"b64_json": base64.b64encode(PNG_1PX).decode()}] * n,
                                  "usage": {"input_tokens": 10, "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
                                            "output_tokens": 272 * n, "total_tokens": 10 + 272 * n}})

    async def speech(request: web.Request) -> web.Response:
        body = await request.json()
        record(request, body)
        return web.Response(body=b"ID3fake-mp3-" + str(body.get("input", "")).encode(), content_type="audio/mpeg")

    async def transcriptions(request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        audio = upload.file.read() if upload is not None else b""
        record(request, {"model": form.get("model"), "file_name": getattr(upload, "filename", None),
                         "file_size": len(audio), "response_format": form.get("response_format")})
        if form.get("model") == "whisper-1":  # billed per second of audio: usage says how many
            seconds = wav_seconds(audio)
            if form.get("response_format") == "text":
                return web.Response(text="hello from the audio\n", content_type="text/plain")
            if form.get("response_format") == "verbose_json":
                return web.json_response({"task": "transcribe", "language": "english", "duration": seconds,
                                          "text": "hello from the audio", "segments": []})
            return web.json_response({"text": "hello from the audio",
                                      "usage": {"type": "duration", "seconds": math.ceil(seconds)}})
        return web.json_response({"text": "hello from the audio", "usage": {
            "type": "tokens", "input_tokens": 14, "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
            "output_tokens": 5, "total_tokens": 19}})

    app.router.add_post("/v1/images/generations", images)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)


def wav(seconds: float, rate: int = 8000) -> bytes:
    """A silent 8-bit mono PCM WAV of this length."""
    n = int(seconds * rate)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    return (b"RIFF" + struct.pack("<I", 36 + n) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", n) + b"\x80" * n)


def wav_seconds(audio: bytes) -> float:
    if audio[:4] != b"RIFF" or len(audio) < 44:
        return 0.0
    byte_rate = struct.unpack_from("<I", audio, 28)[0]
    return struct.unpack_from("<I", audio, 40)[0] / byte_rate if byte_rate else 0.0
