"""The supervisor behind `workers = N`: N gateway processes sharing one HTTP and one gRPC port.

One gateway process runs one event loop on one core. With `workers = N` (or `--workers N`)
`python -m services` becomes this supervisor: it binds the two addresses itself (port 0 becomes
a real port here, once, for all), then starts N workers (`python -m services --worker-of PID`),
each listening on the same ports with SO_REUSEPORT, so the kernel spreads new connections over
them. A bound socket that never listens receives nothing: the supervisor only holds the ports.

- Worker 1 starts alone first (migrations, the secret file and a generated admin key are made
  once), then the others together; the banner is printed when all are up.
- A worker that dies is started again (after 0.5 s, doubling while it keeps dying young, up to
  10 s); a worker's ledger placeholders carry its own owner tag (`#workerN`), so its next life
  marks only its own cut requests `interrupted` (RELIABILITY B7).
- SIGTERM / SIGINT go on to every worker, which drains as a lone gateway does (in-flight
  requests get `shutdown_grace_s`); a worker still alive 15 s after that is killed. Exit 0.
- A worker whose supervisor dies gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and drains.

Limits stay exact across workers because they live in Redis: config/load.py refuses
`workers > 1` without `redis_url`. Each worker serves its own /metrics (as replicas do).
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.config.schema import Config

log = logging.getLogger("tollgate.supervisor")

READY_TIMEOUT_S = 120.0
KILL_AFTER_S = 15.0  # past shutdown_grace_s: a worker that has not exited by then is killed
RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0
YOUNG_S = 5.0  # a worker that dies younger than this doubles the next restart's delay


@dataclass
class Worker:
    n: int
    proc: subprocess.Popen | None = None
    ready_fd: int = -1
    started: float = 0.0
    ready: dict = field(default_factory=dict)
    delay: float = RESTART_MIN_S
    restart_at: float = 0.0
    restarts: int = 0


def reserve(addr: str) -> tuple[socket.socket, str]:
    """Binds `addr` (host:port, port 0 = any) with SO_REUSEPORT without listening; returns the
    socket (held for the supervisor's life) and the concrete host:port every worker binds."""
    host, _, port = addr.rpartition(":")
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind((bare, int(port)))
    except OSError:
        s.close()
        raise
    real = s.getsockname()[1]
    return s, f"{host}:{real}"


class Supervisor:
    def __init__(self, cfg: Config, config_path: str | None, banner: Callable[[str, str, dict, str], str]) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.banner = banner
        self.workers = [Worker(n + 1) for n in range(cfg.workers)]
        self.stopping = False
        self.http_addr = self.grpc_addr = ""
        self._held: list[socket.socket] = []

    # -- life -----------------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        try:
            reserved = [reserve(addr) for addr in (self.cfg.http_addr, self.cfg.grpc_addr)]
            self._held = [s for s, _ in reserved]
            self.http_addr, self.grpc_addr = reserved[0][1], reserved[1][1]
            first, rest = self.workers[0], self.workers[1:]
            self._start(first)
            if not self._await_ready([first]):
                return self._stop(1)
            for w in rest:
                self._start(w)
            if not self._await_ready(rest):
                return self._stop(1)
            pids = ", ".join(str(w.proc.pid) for w in self.workers if w.proc)
            print(self.banner(self.http_addr, self.grpc_addr, first.ready, f"  workers: {len(self.workers)} "
                              f"(supervisor {os.getpid()}; worker pids {pids})"), flush=True)
            while not self.stopping:
                self._watch()
                time.sleep(0.1)
            return self._stop(0)
        finally:
            for s in self._held:
                s.close()

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _start(self, w: Worker) -> None:
        r, wfd = os.pipe()
        argv = [sys.executable, "-m", "services", "--worker-of", str(os.getpid()), "--ready-fd", str(wfd)]
        if self.config_path:
            argv += ["--config", self.config_path]
        env = dict(os.environ, TOLLGATE_HTTP_ADDR=self.http_addr, TOLLGATE_GRPC_ADDR=self.grpc_addr,
                   TOLLGATE_WORKER_ID=str(w.n), TOLLGATE_WORKERS=str(len(self.workers)))
        try:
            w.proc = subprocess.Popen(argv, env=env, pass_fds=(wfd,), stdin=subprocess.DEVNULL)
        finally:
            os.close(wfd)
        if w.ready_fd >= 0:
            os.close(w.ready_fd)
        w.ready_fd, w.started, w.ready = r, time.monotonic(), {}

    def _read_ready(self, w: Worker) -> None:
        """The worker's one line on its ready pipe (JSON: pid, admin key source, a generated key)."""
        data = b""
        while True:
            chunk = os.read(w.ready_fd, 4096)
            if not chunk:
                break
            data += chunk
        os.close(w.ready_fd)
        w.ready_fd = -1
        try:
            w.ready = json.loads(data.decode() or "{}")
        except ValueError:
            w.ready = {}

    def _await_ready(self, workers: list[Worker]) -> bool:
        """Waits until each worker said it is up; False when one exits first or a stop came."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = [w for w in workers]
        while waiting and not self.stopping and time.monotonic() < deadline:
            ready, _, _ = select.select([w.ready_fd for w in waiting], [], [], 0.2)
            for w in list(waiting):
                if w.ready_fd in ready:
                    self._read_ready(w)
                    if w.ready.get("pid"):
                        waiting.remove(w)
                        continue
                if w.proc is not None and w.proc.poll() is not None:
                    print(f"tollgate: worker {w.n} exited during start-up with code {w.proc.returncode}",
                          file=sys.stderr, flush=True)
                    return False
        return not waiting

    def _watch(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.ready_fd >= 0:  # a restarted worker's ready line
                ready, _, _ = select.select([w.ready_fd], [], [], 0)
                if ready:
                    self._read_ready(w)
            if w.proc is None:
                if now >= w.restart_at and not self.stopping:
                    w.restarts += 1
                    self._start(w)
                    log.warning("worker %d restarted (pid %d, restart %d)", w.n, w.proc.pid, w.restarts)
                continue
            code = w.proc.poll()
            if code is None:
                if now - w.started > YOUNG_S:
                    w.delay = RESTART_MIN_S
                continue
            lived = now - w.started
            w.delay = min(RESTART_MAX_S, w.delay * 2) if lived < YOUNG_S else RESTART_MIN_S
            w.restart_at = now + w.delay
            log.warning("worker %d (pid %d) exited with code %s after %.1f s; restarting in %.1f s",
                        w.n, w.proc.pid, code, lived, w.delay)
            w.proc = None

    def _stop(self, code: int) -> int:
        """SIGTERM to every worker; each drains (shutdown_grace_s); stragglers are killed."""
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for p in live:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.cfg.shutdown_grace_s + KILL_AFTER_S
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time: killed", p.pid)
                p.kill()
                p.wait()
        for w in self.workers:
            if w.ready_fd >= 0:
                os.close(w.ready_fd)
                w.ready_fd = -1
        return code


def die_with_parent(parent: int) -> None:
    """A worker gets SIGTERM (and drains) when its supervisor dies, however it died (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the worker outlives a killed supervisor, as any orphan would
        return
    if os.getppid() != parent:  # the supervisor died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def tell_ready(fd: int, info: dict) -> None:
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info))
