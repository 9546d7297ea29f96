"""The client matrix under second SDK versions (docs/clients.md): `make test` installs openai and
anthropic at a second pinned version into their own --target folders (.sdk/, the Makefile's
SDK_VERSIONS), and this runs a subset of the SDK tests again in a subprocess that imports them
first. Each row lands in build/client-matrix/ with the version actually imported."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from tests.support.client_matrix import CHILD_ENV, ROOT, ROWS_DIR

SECOND = {
    "openai": ("1.109.1", ["tests/gateway_http/test_responses_sdk.py", "tests/gateway_http/test_openai_fidelity.py",
                           "tests/gateway_http/test_completions.py", "tests/gateway_http/test_media.py",
                           "tests/gateway_http/test_model_aliases.py"]),
    "anthropic": ("0.69.0", ["tests/gateway_http/test_anthropic_fidelity.py"]),
}


@pytest.mark.parametrize("sdk", sorted(SECOND))
async def test_the_sdk_tests_pass_under_a_second_version(sdk):
    version, files = SECOND[sdk]
    target = ROOT / ".sdk" / f"{sdk}-{version}"
    if not (target / ".installed").exists():
        reason = f"{sdk}=={version} is not installed in {target} (make test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    tag = f"{sdk}-{version}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           CHILD_ENV: tag}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-m", "client", *files,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    rows = [json.loads(line) for line in (ROWS_DIR / f"{tag}.jsonl").read_text().splitlines() if line]
    mine = [r for r in rows if r["client"] == sdk]
    assert mine and all(r["version"] == version for r in mine), (mine[:2], text[-2000:])
    failed = [r["test"] for r in mine if r["result"] != "pass"]
    assert proc.returncode == 0 and not failed, (failed, text[-3000:])
