"""The committed generated protocol code must match what protoc produces from the .proto files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "proto" / "eap" / "v1"


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "eap_proto_generate", ROOT / "proto" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (test extra) regenerates the code")
    gen = _load_generator()
    gen.generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "eap" / "v1").iterdir() if p.is_file()}
    committed = {
        p.name: p.read_bytes() for p in GENERATED.iterdir() if p.is_file() and ("_pb2" in p.name)
    }
    assert sorted(fresh) == sorted(committed), "generated file set differs; run proto/generate.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}; run `python proto/generate.py`"
