"""OpenAI's images and audio operations, on the model's route when that route has them.

`/v1/images/generations`, `/v1/audio/speech` and `/v1/audio/transcriptions` (multipart) go to
the first candidate for the model when its wire format is OpenAI's (OpenAI and OpenAI-compatible
kinds), as sent, through the pass-through relay (the gateway's key, failover between that
provider's keys, the answer back unchanged), and are metered like any relayed request: one ledger
row per request (surfaces openai_images / openai_audio), with the provider's usage where the answer
reports it (gpt-image-1 and the gpt-4o transcribe models report tokens); an answer without usage
is recorded as estimated.

Priced as the provider bills (catalog/models.json, public list prices): images per image by
size and quality where the catalogue has per-image prices and the answer reports no tokens (the
count is the answer's `data`, so not an estimate; gpt-image-1's token usage is priced by token);
speech per million characters of `input` for tts-1/tts-1-hd (the characters sent are what is
billed, so not an estimate); transcription per minute for whisper-1, from the answer's
`usage.seconds` (type "duration") or verbose_json's `duration` when it gives them, else from the
uploaded audio (a WAV header's exact length; any other format at 128 kbit/s), recorded as an
estimate. Token-billed models (gpt-4o-transcribe, gpt-4o-mini-tts) are priced by their tokens.
Any other route is a 400 naming the operation: Anthropic has no images or
audio API, and Gemini's and Ollama's are not these.
"""

from __future__ import annotations

import re
import struct
from typing import Any, AsyncIterator

import orjson

from services.core.principal import Principal
from services.catalog.pricing import Catalog
from services.config.kinds import resolve
from services.core import errors as E
from services.core.types import Usage
from services.fidelity import RelayedRequest
from services.pipeline import ForwardStarted, Pipeline
from services.routing.candidates import CandidateIndex
from services.routing.passthrough import NativeRequest, Passthrough, native_request

OPERATIONS = {"images/generations": "openai_images", "audio/speech": "openai_audio",
              "audio/transcriptions": "openai_audio"}


class Media:
    def __init__(self, index: CandidateIndex, pipeline: Pipeline, relay: Passthrough, catalog: Catalog) -> None:
        self.index = index
        self.pipeline = pipeline
        self.relay = relay
        self.catalog = catalog

    def request(self, operation: str, model: str, body: bytes, content_type: str) -> RelayedRequest:
        surface = OPERATIONS.get(operation)
        if surface is None:
            raise E.InvalidArgument(f"unknown media operation {operation[:64]!r}", reason="INVALID_ARGUMENT",
                                    field_violations=[E.FieldViolation("operation", "unknown")])
        if not model:
            raise E.InvalidArgument("Missing required parameter: 'model'.", reason="MODEL_REQUIRED",
                                    field_violations=[E.FieldViolation("model", "required")])
        views = self.index.resolve(model)  # NotFound / NO_ELIGIBLE_KEY as for chat
        target = views[0].target
        kind = resolve(target.kind)
        if kind is None or kind.wire != "openai":
            raise E.InvalidArgument(f"/v1/{operation} is not available for model {model!r}: its provider "
                                    f"({target.kind}) has no such API here", reason="UNSUPPORTED_OPERATION",
                                    field_violations=[E.FieldViolation("model", f"{target.kind} has no /{operation}")])
        headers = [("content-type", content_type or "application/json")]
        nreq = native_request(target.provider, "POST", operation, "", headers, body)
        if not nreq.model:
            nreq.model = target.model  # a multipart body is not parsed for it
        return RelayedRequest(**{f.name: getattr(nreq, f.name) for f in NativeRequest.__dataclass_fields__.values()},
                              through=surface, bill=self._bill(operation, target.model, body, content_type))

    def _bill(self, operation: str, model: str, body: bytes, content_type: str):
        """The pricing of this request's answer where the provider bills other than by token."""
        info = self.catalog.get(model)
        if info is None:
            return None
        if operation == "images/generations" and info.per_image:
            doc = _json(body)
            n = doc.get("n") if isinstance(doc.get("n"), int) and doc.get("n") > 0 else 1
            size, quality = str(doc.get("size") or ""), str(doc.get("quality") or "")
            price = self.catalog.image_price(model, size, quality)
            if price is None:
                return None

            def images(meter: Any, usage: Usage) -> tuple[Usage, float | None]:
                if not usage.estimated and (usage.prompt_tokens or usage.completion_tokens):
                    return usage, None  # the provider reported tokens: priced by token, as it bills
                answer = meter.document()
                data = answer.get("data") if answer else None
                count = len(data) if isinstance(data, list) else n
                return Usage(0, 0, estimated=not isinstance(data, list)), count * price
            return images
        if operation == "audio/speech" and info.per_mchar:
            text = _json(body).get("input")
            chars = len(text) if isinstance(text, str) else 0
            cost = chars * info.per_mchar / 1_000_000
            return lambda meter, usage: (Usage(0, 0, estimated=False), cost)
        if operation == "audio/transcriptions" and info.per_minute:
            per_minute = info.per_minute

            def minutes(meter: Any, usage: Usage) -> tuple[Usage, float | None]:
                seconds, estimated = _reported_seconds(meter.document()), False
                if seconds is None:
                    seconds, estimated = upload_seconds(body, content_type), True
                return Usage(0, 0, estimated=estimated), seconds / 60 * per_minute
            return minutes
        return None

    async def run(self, p: Principal, req: RelayedRequest, request_id: str,
                  time_remaining: float | None) -> AsyncIterator[ForwardStarted | bytes]:
        async for ev in self.pipeline.forward(p, req, self.relay, request_id, time_remaining):
            yield ev


def _json(body: bytes) -> dict:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _reported_seconds(answer: dict | None) -> float | None:
    """The audio's length as the provider reports it: usage {"type": "duration", "seconds"}, or
    verbose_json's top-level `duration`."""
    if not answer:
        return None
    u = answer.get("usage")
    if isinstance(u, dict) and u.get("type") == "duration" and isinstance(u.get("seconds"), (int, float)):
        return max(float(u["seconds"]), 0.0)
    d = answer.get("duration")
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        return max(float(d), 0.0)
    return None


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.I)
_FALLBACK_BYTES_PER_SECOND = 16_000  # 128 kbit/s, a common compressed-audio rate


def upload_file(body: bytes, content_type: str) -> bytes | None:
    """The bytes of the multipart part named "file", or None."""
    m = _BOUNDARY.search(content_type or "")
    if not m:
        return None
    delim = b"--" + m.group(1).encode("latin-1")
    for part in body.split(delim)[1:]:
        head, sep, rest = part.partition(b"\r\n\r\n")
        if not sep or b'name="file"' not in head:
            continue
        return rest[:-2] if rest.endswith(b"\r\n") else rest
    return None


def upload_seconds(body: bytes, content_type: str) -> float:
    """The uploaded audio's length: exact from a WAV (RIFF) header, else its size at 128 kbit/s."""
    data = upload_file(body, content_type)
    if not data:
        return 0.0
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        pos, byte_rate = 12, 0
        while pos + 8 <= len(data):
            cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
            if cid == b"fmt " and pos + 20 <= len(data):
                byte_rate = struct.unpack_from("<I", data, pos + 16)[0]
            elif cid == b"data" and byte_rate:
                return min(size, len(data) - pos - 8) / byte_rate
            pos += 8 + size + (size & 1)
    return len(data) / _FALLBACK_BYTES_PER_SECOND
