"""What the soak reads from outside a gateway process: RSS, open fds, TCP connections by remote port, tasks.

Everything comes from /proc of the gateway's PID, so nothing inside the gateway is asked to
report on itself except its asyncio task count, which only the process can see: the soak starts
the gateway through tests/soak/probe.py, which writes that count to a file twice a second.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for n in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{n}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def tcp_connections(pid: int, remote_ports: tuple[int, ...]) -> dict[int, int]:
    """Established TCP connections the process holds, counted by remote port (e.g. 5432, 6379)."""
    inodes = _socket_inodes(pid)
    counts = {p: 0 for p in remote_ports}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != "01":  # 01 = ESTABLISHED
                continue
            port = int(parts[2].rsplit(":", 1)[1], 16)
            if port in counts and parts[9] in inodes:
                counts[port] += 1
    return counts


def probe_tasks(path: Path) -> int:
    """The gateway's asyncio task count as its probe last wrote it (-1 when unknown)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1


@dataclass
class Sample:
    t: float  # seconds since the soak started
    rss: int
    fds: int
    tasks: int
    redis: int
    postgres: int
    upstream: int = 0  # kept-alive connections to the fake upstream (the pool's; they expire after 30 s idle)

    @property
    def own_fds(self) -> int:
        return self.fds - self.upstream


@dataclass
class Series:
    """Samples of one gateway process, plus what a phase wants to compare."""

    pid: int
    probe: Path
    ports: tuple[int, int]  # (redis, postgres)
    upstream_port: int = 0
    t0: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)

    def take(self) -> Sample:
        conns = tcp_connections(self.pid, (*self.ports, self.upstream_port))
        s = Sample(time.monotonic() - self.t0, rss_bytes(self.pid), open_fds(self.pid), probe_tasks(self.probe),
                   conns[self.ports[0]], conns[self.ports[1]], conns[self.upstream_port])
        self.samples.append(s)
        return s


def slope_mb_per_10min(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time, in MiB per 10 minutes (0.0 with fewer than 3 samples)."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mt = sum(s.t for s in samples) / n
    mr = sum(s.rss for s in samples) / n
    var = sum((s.t - mt) ** 2 for s in samples)
    if var == 0:
        return 0.0
    cov = sum((s.t - mt) * (s.rss - mr) for s in samples)
    return cov / var * 600 / MB


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]
