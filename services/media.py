"""OpenAI's images and audio operations, on the model's route when that route has them.

`/v1/images/generations`, `/v1/audio/speech` and `/v1/audio/transcriptions` (multipart) go to
the first candidate for the model when its wire format is OpenAI's (OpenAI and OpenAI-compatible
kinds), as sent, through the pass-through relay (the gateway's key, failover between that
provider's keys, the answer back unchanged), and are metered like any relayed request: one ledger
row per request (surfaces openai_images / openai_audio), with the provider's usage where the answer
reports it (gpt-image-1 and the gpt-4o transcribe models report tokens); an answer without usage
is recorded as estimated. Any other route is a 400 naming the operation: Anthropic has no images or
audio API, and Gemini's and Ollama's are not these.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from services.auth.principal import Principal
from services.config.kinds import resolve
from services.core import errors as E
from services.fidelity import RelayedRequest
from services.pipeline import ForwardStarted
from services.routing.passthrough import NativeRequest, native_request

OPERATIONS = {"images/generations": "openai_images", "audio/speech": "openai_audio",
              "audio/transcriptions": "openai_audio"}


class Media:
    def __init__(self, app: Any) -> None:
        self.index = app.index
        self.pipeline = app.pipeline
        self.relay = app.passthrough

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
                              through=surface)

    async def run(self, p: Principal, req: RelayedRequest, request_id: str,
                  time_remaining: float | None) -> AsyncIterator[ForwardStarted | bytes]:
        async for ev in self.pipeline.forward(p, req, self.relay, request_id, time_remaining):
            yield ev
