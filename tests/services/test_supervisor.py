"""`workers = N`: a supervisor and N real gateway processes on one HTTP and one gRPC port.

Real processes, real Redis, the fake OpenAI upstream: requests spread over the workers (the
kernel's SO_REUSEPORT choice, seen by which worker owns each accepted socket), a worker killed
with SIGKILL is started again while the others keep serving, SIGTERM lets an in-flight stream
finish, one rpm limit holds exactly across two workers, and without Redis start-up refuses in
one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp

from tests.reliability.replicas import SECRET, write_config
from tests.support.gateway import ADMIN_KEY
from tests.support.procs import base_env, run_module
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)
from tests.support.sse_read import CHAT, bearer, chat_body

BANNER = re.compile(r"HTTP bridge http://127\.0\.0\.1:(\d+)\s+gRPC 127\.0\.0\.1:(\d+)")
PIDS = re.compile(r"worker pids ([\d, ]+)\)")


def env_for(tmp: Path, config: Path, **extra: str) -> dict[str, str]:
    return base_env(tmp, TOLLGATE_CONFIG=str(config), TOLLGATE_SECRET_KEY=SECRET, TOLLGATE_ADMIN_KEY=ADMIN_KEY,
                    TOLLGATE_DATA_DIR=str(tmp / "data"), TOLLGATE_HTTP_ADDR="127.0.0.1:0",
                    TOLLGATE_GRPC_ADDR="127.0.0.1:0", TOLLGATE_LEDGER_FLUSH_S="0.1", TOLLGATE_LOG_LEVEL="WARNING",
                    **extra)


@contextlib.asynccontextmanager
async def supervised(tmp: Path, config: Path, redis: str, workers: int = 2, **extra: str):
    """`python -m services --workers N`; yields (proc, base URL, worker pids) once the banner is out."""
    async with run_module("services", "--workers", str(workers), env=env_for(tmp, config, REDIS_URL=redis, **extra),
                          cwd=tmp, name="supervisor") as proc:
        end = time.monotonic() + 90
        while time.monotonic() < end:
            m, pids = BANNER.search(proc.stdout()), PIDS.search(proc.stdout())
            if m and pids:
                break
            assert proc.proc.returncode is None, proc.stderr()[-3000:]
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("supervisor not up: " + proc.stderr()[-3000:])
        try:
            yield proc, f"http://127.0.0.1:{m.group(1)}", [int(p) for p in pids.group(1).split(",")]
        finally:
            children = children_of(proc.pid)
            proc.signal(signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await proc.wait(30)
            for pid in children:  # only if the supervisor failed to stop them
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def gone(pid: int) -> bool:
    """Reaped (by its supervisor). A zombie leader may still have threads holding its sockets."""
    return not Path(f"/proc/{pid}").exists()


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def accepted_by(pids: list[int], port: int) -> Counter[int]:
    """How many established connections to `port` each process holds (from /proc: socket inodes)."""
    inodes: dict[str, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == "01":
            inodes[f[9]] = 0
    held: Counter[int] = Counter()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held[pid] += 1
    return held


async def new_key(base: str, tier: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY},
                          json={"name": tier, "email": f"{tier}@example.com", "tier": tier}) as r:
            assert r.status == 201, await r.text()
            return (await r.json())["key"]


async def test_requests_spread_and_a_killed_worker_comes_back(tmp_path, fake_openai, redis_url):
    cfg = write_config(tmp_path / "tollgate.toml", fake_openai.base_url, {"w": {"rpm": 100000}})
    async with supervised(tmp_path, cfg, redis_url) as (proc, base, pids):
        assert len(pids) == 2 and sorted(children_of(proc.pid)) == sorted(pids)
        key = await new_key(base, "w")
        port = int(base.rsplit(":", 1)[1])
        # 16 keep-alive connections, each used once and held open: the kernel spreads them.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            async def one() -> int:
                async with s.post(base + CHAT, json=chat_body("tokens-2"), headers=bearer(key)) as r:
                    await r.read()
                    await asyncio.sleep(0.3)  # hold the connection busy so each call opens its own
                    return r.status

            assert await asyncio.gather(*(one() for _ in range(16))) == [200] * 16
            held = accepted_by(pids, port)
        print("connections per worker:", dict(held))
        assert sum(held.values()) == 16 and all(held[p] >= 1 for p in pids), dict(held)

        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        # Once the dead worker is gone (its sockets closed; a connection still in its accept queue at
        # that instant is reset, as with any killed server), the survivor serves everything.
        end = time.monotonic() + 10
        while time.monotonic() < end and not gone(victim):
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as s:
            for _ in range(10):
                async with s.post(base + CHAT, json=chat_body("tokens-2"), headers=bearer(key)) as r:
                    assert r.status == 200, await r.text()
        end = time.monotonic() + 60
        while time.monotonic() < end:
            now = children_of(proc.pid)
            if len(now) == 2 and victim not in now:
                break
            await asyncio.sleep(0.1)
        reborn = [p for p in children_of(proc.pid) if p not in pids]
        assert len(reborn) == 1, (children_of(proc.pid), proc.stderr()[-2000:])
        assert f"worker 1 (pid {victim}) exited with code -9" in proc.stderr()
        # The new worker takes connections again.
        end = time.monotonic() + 60
        served: Counter[int] = Counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as s:
            async def one() -> None:
                async with s.post(base + CHAT, json=chat_body("tokens-2"), headers=bearer(key)) as r:
                    served.update(accepted_by(reborn, port))
                    await r.read()
                    assert r.status == 200, await r.text()

            while time.monotonic() < end and not served[reborn[0]]:
                await asyncio.gather(*(one() for _ in range(8)))
        assert served[reborn[0]] >= 1, dict(served)


async def test_sigterm_drains_an_in_flight_stream(tmp_path, fake_openai, redis_url):
    cfg = write_config(tmp_path / "tollgate.toml", fake_openai.base_url, {"w": {"rpm": 1000}})
    async with supervised(tmp_path, cfg, redis_url) as (proc, base, pids):
        key = await new_key(base, "w")
        async with aiohttp.ClientSession() as s:
            async with s.post(base + CHAT, json=chat_body("fault-slow-first-2", stream=True), headers=bearer(key)) as r:
                assert r.status == 200
                await asyncio.sleep(0.5)  # the request is upstream, waiting for its first token
                proc.signal(signal.SIGTERM)
                body = (await r.read()).decode()
        assert "data: [DONE]" in body and "tok0" in body, body[-500:]
        assert await proc.wait(60) == 0, proc.stderr()[-2000:]
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


async def test_one_limit_across_two_workers(tmp_path, fake_openai, redis_url):
    rpm = 40
    cfg = write_config(tmp_path / "tollgate.toml", fake_openai.base_url, {"w": {"rpm": rpm}})
    async with supervised(tmp_path, cfg, redis_url) as (proc, base, pids):
        key = await new_key(base, "w")
        port = int(base.rsplit(":", 1)[1])
        statuses: Counter[int] = Counter()
        seen: Counter[int] = Counter()
        # New connections each time (force_close), so the calls land on both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as s:
            async def client() -> None:
                for _ in range(20):
                    async with s.post(base + CHAT, json=chat_body("tokens-1"), headers=bearer(key)) as r:
                        seen.update(accepted_by(pids, port))
                        await r.read()
                        statuses[r.status] += 1

            await asyncio.gather(*(client() for _ in range(4)))
        print("statuses:", dict(statuses), "connections seen per worker:", dict(seen))
        assert statuses[200] == rpm and statuses[429] == 80 - rpm, dict(statuses)
        assert all(seen[p] >= 1 for p in pids), dict(seen)  # both workers answered some


async def test_workers_without_redis_refuse_in_one_line(tmp_path, fake_openai):
    cfg = write_config(tmp_path / "tollgate.toml", fake_openai.base_url, {"w": {"rpm": 10}})
    async with run_module("services", "--workers", "2", env=env_for(tmp_path, cfg), cwd=tmp_path, name="refuse") as proc:
        assert await proc.wait(30) == 2
    lines = proc.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert "workers" in lines[0] and "redis_url" in lines[0] and "--workers" in lines[0], lines[0]
    assert proc.stdout().strip() == ""
