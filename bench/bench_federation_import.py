"""Records per second a node imports from a peer, beside the raw costs of the same work.

    python bench/bench_federation_import.py [--batches 30] [--per-batch 10000] [--json]
                                            [--pg postgresql://postgres@127.0.0.1:5432/postgres]

One run, one machine, the same signed batches throughout:

* a source node (``eap-node serve`` in its own process, mutual TLS on 127.0.0.1) holds
  ``--batches`` signed batches of ``--per-batch`` records;
* **raw gRPC streaming**: ``PullBatches`` of every batch, bytes received and dropped;
* **raw bulk insert**: the same rows, already decoded, written with the store's generic bulk
  path (``eap.node.store.engine.bulk_insert``: ``COPY`` / ``executemany``), one transaction per
  batch, into an empty ``peer_records`` table;
* **import**: ``Syncer.sync_peer`` exactly as ``eap-node sync`` runs it: stream, verify the
  signature and Merkle root, validate the records (``_core``), persist records + header +
  cursor in one transaction per batch.

Import and raw insert run on SQLite (the embedded default) and on PostgreSQL (skipped when the
server is unreachable).  Targets on a 2-core machine: import >= 100,000 records/s on SQLite and
>= 150,000 on PostgreSQL.  Absolute numbers are noisy; the ratios in the last rows are not.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import fednodes
import numpy as np

TARGETS = {"sqlite": 100_000, "postgresql": 150_000}


def _start(home: Path):
    """Start ``eap-node serve`` on ``home`` and wait until it serves (shared local-net code)."""
    from eap.node.federation.localnet import LocalNode

    node = LocalNode.from_home(home).start()
    node.wait_ready()
    return node


def _raw_stream(dst, src_id: str, expect: int) -> float:
    """Seconds to stream every batch, bytes dropped (best of 3)."""
    from eap.node.federation.client import PeerClient

    best = float("inf")
    with PeerClient(dst) as client:
        for _ in range(3):
            t = time.perf_counter()
            got = sum(1 for _ in client.pull_batches(src_id, 0, max_batches=expect))
            best = min(best, time.perf_counter() - t)
            assert got == expect, (got, expect)
    return best


def _raw_insert(node, raws: list[bytes]) -> float:
    """Seconds for the generic bulk path to write the decoded rows (decoding not timed)."""
    from eap.node import batches
    from eap.node.store import schema as t
    from eap.node.store.engine import bulk_insert
    from eap.v1 import types_pb2

    prepared = []
    for raw in raws:
        msg = types_pb2.RecordBatch.FromString(raw)
        cols = batches.from_proto(msg)
        a, n = cols.arrays, len(cols)
        prepared.append(
            {
                "issuer": [msg.issuer] * n,
                "serial_start": a["serial_start"],
                "serial_end": a["serial_end"],
                "device_id": np.asarray(cols.devices, dtype=object)[a["device"]],
                "interval_start": a["interval_start"],
                "interval_end": a["interval_end"],
                "source": a["source"].astype(np.int64),
                "technology": a["technology"].astype(np.int64),
                "renewable_ppm": a["renewable_ppm"].astype(np.int64),
                "carbon_mg": a["carbon_mg"].astype(np.int64),
                "zone": np.asarray(cols.zones, dtype=object)[a["zone"]],
                "owner": np.asarray(cols.owners, dtype=object)[a["owner"]],
                "batch_seq": np.full(n, msg.seq, np.int64),
            }
        )
    t0 = time.perf_counter()
    for rows in prepared:
        with node.store.transaction() as conn:
            bulk_insert(conn, t.peer_records, rows)
    elapsed = time.perf_counter() - t0
    with node.store.transaction() as conn:
        conn.execute(t.peer_records.delete())
    return elapsed


def _import(node, src_id: str) -> tuple[float, int]:
    from eap.node.federation.client import PeerClient
    from eap.node.federation.sync import Syncer

    with PeerClient(node) as client:
        client.hello(src_id)
        t = time.perf_counter()
        res = Syncer(node, client).sync_peer(src_id)
        elapsed = time.perf_counter() - t
    if res.error:
        raise SystemExit(f"import failed: {res.error}")
    return elapsed, res.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--per-batch", type=int, default=10_000)
    parser.add_argument(
        "--pg",
        default=os.environ.get("EAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from eap.node import kernels
    from eap.node.crypto import create_ca
    from eap.node.federation.testing import craft_batches
    from eap.node.store import repos
    from eap.v1 import types_pb2

    n_records = args.batches * args.per_batch
    results: dict = {
        "records": n_records,
        "batches": args.batches,
        "per_batch": args.per_batch,
        "kernels": kernels.backend,
    }
    with tempfile.TemporaryDirectory(prefix="eap-bench-fed-") as tmp:
        root = Path(tmp)
        create_ca(root / "ca")
        src = fednodes.make_home(root, "src", "src.example", None, root / "ca")
        raws = craft_batches(
            src.keys, src.node_id, args.batches, args.per_batch, devices=min(1000, args.per_batch)
        )
        results["wire_bytes_per_record"] = round(sum(map(len, raws)) / n_records, 1)
        with src.store.transaction() as conn:
            for raw in raws:
                m = types_pb2.RecordBatch.FromString(raw)
                repos.insert_batch(
                    conn,
                    seq=m.seq,
                    count=m.count,
                    wh=0,
                    merkle_root=m.merkle_root,
                    key_id=m.key_id,
                    payload=raw,
                    created_at_ms=m.created_at_ms,
                )
        targets = [("sqlite", None)]
        pg_url = None if args.no_pg else fednodes.pg_database(args.pg)
        if pg_url:
            targets.append(("postgresql", pg_url))
        dsts = {}
        for kind, url in targets:
            name, node_id = f"dst-{kind}", f"dst-{kind[:2]}.example"
            dst = fednodes.make_home(root, name, node_id, url, root / "ca")
            fednodes.trust(src, dst)
            fednodes.trust(dst, src)
            dsts[kind] = dst
        proc = _start(root / "src")
        try:
            secs = _raw_stream(next(iter(dsts.values())), src.node_id, args.batches)
            results["raw_grpc_stream_rps"] = round(n_records / secs)
            for kind, dst in dsts.items():
                raw_secs = _raw_insert(dst, raws)
                imp_secs, got = _import(dst, src.node_id)
                assert got == n_records, (got, n_records)
                results[kind] = {
                    "raw_bulk_insert_rps": round(n_records / raw_secs),
                    "import_rps": round(n_records / imp_secs),
                    "import_vs_raw_stream": round(secs / imp_secs, 3),
                    "import_vs_raw_insert": round(raw_secs / imp_secs, 3),
                    "target_rps": TARGETS[kind],
                    "meets_target": n_records / imp_secs >= TARGETS[kind],
                }
                dst.close()
        finally:
            proc.stop()
            src.close()
            if pg_url:
                fednodes.drop_database(args.pg, pg_url)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    _print(results)


def _print(r: dict) -> None:
    kinds = [k for k in ("sqlite", "postgresql") if k in r]
    print(
        f"federation import: {r['records']:,} records in {r['batches']} batches of "
        f"{r['per_batch']:,} ({r['wire_bytes_per_record']} B/record on the wire), "
        f"kernels: {r['kernels']}"
    )
    print(f"{'':44}" + "".join(f"{k:>16}" for k in kinds))
    print(
        f"{'raw gRPC streaming (records/s)':44}"
        + "".join(f"{r['raw_grpc_stream_rps']:>16,}" for _ in kinds)
    )
    rows = [
        ("raw bulk insert (records/s)", "raw_bulk_insert_rps", "{:>16,}"),
        ("import: stream+verify+validate+persist", "import_rps", "{:>16,}"),
        ("import / raw streaming", "import_vs_raw_stream", "{:>16.2f}"),
        ("import / raw bulk insert", "import_vs_raw_insert", "{:>16.2f}"),
        ("target (records/s)", "target_rps", "{:>16,}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:44}" + "".join(fmt.format(r[k][key]) for k in kinds))
    print(
        f"{'meets target':44}"
        + "".join(f"{'yes' if r[k]['meets_target'] else 'NO':>16}" for k in kinds)
    )


if __name__ == "__main__":
    main()
