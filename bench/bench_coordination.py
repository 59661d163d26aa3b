"""What coordinating a background round among replicas costs, beside its baseline in one run.

    python bench/bench_coordination.py [--n 2000] [--pg URL | --no-pg] [--json]

Each round of a worker task in ``eap-node serve`` runs under the database-wide lock
``task:<name>`` (:mod:`eap.node.store.coordination`).  Samples, taken in turn so the load of a
shared machine weighs on all alike:

* **baseline**: one empty write transaction (``SELECT 1``), the least a worker round does;
* **coordinated**: the same transaction inside ``Coordinator.run_exclusive`` (take the lock,
  run, release): a round that runs;
* **skipped**: ``run_exclusive`` while another engine holds the lock: a round another replica
  has, which does nothing else.

Printed per database as p50 / p99 in microseconds and as ratios to the baseline's p50.
SQLite uses a file lock beside the database; PostgreSQL a session advisory lock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

PG_ADMIN = os.environ.get("EAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _round(store) -> None:
    with store.transaction() as conn:
        conn.execute(text("SELECT 1"))


def measure(url: str, n: int) -> dict:
    from eap.node.store import open_store

    store, other = open_store(url), open_store(url)
    samples: dict[str, list[float]] = {"baseline": [], "coordinated": [], "skipped": []}
    try:
        for _ in range(50):  # warm the pools
            _round(store)
            store.coordinator.run_exclusive("task:bench", lambda: None)
        for _ in range(n):
            t0 = time.perf_counter()
            _round(store)
            t1 = time.perf_counter()
            ran, _ = store.coordinator.run_exclusive("task:bench", lambda: _round(store))
            t2 = time.perf_counter()
            assert ran
            with other.coordinator.exclusive("task:bench") as held:
                assert held
                t3 = time.perf_counter()
                ran, _ = store.coordinator.run_exclusive("task:bench", lambda: _round(store))
                t4 = time.perf_counter()
                assert not ran
            samples["baseline"].append(t1 - t0)
            samples["coordinated"].append(t2 - t1)
            samples["skipped"].append(t4 - t3)
    finally:
        store.dispose()
        other.dispose()
    base = statistics.median(samples["baseline"])
    out = {}
    for name, xs in samples.items():
        xs.sort()
        p50 = statistics.median(xs)
        out[name] = {
            "p50_us": round(p50 * 1e6, 1),
            "p99_us": round(xs[int(len(xs) * 0.99)] * 1e6, 1),
            "x_baseline": round(p50 / base, 2),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="samples of each kind (default 2000)")
    ap.add_argument("--pg", default=PG_ADMIN, help="PostgreSQL server (admin URL)")
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'bench.db'}", args.n)
    if not args.no_pg:
        import psycopg

        name = f"eap_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            results["postgresql"] = measure(f"{args.pg.rsplit('/', 1)[0]}/{name}", args.n)
        finally:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for db, rows in results.items():
        print(f"{db}:")
        for name, r in rows.items():
            print(
                f"  {name:12} p50 {r['p50_us']:9.1f} us  p99 {r['p99_us']:9.1f} us  "
                f"x baseline {r['x_baseline']:.2f}"
            )


if __name__ == "__main__":
    main()
