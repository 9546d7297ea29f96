"""The tested client matrix (docs/clients.md), produced from the tests that exercise an official client.

A test says what it proves with `@pytest.mark.client("openai", "responses.create, streamed",
"POST /v1/responses as sent (OpenAI route)")`: the client's import name, the feature, and what the
gateway sends upstream for it. Every such test's outcome is recorded with the version of the
client module actually imported. A session writes its rows to build/client-matrix/<session>.jsonl;
tests/clients/test_sdk_versions.py runs a subset again under second pinned SDK versions (each in
its own --target dir, in a subprocess) into the same folder. At the end of a whole-suite session
(`make test`; or any run with TOLLGATE_CLIENTS_DOC=1), docs/clients.md is rendered from this run's rows.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS_DIR = ROOT / "build" / "client-matrix"
DOC = ROOT / "docs" / "clients.md"
CHILD_ENV = "TOLLGATE_MATRIX_CHILD"  # set in a subprocess run under a second SDK version


def _version(module: str) -> str:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "?"))
    except ImportError:
        return "not installed"


class ClientMatrix:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.marked = 0
        self.started = time.time()

    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", "client(name, feature, upstream): a row of docs/clients.md")

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.marked = sum(1 for item in items if item.get_closest_marker("client"))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        marks = list(item.iter_markers("client"))
        if not marks or not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
        result = "pass" if report.passed else ("skip" if report.skipped else "FAIL")
        for m in marks:
            name, feature, upstream = m.args
            self.rows.append({"client": name, "version": _version(name), "feature": feature, "upstream": upstream,
                              "result": result, "test": item.nodeid})

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.rows:
            return
        ROWS_DIR.mkdir(parents=True, exist_ok=True)
        tag = os.environ.get(CHILD_ENV) or "main"
        (ROWS_DIR / f"{tag}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        if os.environ.get(CHILD_ENV) or len(self.rows) < self.marked:
            return  # a second-version run, or marked tests deselected: docs/clients.md is left as it is
        whole = not session.config.args or [os.path.normpath(a) for a in session.config.args] == ["tests"]
        if not whole and os.environ.get("TOLLGATE_CLIENTS_DOC") != "1":
            return  # a run of chosen files: only `make test` (or TOLLGATE_CLIENTS_DOC=1) rewrites the page
        rows = list(self.rows)
        for f in ROWS_DIR.glob("*.jsonl"):  # second-version runs of this session
            if f.name != "main.jsonl" and f.stat().st_mtime >= self.started:
                rows += [json.loads(line) for line in f.read_text().splitlines() if line]
        DOC.write_text(render(rows))


def render(rows: list[dict]) -> str:
    rows = sorted(rows, key=lambda r: (r["client"], [int(x) if x.isdigit() else 0 for x in r["version"].split(".")],
                                       r["feature"]), reverse=False)
    out = [
        "# Tested clients: what works, with which version, and what the gateway sends upstream",
        "",
        "Produced by the test run itself (tests/support/client_matrix.py): each row is a test that drives the",
        "official client against a gateway on loopback, with wire-faithful fakes of the providers as upstreams.",
        "The second version of each SDK is installed by `make test` into its own `--target` folder",
        "(`.sdk/`) and a subset of the same tests runs under it in a subprocess",
        "(tests/clients/test_sdk_versions.py). Regenerated on every full `make test`; do not edit by hand.",
        "",
        "| client | version | feature | result | what the gateway sends upstream | test |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    seen = set()
    for r in rows:
        key = (r["client"], r["version"], r["feature"], r["test"])
        if key in seen:
            continue
        seen.add(key)
        test = r["test"].split("::")[-1].split("[")[0]
        out.append(f"| {r['client']} | {r['version']} | {r['feature']} | {r['result']} | {r['upstream']} | `{test}` |")
    return "\n".join(out) + "\n"
