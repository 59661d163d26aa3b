"""Cost of the node's telemetry on a domain operation, as a ratio measured in one run.

Usage: ``python bench/bench_telemetry.py [--quick]``

One node (SQLite in a temporary home) splits a bundle by local transfers of 1 Wh, three ways
in alternating rounds: with the node's tracer swapped for a no-op one (the baseline: no span
is made, the metrics still count), as shipped (spans made, ``none`` exporter), and with an
in-memory span exporter attached (every span recorded and exported).  It prints transfers
per second of each and their ratio to the baseline.  See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eap.node import telemetry
from eap.node.config import create_home
from eap.node.domain.node import Node
from eap.node.records.enums import Purpose

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import write_csv


def _node(home: Path) -> tuple[Node, str, str]:
    node = Node.initialise(create_home(home, "bench.example", "ES", operator_signed=True))
    owner = node.create_account(request_id="a1", label="owner").account.id
    other = node.create_account(request_id="a2", label="other").account.id
    node.register_device(
        request_id="d1",
        local_ref="roof",
        capacity_w=10_000_000,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-01-01",
        latitude=1.0,
        longitude=1.0,
        zone="ES",
        owner=owner,
        meter_id="m1",
        attestation_evidence="bench",
    )
    t0 = dt.datetime(2026, 1, 1)
    rows = [
        (
            t0.strftime("%Y-%m-%d %H:%M:%S"),
            (t0 + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
            "m1",
            9_000_000,
        )
    ]
    node.import_readings(write_csv(home / "r.csv", rows), request_id="i1")
    node.issue(request_id="s1")
    bundle = node.list_bundles(purpose=Purpose.OPERATIONS).items[0].id
    return node, bundle, other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer transfers (CI smoke run)")
    args = parser.parse_args()
    per_round, rounds = (50, 2) if args.quick else (300, 5)
    with tempfile.TemporaryDirectory() as tmp:
        node, bundle, other = _node(Path(tmp) / "n")
        tele = telemetry.of(node)
        shipped = tele.tracer
        noop = trace.NoOpTracerProvider().get_tracer("bench")
        exporter = InMemorySpanExporter()
        recording = telemetry.Telemetry(node.node_id)
        recording.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        modes = {
            "no spans (baseline)": noop,
            "as shipped (exporter none)": shipped,
            "in-memory exporter": recording.tracer,
        }
        rates: dict[str, list[float]] = {m: [] for m in modes}
        n = 0
        for _ in range(rounds):
            for mode, tracer in modes.items():
                tele.tracer = tracer
                started = time.perf_counter()
                for _ in range(per_round):
                    n += 1
                    bundle = node.transfer(
                        bundle, to_account=other, wh=1, request_id=f"t{n}"
                    ).remainder.id
                rates[mode].append(per_round / (time.perf_counter() - started))
                exporter.clear()
        tele.tracer = shipped
        node.close()
    base = statistics.median(rates["no spans (baseline)"])
    print(f"local transfers of 1 Wh, {rounds} rounds x {per_round} per mode (median)")
    for mode, values in rates.items():
        median = statistics.median(values)
        print(f"  {mode:28} {median:8.1f} transfers/s   ratio {median / base:5.2f}")


if __name__ == "__main__":
    main()
