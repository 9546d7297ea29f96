"""Running a seed's examples as written: its curl lines through bash and curl, its Python
through the interpreter, with only the seed's host and port replaced by the test gateway's."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any


async def sh(script: str, base_from: str, base_to: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Runs a seed's shell example with bash (curl -s is NOT added: the seed's flags, as written)."""
    text = script.replace(base_from, base_to)
    proc = await asyncio.create_subprocess_exec("bash", "-c", text, env={**os.environ, **(env or {})},
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def json_docs(out: str) -> list[Any]:
    """The JSON answers printed one after another by several curl calls in one script."""
    dec, docs, i = json.JSONDecoder(), [], 0
    while i < len(out):
        if out[i].isspace():
            i += 1
            continue
        doc, i = dec.raw_decode(out, i)
        docs.append(doc)
    return docs


async def run_python(code: str, base_from: str, base_to: str) -> str:
    """Runs a seed's Python example (it blocks: requests) in a thread; returns what it printed."""
    import contextlib
    import io

    text = code.replace(base_from, base_to)

    def run() -> str:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(text, "<seed example>", "exec"), {"__name__": "__seed__"})  # noqa: S102 - the seed's own example
        return buf.getvalue()

    return await asyncio.to_thread(run)
