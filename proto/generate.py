"""Regenerate the committed protocol code under ``proto/eap/v1`` (the ``eap.v1`` package).

Usage: ``python proto/generate.py [--out DIR]``.  Needs ``grpcio-tools`` (a test extra, pinned
so output is reproducible).  ``tests/test_proto_current.py`` regenerates into a temporary
folder and fails if anything differs from what is committed.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def proto_files() -> list[Path]:
    """The ``.proto`` sources, sorted for a stable command line."""
    return sorted((PROTO_ROOT / "eap" / "v1").glob("*.proto"))


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) over every proto file, writing into ``out``."""
    from grpc_tools import protoc

    include = str(resources.files("grpc_tools") / "_proto")
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root")
    args = parser.parse_args()
    generate(args.out)
    print(f"generated {len(proto_files())} proto files into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
