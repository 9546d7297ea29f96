"""protos/ pass `buf lint` (STANDARD) — buf comes from the npm registry via `make test`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "node_modules" / ".bin" / "buf"


def test_buf_lint_passes():
    if not BUF.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("buf is not installed: `make test` installs it with npm (package.json)")
        pytest.skip("buf not installed (run `make buf-lint` or `make test`)")
    r = subprocess.run([str(BUF), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
