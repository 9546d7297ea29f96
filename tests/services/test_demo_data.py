"""Issue 16 point 8: `make run` starts empty; `make demo` (TOLLGATE_DEMO_DATA=1) prints seed 003's users."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import httpx

from tests.support.procs import free_port

USERS = {"admin@llm-gateway.io": ("admin", "enterprise"), "demo@startup.ai": ("user", "startup"),
         "dev@enterprise.com": ("user", "growth"), "test@free.com": ("user", "explorer")}


async def start(tmp_path, demo: bool) -> tuple[asyncio.subprocess.Process, str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "TOLLGATE_HTTP_ADDR": f"127.0.0.1:{port}", "TOLLGATE_GRPC_ADDR": f"127.0.0.1:{free_port()}",
           "TOLLGATE_DATA_DIR": str(tmp_path / "data"), "TOLLGATE_ADMIN_KEY": "adm-demo-test-0123456789",
           "TOLLGATE_LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None), env.pop("REDIS_URL", None)
    if demo:
        env["TOLLGATE_DEMO_DATA"] = "1"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services", env=env, cwd=os.getcwd(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = b""
    while b"Tollgate is up" not in out or not out.endswith(b"\n\n"):
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, out.decode()
        out += line
    return proc, f"http://127.0.0.1:{port}", out.decode()


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await asyncio.wait_for(proc.wait(), 30)


async def test_run_is_empty_and_demo_prints_seed_003s_users(tmp_path) -> None:
    proc, url, banner = await start(tmp_path / "run", demo=False)
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            r = await http.get("/api/admin/users", headers={"X-Admin-Key": "adm-demo-test-0123456789"})
            assert r.json()["total"] == 0 and "demo data" not in banner
    finally:
        await stop(proc)

    proc, url, banner = await start(tmp_path / "demo", demo=True)
    try:
        printed = dict(re.findall(r"^\s+(\S+@\S+)\s+(\S+)\s+(?:admin|user)\s+plan \S+$", banner, re.M))
        assert set(printed) == set(USERS), banner
        async with httpx.AsyncClient(base_url=url) as http:
            for email, password in printed.items():
                r = await http.post("/api/auth/login", json={"email": email, "password": password})
                assert r.status_code == 200, r.text
                user = r.json()["user"]
                assert (user["role"], user["plan"]) == USERS[email]
    finally:
        await stop(proc)
