"""OpenAI's images and audio operations: POST /v1/images/generations, /v1/audio/speech,
/v1/audio/transcriptions (multipart). The body goes to InferenceService.Media as sent, with the
model read from it; the core picks the route (or refuses a route without the operation) and the
provider's answer comes back as it is, image JSON, audio bytes or transcript alike."""

from __future__ import annotations

import re
import time

from aiohttp import web

from gateway_http import calls
from gateway_http.body import read_body
from gateway_http.errors import BridgeError, openai_bridge_error
from gateway_http.native.routes import relay
from gateway_http.openai import codec
from tollgate.v1 import inference_service_pb2 as ipb

_FORM_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,256})\r\n')


_BOUNDARY = re.compile(r'boundary="?([^";]{1,70})"?', re.I)
_FORM_FILE = re.compile(rb'Content-Disposition:[^\r\n]*\bname="file"[^\r\n]*\r\n', re.I)


def _check_upload(raw: bytes, content_type: str) -> None:
    """/v1/audio/transcriptions takes an upload: multipart/form-data with a boundary the body uses
    and a `file` part, else a 400 in OpenAI's error format saying which."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise codec.invalid("Content-Type must be multipart/form-data for /v1/audio/transcriptions "
                            f"(got {content_type.split(';')[0][:64]!r}).", "file")
    m = _BOUNDARY.search(content_type)
    if m is None:
        raise codec.invalid("The multipart/form-data Content-Type has no boundary.", "file")
    if b"--" + m.group(1).encode("latin-1", errors="replace") not in raw:
        raise codec.invalid("Could not parse the multipart form: the body does not use the Content-Type's "
                            "boundary.", "file")
    if _FORM_FILE.search(raw) is None:
        raise codec.invalid("Missing required parameter: 'file'.", "file")


def _model(raw: bytes, content_type: str) -> str:
    if content_type.startswith("multipart/form-data"):
        m = _FORM_MODEL.search(raw)
        if m is None:
            raise codec.invalid("Missing required parameter: 'model'.", "model")
        return m.group(1).decode(errors="replace")
    model = codec.load_json(raw).get("model")
    if not isinstance(model, str) or not model:
        raise codec.invalid("Missing required parameter: 'model'.", "model")
    return model


def handler(operation: str):
    async def media(request: web.Request) -> web.StreamResponse:
        t0 = time.monotonic()
        content_type = request.headers.get("Content-Type", "application/json")
        try:
            raw = await read_body(request, json=not content_type.startswith("multipart/"))
            if operation == "audio/transcriptions":
                _check_upload(raw, content_type)
            model = _model(raw, content_type)
        except BridgeError as e:
            return openai_bridge_error(e)
        req = ipb.MediaRequest(operation=operation, model=model, body=raw, content_type=content_type)
        call = calls.client(request).inference.Media(req, metadata=calls.metadata(request), timeout=calls.timeout(request))
        return await relay(request, call, t0)
    return media


def add_routes(app: web.Application) -> None:
    for op in ("images/generations", "audio/speech", "audio/transcriptions"):
        app.router.add_post("/v1/" + op, handler(op))



