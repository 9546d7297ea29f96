"""The `tollgate` command line against a real gateway's gRPC port (in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.support.gateway import ADMIN_KEY, config, run_gateway


async def cli(target: str, *args: str, api_key: str = "") -> tuple[int, str, str]:
    argv = [sys.executable, "-m", "services.cli", "--addr", target, "--admin-key", ADMIN_KEY]
    if api_key:
        argv += ["--api-key", api_key]
    proc = await asyncio.create_subprocess_exec(*argv, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_keys_create_list_revoke_usage_and_chat(tmp_path):
    async with run_gateway(config(tmp_path, demo="on")) as gw:
        target = gw.rt.grpc_target
        code, out, err = await cli(target, "keys", "create", "--name", "acme", "--email", "ops@acme.io", "--tier", "pro")
        assert code == 0, err
        created = json.loads(out)
        assert created["key"].startswith("tg_") and created["tier"] == "pro"

        code, out, _ = await cli(target, "chat", "hello cli", "--model", "demo", api_key=created["key"])
        assert code == 0 and "You said: hello cli" in out
        code, out, _ = await cli(target, "chat", "streamed", "--stream", api_key=created["key"])
        assert code == 0 and "You said: streamed" in out

        code, out, _ = await cli(target, "keys", "list")
        assert code == 0 and created["id"] in out and "active" in out
        code, out, _ = await cli(target, "usage", "--key-id", created["id"])
        assert code == 0 and out.count("demo") >= 2 and "ok" in out

        code, out, _ = await cli(target, "keys", "revoke", created["id"])
        assert code == 0
        await asyncio.sleep(1.1)  # revocations reach every cache within a second
        code, _, err = await cli(target, "chat", "again", api_key=created["key"])
        assert code == 1 and "UNAUTHENTICATED" in err
        assert created["key"] not in err


async def test_wrong_admin_key_is_refused(tmp_path):
    async with run_gateway(config(tmp_path, demo="on")) as gw:
        argv = [sys.executable, "-m", "services.cli", "--addr", gw.rt.grpc_target, "--admin-key", "nope", "keys", "list"]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 1 and b"UNAUTHENTICATED" in err
