"""Peer sync: records per second and peak memory of the syncing process, by history size.

    python bench/bench_sync_memory.py [--records 64000,256000,1024000] [--per-batch 4000]
                                      [--dbs sqlite,postgres] [--pg URL] [--heap] [--json]

One source node (``eap-node serve`` in its own process, mutual TLS on 127.0.0.1, SQLite) holds
signed batches of ``--per-batch`` records, as many as the largest ``--records`` needs.  For
every size N and database, a fresh node syncs the first N records from cursor 0
(``Syncer.sync_peer``, exactly as ``eap-node sync`` runs it: stream, verify, validate, one
transaction per batch) in a child process of its own, which reports:

* ``rps``: records per second of the sync call alone (interpreter start and imports excluded);
* ``rss_before_mib``: its resident set just before the sync (interpreter, imports, open node);
* ``peak_rss_mib``: its peak resident set (``VmHWM``) after the sync;
* ``growth_mib``: the difference, what syncing N records cost in memory;
* with ``--heap``, in a second child: ``heap_peak_mib``, the peak of the Python heap during the
  sync (``tracemalloc``: objects and NumPy arrays, not the gRPC core's or the database
  driver's buffers; tracing slows the sync, so that run's rate is not reported).

Memory that stays flat as N grows is the point: a sync holds a few batches, never the
history.  Absolute numbers are noisy on a shared machine; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fednodes

SRC = "src.example"


def _fill(src, batches: int, per_batch: int) -> None:
    """Store ``batches`` signed batches in the source, one at a time (never all in memory):
    consecutive serials, 500 devices, hour after hour."""
    from eap.node.federation.testing import HOUR, T0, craft_columns, sign_batch
    from eap.node.store import repos

    serial, hours = 1, per_batch // 500 + 1
    for seq in range(1, batches + 1):
        cols = craft_columns(per_batch, serial_start=serial, devices=500,
                             t0=T0 + (seq - 1) * hours * HOUR)
        serial = int(cols.arrays["serial_end"][-1])
        msg = sign_batch(src.keys, src.node_id, seq, cols)
        with src.store.transaction() as conn:
            repos.insert_batch(conn, seq=seq, count=msg.count, wh=0,
                               merkle_root=msg.merkle_root, key_id=msg.key_id,
                               payload=msg.SerializeToString(), created_at_ms=msg.created_at_ms)


def _vm(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(home: str, peer: str, max_batches: int, heap: bool = False) -> None:
    """Sync ``max_batches`` of ``peer`` into the node at ``home``; print figures as JSON
    (``heap``: under ``tracemalloc``, with the Python heap's peak)."""
    import logging
    import tracemalloc

    logging.basicConfig(level=logging.WARNING)
    from eap.node.domain.node import Node
    from eap.node.federation.client import PeerClient
    from eap.node.federation.sync import Syncer

    node = Node.open(Path(home))
    with PeerClient(node) as client:
        client.hello(peer)
        before = _vm("VmRSS")
        if heap:
            tracemalloc.start()
        t = time.perf_counter()
        res = Syncer(node, client).sync_peer(peer, max_batches=max_batches)
        secs = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] if heap else 0
    node.close()
    if res.error:
        raise SystemExit(f"sync failed: {res.error}")
    print(json.dumps({"records": res.records, "batches": res.batches, "seconds": secs,
                      "rss_before_kib": before, "hwm_kib": _vm("VmHWM"), "heap_peak": peak}))


def _sync(home: Path, batches: int, *, heap: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", str(home), SRC, str(batches)]
    done = subprocess.run([*cmd, *(["--heap"] if heap else [])], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reset(home: Path) -> None:
    """Forget what the node at ``home`` imported, so that it syncs from cursor 0 again."""
    from eap.node.domain.node import Node
    from eap.node.store import peer_repos
    from eap.node.store import schema as t

    node = Node.open(home)
    with node.store.transaction() as conn:
        conn.execute(t.peer_records.delete())
        conn.execute(t.peer_batches.delete())
        peer_repos.update_peer(conn, SRC, cursor=0)
    node.close()


def run(sizes: list[int], per_batch: int, *, dbs: list[str], pg: str,
        heap: bool = False) -> dict:
    from eap.node.crypto import create_ca
    from eap.node.federation.localnet import LocalNode

    out: dict = {"per_batch": per_batch, "rows": []}
    with tempfile.TemporaryDirectory(prefix="eap-bench-sync-") as tmp:
        root = Path(tmp)
        create_ca(root / "ca")
        src = fednodes.make_home(root, "src", SRC, None, root / "ca")
        _fill(src, -(-max(sizes) // per_batch), per_batch)
        made: list[str] = []
        proc = None
        try:
            plan = []
            for kind in dbs:
                for size in sizes:
                    url = fednodes.pg_database(pg) if kind == "postgres" else None
                    if kind == "postgres" and url is None:
                        continue
                    if url:
                        made.append(url)
                    name = f"dst-{kind}-{size}"
                    dst = fednodes.make_home(root, name, f"d{len(plan)}.example", url, root / "ca")
                    fednodes.trust(src, dst)
                    fednodes.trust(dst, src)
                    dst.close()
                    plan.append((kind, size, root / name))
            src.close()
            proc = LocalNode.from_home(root / "src").start()
            proc.wait_ready()
            for kind, size, home in plan:
                r = _sync(home, -(-size // per_batch))
                if heap:
                    _reset(home)
                    r["heap_peak"] = _sync(home, -(-size // per_batch), heap=True)["heap_peak"]
                out["rows"].append({
                    "db": kind, "records": r["records"], "batches": r["batches"],
                    "seconds": round(r["seconds"], 3), "rps": round(r["records"] / r["seconds"]),
                    "rss_before_mib": round(r["rss_before_kib"] / 1024, 1),
                    "peak_rss_mib": round(r["hwm_kib"] / 1024, 1),
                    "growth_mib": round((r["hwm_kib"] - r["rss_before_kib"]) / 1024, 1),
                    "heap_peak_mib": round(r["heap_peak"] / 2**20, 2) if heap else None})
        finally:
            if proc is not None:
                proc.stop()
            for url in made:
                fednodes.drop_database(pg, url)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="64000,256000,1024000",
                        help="comma-separated history sizes (records)")
    parser.add_argument("--per-batch", type=int, default=4000)
    parser.add_argument("--pg", default=os.environ.get(
        "EAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--dbs", default="sqlite,postgres",
                        help="databases of the syncing node (postgres is skipped if unreachable)")
    parser.add_argument("--heap", action="store_true",
                        help="also the Python heap's peak (tracemalloc, a second sync)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("HOME", "PEER", "MAX_BATCHES"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), heap=args.heap)
        return
    sizes = sorted(int(s) for s in args.records.split(","))
    result = run(sizes, args.per_batch, dbs=args.dbs.split(","), pg=args.pg,
                 heap=args.heap)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"peer sync, batches of {result['per_batch']:,} records (one process per sync)")
    print("| db | records | batches | s | records/s | RSS before MiB | peak RSS MiB | growth MiB "
          "| heap peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        heap = "—" if r["heap_peak_mib"] is None else r["heap_peak_mib"]
        print(f"| {r['db']} | {r['records']:,} | {r['batches']} | {r['seconds']} | "
              f"{r['rps']:,} | {r['rss_before_mib']} | {r['peak_rss_mib']} | "
              f"{r['growth_mib']} | {heap} |")


if __name__ == "__main__":
    main()
