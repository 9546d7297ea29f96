"""Regenerates clients/tollgate/v1 from protos/ (make protos), or checks it is current (--check).

Runs grpc_tools' bundled protoc with mypy-protobuf's plugins, so the output depends only on
pinned Python packages. --check generates into a temporary folder and diffs it against the
committed files: stale stubs fail the test suite.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
OUT_PKG = ROOT / "clients" / "tollgate" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_root: Path) -> None:
    from grpc_tools import protoc
    import grpc_tools

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "tollgate" / "v1").glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    scripts = Path(sysconfig.get_path("scripts"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={scripts / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={scripts / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")


def generated_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.glob("*") if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail when the committed stubs are stale")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp) / "tollgate" / "v1")
        current = generated_files(OUT_PKG)
        if args.check:
            stale = sorted(
                n for n in set(fresh) | set(current)
                if n not in fresh or n not in current or not filecmp.cmp(fresh[n], current[n], shallow=False)
            )
            if stale:
                sys.exit("stale generated stubs (run `make protos`): " + ", ".join(stale))
            print("generated stubs are current")
            return
        for name, path in current.items():
            if name not in fresh:
                os.remove(path)
        OUT_PKG.mkdir(parents=True, exist_ok=True)
        for name, path in fresh.items():
            shutil.copyfile(path, OUT_PKG / name)
        print(f"generated {len(fresh)} files into {OUT_PKG.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
