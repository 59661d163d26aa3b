"""``eap.node.kernels``: the one facade over ``eap._core`` turns kernel errors into the node's
errors, traces every call, and falls back to the pure-Python twins with exactly one warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eap.node import kernels
from eap.node.errors import InvalidArgument, OutOfRange

HOUR = 1_700_000_000 - 1_700_000_000 % 3600


def batch(n: int = 3) -> dict[str, np.ndarray]:
    """``n`` valid hourly records of 100 Wh, one device each, consecutive serials."""
    return {
        "serial_start": np.arange(n, dtype=np.int64) * 100,
        "serial_end": np.arange(1, n + 1, dtype=np.int64) * 100,
        "device": np.arange(n, dtype=np.int32),
        "interval_start": np.full(n, HOUR, np.int64),
        "interval_end": np.full(n, HOUR + 3600, np.int64),
        "source": np.full(n, 1, np.uint8),
        "technology": np.full(n, 1, np.uint8),
        "renewable_ppm": np.full(n, 1_000_000, np.uint32),
        "carbon_mg": np.zeros(n, np.uint32),
        "zone": np.zeros(n, np.int32),
        "owner": np.zeros(n, np.int32),
    }


def test_backend_is_the_compiled_one_when_built():
    try:
        import eap._core.merkle
        import eap._core.netting
        import eap._core.validate  # noqa: F401
    except ImportError:
        expected = "python"
    else:
        expected = "python" if os.environ.get(kernels.PURE_PYTHON_ENV) == "1" else "cython"
    assert kernels.backend == expected


def test_validate_and_raise_for_codes():
    cols = batch(4)
    capacity = np.full(4, 1000, np.int64)
    codes = kernels.validate(cols, capacity_w=capacity)
    assert codes.tolist() == [0, 0, 0, 0]
    kernels.raise_for_codes(codes)
    cols["source"][1] = 0
    cols["interval_end"][3] = HOUR
    codes = kernels.validate(cols, capacity_w=capacity, metered_wh=np.full(4, -1))
    assert [kernels.RULE_NAMES[c] for c in codes] == [
        "OK",
        "SOURCE_INVALID",
        "OK",
        "INTERVAL_EMPTY",
    ]
    with pytest.raises(InvalidArgument) as err:
        kernels.raise_for_codes(codes, "records violate issuance rules")
    assert err.value.message == "records violate issuance rules (2 of 4 records)"
    assert [v.field for v in err.value.violations] == ["records[1]", "records[3]"]
    assert err.value.violations[0].description.startswith("SOURCE_INVALID: ")
    assert err.value.violations[1].description.startswith("INTERVAL_EMPTY: ")
    with pytest.raises(InvalidArgument) as err:
        kernels.raise_for_codes(codes, limit=1)
    assert len(err.value.violations) == 1 and "2 of 4" in err.value.message
    assert len(kernels.violations(codes, field="batch.records", limit=None)) == 2
    assert kernels.violations(codes, field="batch.records")[0].field == "batch.records[1]"


def test_validate_bad_columns_are_invalid_argument():
    cols = batch(2)
    with pytest.raises(InvalidArgument, match="length mismatch"):
        kernels.validate(cols, capacity_w=np.full(3, 1000))
    del cols["technology"]
    with pytest.raises(InvalidArgument) as err:
        kernels.validate(cols, capacity_w=np.full(2, 1000))
    assert [v.field for v in err.value.violations] == ["records.technology"]
    cols = batch(2)
    cols["source"] = np.array([1, 300])
    with pytest.raises(InvalidArgument) as err:
        kernels.validate(cols, capacity_w=np.full(2, 1000))
    assert err.value.violations[0].field == "records[1].source"


def test_hashing_through_the_facade():
    cols = batch(3)
    devices, zones, owners = ["d0", "d1", "d2"], ["CO-ANT"], ["acct_a"]
    leaves = kernels.leaf_hashes(cols, devices, zones, owners)
    digests = [kernels.dictionary_digests(d) for d in (devices, zones, owners)]
    np.testing.assert_array_equal(kernels.leaf_hashes(cols, *digests), leaves)
    root = kernels.merkle_root(leaves)
    assert isinstance(root, bytes) and len(root) == 32
    proof = kernels.inclusion_proof(leaves, 2)
    assert kernels.verify_inclusion(bytes(leaves[2]), 2, 3, proof, root)
    assert not kernels.verify_inclusion(bytes(leaves[1]), 2, 3, proof, root)
    with pytest.raises(InvalidArgument) as err:
        kernels.inclusion_proof(leaves, 3)
    assert err.value.violations[0].field == "index"
    with pytest.raises(InvalidArgument) as err:
        kernels.leaf_hashes(cols, devices[:2], zones, owners)
    assert err.value.violations[0].field == "records[2].device"


def test_netting_through_the_facade():
    payer, payee = np.array([0, 1, 2]), np.array([1, 2, 0])
    amount, currency = np.array([100, 70, 50]), np.array([0, 0, 0])
    net = kernels.net_positions(payer, payee, amount, currency, 3, 1)
    assert net[:, 0].tolist() == [-50, 30, 20]
    legs = kernels.settlement_instructions(net)
    assert isinstance(legs, kernels.Payments)
    assert legs.amount.tolist() == [30, 20] and legs.payer.tolist() == [0, 0]
    pairs = kernels.bilateral(payer, payee, amount, currency, 3, 1)
    assert pairs.amount.tolist() == [100, 50, 70]
    assert kernels.efficiency(amount, currency, net).tolist() == [1 - 50 / 220]
    with pytest.raises(InvalidArgument) as err:
        kernels.net_positions(payer, payee, np.array([1, 0, 1]), currency, 3, 1)
    assert err.value.violations[0].field == "obligations[1].amount"
    with pytest.raises(OutOfRange, match="party 1, currency 0"):
        kernels.net_positions([0, 2], [1, 1], [2**63 - 1, 2**63 - 1], [0, 0], 3, 1)
    with pytest.raises(InvalidArgument, match="sum to zero"):
        kernels.settlement_instructions([[1], [0]])


def test_every_call_is_a_span(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(kernels, "_tracer", provider.get_tracer("test"))
    cols = batch(5)
    kernels.validate(cols, capacity_w=np.full(5, 1000))
    kernels.merkle_root(kernels.leaf_hashes(cols, ["a", "b", "c", "d", "e"], ["z"], ["o"]))
    with pytest.raises(OutOfRange):
        kernels.net_positions([0, 2], [1, 1], [2**63 - 1, 2**63 - 1], [0, 0], 3, 1)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {
        "eap.kernels.validate",
        "eap.kernels.dictionary_digests",
        "eap.kernels.leaf_hashes",
        "eap.kernels.merkle_root",
        "eap.kernels.net_positions",
    } <= set(spans)
    assert spans["eap.kernels.validate"].attributes["eap.kernels.rows"] == 5
    assert spans["eap.kernels.validate"].attributes["eap.kernels.backend"] == kernels.backend
    assert not spans["eap.kernels.net_positions"].status.is_ok


PURE_PYTHON_SCRIPT = textwrap.dedent(
    """
    import importlib, json, warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from eap.node import kernels
        importlib.import_module("eap.node.kernels")
        import numpy as np
        cols = {name: np.zeros(2, dtype=dt) for name, dt in kernels.RECORD_DTYPES.items()}
        cols["serial_end"][:] = [5, 10]
        cols["serial_start"][:] = [0, 5]
        cols["interval_end"][:] = 3600
        codes = kernels.validate(cols, capacity_w=np.full(2, 100))
        root = kernels.merkle_root(kernels.leaf_hashes(cols, ["d"], ["z"], ["o"]))
        net = kernels.net_positions([0], [1], [5], [0], 2, 1)
    print(json.dumps({
        "backend": kernels.backend,
        "codes": codes.tolist(),
        "root": root.hex(),
        "net": net.tolist(),
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
    }))
    """
)


def run_script(env_extra: dict[str, str]) -> tuple[dict, str]:
    env = {**os.environ, **env_extra}
    proc = subprocess.run(
        [sys.executable, "-c", PURE_PYTHON_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_pure_python_mode_in_a_fresh_process():
    out, stderr = run_script({kernels.PURE_PYTHON_ENV: "1"})
    assert out["backend"] == "python"
    assert len(out["warnings"]) == 1 and "EAP_PURE_PYTHON" in out["warnings"][0]
    assert "pure-Python kernels" in stderr  # the log record
    assert out["codes"] == [kernels.RULE_NAMES.index("SOURCE_INVALID")] * 2
    assert out["net"] == [[-5], [5]]
    if kernels.backend == "cython":
        compiled, _ = run_script({kernels.PURE_PYTHON_ENV: "0"})
        assert compiled["backend"] == "cython" and compiled["warnings"] == []
        assert {k: v for k, v in compiled.items() if k != "backend"} == {
            k: v for k, v in out.items() if k not in ("backend", "warnings")
        } | {"warnings": []}
