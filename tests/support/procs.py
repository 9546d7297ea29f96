"""Launching `python -m services` (or any module) as a real subprocess for tests.

Output goes to files (a full pipe would stall the child); the process is stopped by its own
PID when the context ends, whatever happened, so no test leaves a server behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Mapping

import httpx

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: none of the developer's provider keys or TOLLGATE_* leak in."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(extra)
    return env


@dataclass
class Proc:
    proc: asyncio.subprocess.Process
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, sig)

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)


@asynccontextmanager
async def run_module(module: str, *args: str, env: Mapping[str, str], cwd: Path, name: str = "proc") -> AsyncIterator[Proc]:
    out, err = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = await asyncio.create_subprocess_exec(PYTHON, "-m", module, *args, env=dict(env), cwd=str(cwd),
                                                    stdout=fo, stderr=fe, stdin=asyncio.subprocess.DEVNULL)
    p = Proc(proc, out, err)
    try:
        yield p
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def wait_http_ok(url: str, proc: Proc, timeout: float = 20.0) -> None:
    """Polls `url` until it answers 200; fails early (with the child's stderr) if it exits."""
    end = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as http:
        while time.monotonic() < end:
            if proc.proc.returncode is not None:
                raise AssertionError(f"process exited {proc.proc.returncode}: {proc.stderr()[-2000:]}")
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout} s: {proc.stderr()[-2000:]}")
