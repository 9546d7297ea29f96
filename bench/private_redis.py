"""A private redis-server for the bench (its own port, no persistence), so that no other client's
commands count; with `count()`/`commands()` it reads the commands and round trips a gateway sends
(MONITOR and `INFO total_reads_processed`). Used by round_trips.py, cpu_per_request.py and
limiter_cost.py."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time

from run import Child


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, tmp: str) -> None:
        if not shutil.which("redis-server"):
            sys.exit("redis-server is not installed (bash scripts/services-up installs it)")
        self.port = free_port()
        self.child = Child("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                     "--appendonly", "no"], dict(os.environ), tmp)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        self.client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)

    def count(self) -> None:
        """From now on count the commands clients send (MONITOR; a script's own calls, shown as
        `[0 lua]`, are not round trips)."""
        self.counts: dict[str, int] = {}
        self.mon = socket.create_connection(("127.0.0.1", self.port))
        self.mon.sendall(b"MONITOR\r\n")
        self.buf = b""
        while not self.buf.startswith(b"+OK\r\n"):
            self.buf += self.mon.recv(65536)
        self.buf = self.buf[5:]
        self.mon.setblocking(False)
        self.reads0 = int(self.client.info("stats")["total_reads_processed"])

    def _drain(self) -> None:
        while True:
            try:
                data = self.mon.recv(1 << 20)
            except BlockingIOError:
                return
            if not data:
                return
            self.buf += data
            *lines, self.buf = self.buf.split(b"\r\n")
            for line in lines:
                if b" lua] " in line or b"] " not in line:
                    continue
                cmd = line.split(b"] ", 1)[1].split(b" ", 1)[0].strip(b'"').decode().lower()
                self.counts[cmd] = self.counts.get(cmd, 0) + 1

    def commands(self) -> dict[str, int]:
        """The counts since count(), and under "(reads)" how many requests Redis read off its
        sockets (a pipeline's commands arrive in one read: the round trips); stops counting."""
        self.counts["(reads)"] = int(self.client.info("stats")["total_reads_processed"]) - self.reads0 - 1
        time.sleep(0.5)
        for _ in range(50):
            self._drain()
            time.sleep(0.02)
        self.mon.close()
        return self.counts
