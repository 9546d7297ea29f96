"""`make soak` in miniature inside `make test` (issue 15: a 3-minute smoke): the driver runs for real
(SOAK_MINUTES=3: G2 ~80 s, counts at 3/10 of their 10-minute size, A9 at full timeouts with a short S15) against real gateway processes, and its printed
figures are held to their bounds here, one by one, not just its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.postgres import postgres_url  # noqa: F401  (fixture: proves PostgreSQL is there, or skips/fails)
from tests.support.procs import REPO
from tests.support.redis_server import redis_url  # noqa: F401  (fixture)


@pytest.mark.timeout(480)
def test_soak_smoke_figures_hold_their_bounds(tmp_path, postgres_url, redis_url):
    out = tmp_path / "soak.json"
    env = {**os.environ, "SOAK_MINUTES": "3", "SOAK_OUT": str(out), "REDIS_URL": redis_url,
           "DATABASE_URL": postgres_url.split("?")[0]}
    # the driver's gateways die with it (PR_SET_PDEATHSIG in tests/soak/probe.py), even on a timeout's SIGKILL
    proc = subprocess.run([sys.executable, "-m", "tests.soak"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=420)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    failed = [f"{n}: {c['figure']}" for n, c in checks.items() if c["ok"] is False]
    assert failed == [], "\n".join(failed) + "\n" + proc.stdout[-3000:]
    assert proc.returncode == 0
    # every judged figure was produced, not skipped
    for name in ("G2 answers", "G2 ledger rows vs requests", "G2 fds", "G2 tasks",
                 "E11 slowloris sockets closed ≤ 15 s", "E11 parser fuzz", "A9 Failover Bench", "G3 no 5xx",
                 "G4 ledger rows vs requests", "G4 fds at baseline", "D4 ledger rows vs requests", "D4 restarts",
                 "Redis connections", "PostgreSQL connections"):
        assert checks[name]["ok"] is True, name
    f = report["figures"]
    assert f["served"]["G2"] >= 300 and f["served"]["G3"] >= 1000 and f["served"]["G4"] >= 700 and f["served"]["D4"] >= 60
    assert f["e11"]["closed_by_gateway"] == f["e11"]["sockets"] == 500 and f["e11"]["slowest_close_s"] <= 16
    verdicts = {v["scenario"]: v["verdict"] for v in f["a9"]}
    assert len(verdicts) == 16 and "fail" not in verdicts.values()
    assert {s for s, v in verdicts.items() if v == "safe"} >= {"S08", "S09", "S14"}
    assert all(p["exit"] == 0 for p in f["parsers"].values())
