#!/usr/bin/env python3
"""The import-layer check: fails when an import runs back up the layers of docs/architecture.md.

Reads every module of services/, gateway_http/ and clients/tollgate/ (not the generated
tollgate/v1 stubs) with `ast`, maps each import of this tree to its unit (the longest prefix in
LAYERS), and reports an import whose target stands on a HIGHER layer than its source, or on the
same layer in another unit (units of one layer do not import each other). The bridge has its own
rule: gateway_http imports only `tollgate` (the public package), never `services`.

ALLOWED lists the upward imports that remain on purpose until their issue moves them; an entry
that no longer matches anything is reported too, so the list only shrinks. Run by `make test`
(tests/test_import_layers.py), or alone: `python scripts/import_layers.py` (exit 1 on a finding).
"""

from __future__ import annotations

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom first. A module belongs to the unit that is the longest prefix of its dotted name.
LAYERS: list[tuple[str, ...]] = [
    ("tollgate.v1",),  # generated from protos/; imports nothing of ours
    ("tollgate",),  # the public package: typed client, in-process channel, json_bound, heap
    ("services.core", "services.clock", "services.logs", "services.config"),  # types, errors, who calls, time, the typed config
    ("services.store",),  # stores rows, hashes and sealed values; never a secret in clear
    ("services.catalog", "services.limits", "services.providers"),  # model prices; quotas; wire translation, the socket guard
    ("services.auth",),  # account material and rules: keys, passwords, sealing, sessions, login throttling
    ("services.accounts", "services.metering"),  # accounts, sign-in, budgets; the ledger, usage in relayed bodies
    ("services.routing",),  # the one owner of trying an upstream key
    ("services.pipeline", "services.metrics", "services.loading"),  # quota -> route -> call -> meter; counters; model loads
    ("services.fidelity",),  # pass-through fidelity for the routed surfaces
    ("services.responses", "services.media"),  # the Responses API; images and audio (both over the pipeline and fidelity)
    ("services.app",),  # builds everything above from one Config
    ("services.rpc",),  # thin servicers
    ("services.server", "gateway_http"),  # the grpc.aio server; the HTTP bridge
    ("services.runtime", "services.supervisor", "services.cli", "services.tools"),
    ("services.__main__",),
]

# (importing module, imported unit): upward imports kept until their issue moves them.
ALLOWED: dict[tuple[str, str], str] = {}

SOURCES = ("services", "gateway_http", os.path.join("clients", "tollgate"))


def _units() -> dict[str, int]:
    return {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str, units: dict[str, int]) -> str | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in units:
            return prefix
    return None


def _modules(root: str) -> dict[str, str]:
    """Dotted module name -> file path, for every module this check reads."""
    found: dict[str, str] = {}
    for src in SOURCES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, src)):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "v1", "node_modules", "static"))
            for f in sorted(filenames):
                if not f.endswith(".py"):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                if rel.startswith("clients" + os.sep):
                    rel = rel[len("clients" + os.sep):]
                module = rel[:-3].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


def _imports(module: str, path: str) -> list[tuple[int, str]]:
    """(line, dotted target) for every import in a file, relative ones resolved."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import mod` may name a module: check the deeper name when it is one of ours.
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names] or [(node.lineno, target)]
    return out


def findings(root: str = ROOT) -> list[str]:
    units = _units()
    problems: list[str] = []
    used: set[tuple[str, str]] = set()
    for module, path in sorted(_modules(root).items()):
        src = unit_of(module, units)
        rel = os.path.relpath(path, root)
        if src is None and module == "services":
            continue  # the package itself: an empty __init__
        if src is None:
            problems.append(f"{rel}: module {module} stands on no layer (add its unit to LAYERS)")
            continue
        for line, target in _imports(module, path):
            dst = unit_of(target, units)
            if dst is None or dst == src:
                continue  # the standard library, a dependency, or the same unit
            if src == "gateway_http" and not dst.startswith("tollgate"):
                problems.append(f"{rel}:{line}: the bridge imports {target}; it may import only the tollgate package")
                continue
            if units[dst] < units[src]:
                continue
            if (module, dst) in ALLOWED:
                used.add((module, dst))
                continue
            how = "up" if units[dst] > units[src] else "across"
            problems.append(f"{rel}:{line}: {module} ({src}, layer {units[src]}) imports {target} "
                            f"({dst}, layer {units[dst]}): an import {how} the layers")
    for stale in sorted(set(ALLOWED) - used):
        problems.append(f"scripts/import_layers.py: ALLOWED {stale} matches no import any more: remove it")
    return problems


def main() -> int:
    found = findings()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
