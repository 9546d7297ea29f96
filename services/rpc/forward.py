"""InferenceService.Forward: provider-native pass-through (seed 003), until its issue lands.

The RPC is designed in the protos; services/providers/passthrough.py will implement relaying.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from services.core.errors import Unimplemented
from services.rpc.interceptors import Ctx, Guard


def make_forward(app: Any, guard: Guard):
    @guard.stream()
    async def Forward(self, request: Any, ctx: Ctx) -> AsyncIterator[Any]:
        raise Unimplemented("native pass-through (/v1/openai, /v1/anthropic, /v1/gemini) is not built yet")
        yield  # pragma: no cover - makes this an async generator

    return Forward
