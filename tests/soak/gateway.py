"""The soak's gateway processes: `python -m tests.soak.probe` (= `python -m services` + a task counter)
on fixed ports, restartable in place (D4's restarts), configured by a tollgate.toml written here."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability.replicas import replica_env
from tests.support.procs import REPO, Proc, free_port, run_module, wait_http_ok


@dataclass
class SoakGateway:
    workdir: Path
    config: Path
    name: str
    env_extra: dict[str, str]
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    proc: Proc | None = None
    restarts: int = 0
    _stack: AsyncExitStack | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def probe(self) -> Path:
        return self.workdir / f"{self.name}.tasks"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = replica_env(self.workdir, self.config, self.workdir / "data", self.http_port, self.grpc_port,
                          PYTHONPATH=str(REPO), SOAK_PROBE=str(self.probe), **self.env_extra)
        self._stack = AsyncExitStack()
        self.proc = await self._stack.enter_async_context(
            run_module("tests.soak.probe", env=env, cwd=self.workdir, name=f"{self.name}-{self.restarts}"))
        await wait_http_ok(self.url + "/health/ready", self.proc, timeout=60.0)

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int | None:
        """Signals the process and waits for it; its exit code (the context kills it if it hangs)."""
        code = None
        if self.proc is not None:
            self.proc.signal(sig)
            try:
                code = await self.proc.wait(timeout_s)
            except asyncio.TimeoutError:
                pass
        if self._stack is not None:
            await self._stack.aclose()
        self.proc, self._stack = None, None
        return code

    async def restart(self) -> int | None:
        code = await self.stop()
        self.restarts += 1
        await self.start()
        return code
