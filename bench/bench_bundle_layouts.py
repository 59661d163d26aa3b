"""How fast the ``bundles`` table takes issued rows, under its own layout and cheaper ones.

Usage::

    python bench/bench_bundle_layouts.py [--devices 2000] [--hours 720] [--db sqlite,postgres]

Each layout gets a freshly migrated database; the same issuance-shaped rows (device-major,
serials increasing, one owner per 100 devices, 64-hex lineage hashes) go in through the store's
own bulk path (:func:`eap.node.store.engine.bulk_insert`: ``executemany`` on SQLite, ``COPY``
on PostgreSQL), 100,000 rows a transaction, as issuance writes them.  Rows are built before
the clock starts; the time is the inserts and commits only.  Layouts:

* ``current``: the schema at head (id key, unique serial range, four listing indexes);
* ``no owner index``: without ``ix_bundles_owner_serial`` (an owner listing could merge the
  owner's per-status ranges of ``ix_bundles_owner_status_serial`` instead);
* ``clustered`` (SQLite): ``WITHOUT ROWID``, keyed on the serial range, the id unique;
* ``clustered, no owner index`` (SQLite);
* ``no listing indexes``: the floor of a row per record: the row, its id and its range.

It answers one question for the city-scale issue: can a layout of one row per issued record
reach 100,000 records/s here?  Ratios are against ``current`` in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fednodes

from eap.node.store import open_store
from eap.node.store import schema as t
from eap.node.store.engine import bulk_insert

LISTING = [
    "ix_bundles_owner_status_serial",
    "ix_bundles_owner_serial",
    "ix_bundles_status_serial",
    "ix_bundles_device_serial",
]
LAYOUTS = {
    "current": [],
    "no owner index": ["DROP INDEX ix_bundles_owner_serial"],
    "clustered": ["cluster"],
    "clustered, no owner index": ["cluster", "DROP INDEX ix_bundles_owner_serial"],
    "no listing indexes": [f"DROP INDEX {i}" for i in LISTING],
}
T0 = 1_704_067_200
PER_TXN = 100_000


def rows(devices: int, hours: int) -> list[dict[str, object]]:
    """Issuance-shaped columns, one dict of arrays per transaction."""
    out = []
    n = devices * hours
    k = np.arange(n)
    dev, hour = k // hours, k % hours
    wh = (dev * 7 + hour * 13) % 200 + 1
    ends = np.cumsum(wh)
    starts = ends - wh
    for lo in range(0, n, PER_TXN):
        s = slice(lo, min(n, lo + PER_TXN))
        m = s.stop - s.start
        ss, ee = starts[s].tolist(), ends[s].tolist()
        out.append(
            {
                "id": [f"city.example/{a}-{b}" for a, b in zip(ss, ee, strict=True)],
                "issuer": ["city.example"] * m,
                "serial_start": starts[s],
                "serial_end": ends[s],
                "device_id": [f"dev_{d:026d}" for d in dev[s].tolist()],
                "interval_start": T0 + 3600 * hour[s],
                "interval_end": T0 + 3600 * hour[s] + 3600,
                "source": np.ones(m, np.int64),
                "technology": np.ones(m, np.int64),
                "renewable_ppm": np.full(m, 1_000_000),
                "carbon_mg": np.zeros(m, np.int64),
                "zone": ["CO-ANT"] * m,
                "cell": ["N06W076"] * m,
                "owner": [f"acct_{d // 100:026d}" for d in dev[s].tolist()],
                "status": np.ones(m, np.int64),
                "parent_id": [None] * m,
                "lineage_hash": [hashlib.sha256(str(a).encode()).hexdigest() for a in ss],
                "issued_at_ms": np.full(m, 1),
                "batch_seq": np.full(m, lo // PER_TXN + 1),
                "version": np.zeros(m, np.int64),
            }
        )
    return out


def _cluster_sqlite(conn) -> None:
    """Rebuild ``bundles`` as a WITHOUT ROWID table keyed on its serial range."""
    ddl = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'bundles'"
    ).scalar()
    idx = [
        r[0]
        for r in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'bundles' AND type = 'index' "
            "AND sql IS NOT NULL"
        )
    ]
    trig = [
        r[0]
        for r in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'bundles' AND type = 'trigger'"
        )
    ]
    new = ddl.replace("PRIMARY KEY (id)", "UNIQUE (id)").replace(
        "CONSTRAINT uq_bundles_range UNIQUE", "CONSTRAINT uq_bundles_range PRIMARY KEY"
    )
    if new == ddl:
        raise RuntimeError("the bundles DDL changed; update the clustered layout")
    conn.exec_driver_sql("DROP TABLE bundles")
    conn.exec_driver_sql(new.rstrip() + " WITHOUT ROWID")
    for sql in idx + trig:
        conn.exec_driver_sql(sql)


def run_layout(url: str, steps: list[str], data: list[dict[str, object]]) -> float:
    store = open_store(url, migrate=True)
    with store.transaction() as conn:
        for step in steps:
            if step == "cluster":
                _cluster_sqlite(conn)
            else:
                conn.exec_driver_sql(step)
    t0 = time.perf_counter()
    for part in data:
        with store.transaction() as conn:
            bulk_insert(conn, t.bundles, part)
    seconds = time.perf_counter() - t0
    with store.transaction() as conn:
        stored = conn.exec_driver_sql("SELECT count(*) FROM bundles").scalar()
    store.dispose()
    if stored != sum(len(part["id"]) for part in data):
        raise RuntimeError(f"{stored} rows stored, not every row built")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument("--hours", type=int, default=720)
    p.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    p.add_argument(
        "--pg",
        dest="pg_admin",
        default=os.environ.get("EAP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL admin URL (a throw-away database is made per layout)",
    )
    args = p.parse_args()
    data = rows(args.devices, args.hours)
    n = args.devices * args.hours
    print(f"{n:,} rows, {PER_TXN:,} a transaction\n")
    print("| db | layout | s | rows/s | vs current |")
    print("|---|---|---:|---:|---:|")
    for kind in args.db.split(","):
        base = None
        for name, steps in LAYOUTS.items():
            if kind == "postgres" and "cluster" in steps:
                continue  # a PostgreSQL heap is not clustered; its key is an index either way
            with tempfile.TemporaryDirectory() as tmp:
                url = (
                    f"sqlite:///{Path(tmp) / 'b.db'}"
                    if kind == "sqlite"
                    else fednodes.pg_database(args.pg_admin)
                )
                if url is None:
                    break
                try:
                    s = run_layout(url, steps, data)
                finally:
                    if kind == "postgres":
                        fednodes.drop_database(args.pg_admin, url)
            base = base or s
            print(f"| {kind} | {name} | {s:.1f} | {n / s:,.0f} | {base / s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
