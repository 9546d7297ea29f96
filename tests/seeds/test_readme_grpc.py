"""Issue 19 point 6: the README's gRPC lines, run as written against a real gateway.

The README's shell block is read from README.md itself, so the test runs what a user copies:
`127.0.0.1:50051` becomes the test gateway's gRPC port and `$KEY` a real key, nothing else.
buf comes from `make run` (or `make test`); grpcurl is marked optional and runs only where installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.gateway import config, run_gateway

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"


def readme_grpc_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "buf curl" in b)
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


async def run(cmd: str, key: str, grpc_port: int) -> tuple[int, str, str]:
    cmd = cmd.replace("127.0.0.1:50051", f"127.0.0.1:{grpc_port}")
    proc = await asyncio.create_subprocess_exec("bash", "-c", cmd, cwd=ROOT, env={**os.environ, "KEY": key},
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def test_make_run_installs_buf_or_says_how():
    # Run as a user would: not as a sub-make of `make test`, whose MAKEFLAGS/MAKELEVEL add
    # "Entering/Leaving directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", "run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "node_modules/.bin/buf" in out and "make buf-lint" in out
    assert out.strip().splitlines()[-1].endswith("-m services")


def test_the_readme_marks_grpcurl_optional():
    text = (ROOT / "README.md").read_text()
    assert "# optional, where grpcurl is installed:\ngrpcurl" in text


async def test_the_readme_grpc_lines_answer(tmp_path):
    if not BUF.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("buf is not installed: `make test` and `make run` install it (npm)")
        pytest.skip("buf not installed (make buf-lint)")
    commands = readme_grpc_commands()
    assert [c.split()[0] for c in commands] == ["node_modules/.bin/buf", "node_modules/.bin/buf", "grpcurl"]
    async with run_gateway(config(tmp_path, demo="on")) as gw:
        key = await gw.new_key()
        port = gw.rt.grpc_port
        code, out, err = await run(commands[0], key, port)
        assert code == 0, err
        assert "tollgate.v1.InferenceService" in out and "grpc.health.v1.Health" in out
        code, out, err = await run(commands[1], key, port)
        assert code == 0, err
        answer = json.loads(out)
        assert "Hello" in answer["text"] and answer["finishReason"] == "FINISH_REASON_STOP"
        assert answer["route"]["provider"] == "demo"
        if shutil.which("grpcurl"):
            code, out, err = await run(commands[2], key, port)
            assert code == 0 and "Hello" in out, err
