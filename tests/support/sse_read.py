"""Reading the bridge's SSE answers the way a plain HTTP client sees them (httpx streams)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

CHAT = "/v1/chat/completions"


def chat_body(model: str, stream: bool = False, text: str = "hi", **extra: Any) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream, **extra}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


async def read_events(resp: httpx.Response) -> list[str]:
    """Every `data:` payload of an SSE response, in order, as text ([DONE] included)."""
    events, buf = [], ""
    async for piece in resp.aiter_text():
        buf += piece
        while "\n\n" in buf:
            block, buf = buf.split("\n\n", 1)
            data = "\n".join(line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:"))
            if data:
                events.append(data)
    return events


def stream_text(events: list[str]) -> str:
    out = ""
    for e in events:
        if e == "[DONE]":
            continue
        obj = orjson.loads(e)
        for c in obj.get("choices") or ():
            out += (c.get("delta") or {}).get("content") or ""
    return out


def error_events(events: list[str]) -> list[dict]:
    return [obj["error"] for obj in (orjson.loads(e) for e in events if e != "[DONE]") if "error" in obj]
