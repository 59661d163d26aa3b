"""Cost of the privacy features, as ratios against a baseline of the same run.

* audited read: ``list_devices(OPERATIONS)`` (appends a chained, signed audit row) against
  ``list_devices(TRANSPARENCY)`` of the same 50 devices (no row);
* ``audit-log verify``: rows per second, and against hashing the same rows' canonical JSON
  alone (what verification cannot avoid);
* aggregates of a 24-hour window without and with DP noise, against ``list_bundles`` of the
  same bundles.

Usage: ``python bench/bench_privacy.py [--db URL] [--reads N]`` (SQLite in a temporary home
by default; ~30 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import write_csv

from eap.node.config import create_home
from eap.node.domain.node import Node
from eap.node.records.enums import Purpose
from eap.node.store import audit_repos


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=None, help="database URL (default: SQLite in a temp home)")
    ap.add_argument("--reads", type=int, default=300, help="audited reads to time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = Node.initialise(
            create_home(
                Path(tmp) / "home", "bench.example", "CO-ANT", args.db, operator_signed=True
            )
        )
        t0 = dt.datetime(2026, 1, 1)
        rows = []
        for i in range(50):
            owner = node.create_account(request_id=f"o{i}", label=f"h{i}").account.id
            node.register_device(
                request_id=f"d{i}",
                local_ref=f"r{i}",
                capacity_w=5000,
                source="solar",
                technology="photovoltaic",
                commissioned_on="2020-01-01",
                latitude=6.2,
                longitude=-75.5,
                zone="CO-ANT",
                owner=owner,
                meter_id=f"m{i}",
                attestation_evidence="bench",
            )
            rows += [
                (
                    f"{t0 + dt.timedelta(hours=h):%Y-%m-%d %H:%M:%S}",
                    f"{t0 + dt.timedelta(hours=h + 1):%Y-%m-%d %H:%M:%S}",
                    f"m{i}",
                    1000 + h,
                )
                for h in range(24)
            ]
        node.import_readings(write_csv(Path(tmp) / "m.csv", rows), request_id="imp")
        node.issue(request_id="iss")

        n = args.reads
        plain = _best(
            lambda: [node.list_devices(purpose=Purpose.TRANSPARENCY) for _ in range(n)], 3
        )
        audited = _best(
            lambda: [node.list_devices(purpose=Purpose.OPERATIONS) for _ in range(n)], 3
        )
        print(
            f"device read, 50 devices: transparency {n / plain:,.0f}/s, "
            f"audited operations {n / audited:,.0f}/s  (x{audited / plain:.2f} time)"
        )

        count = node.verify_audit_log().count
        verify = _best(node.verify_audit_log, 3)
        with node.store.read() as conn:
            raw = [audit_repos.entry_of(r) for _, r in audit_repos.stored_rows(conn)]
        hash_only = _best(
            lambda: [hashlib.sha256(audit_repos.canonical(e.as_dict())).digest() for e in raw], 3
        )
        links = sum(len(e.accounts) for e in raw)
        print(
            f"audit-log verify: {count:,} rows naming {links:,} accounts, "
            f"{count / verify:,.0f} rows/s "
            f"(x{verify / hash_only:.1f} the time of hashing the rows alone)"
        )

        start = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
        bundles = _best(lambda: node.list_bundles(purpose=Purpose.OPERATIONS, page_size=1000), 5)
        exact = _best(lambda: node.aggregates(zone="CO-ANT", start=start, end=start + 86400), 5)
        noisy = _best(
            lambda: node.aggregates(zone="CO-ANT", start=start, end=start + 86400, epsilon=1.0), 5
        )
        print(
            f"aggregates, 24 h x 50 devices: exact x{exact / bundles:.2f}, "
            f"with DP x{noisy / bundles:.2f} the time of listing a 1,000-bundle page"
        )
        node.close()


if __name__ == "__main__":
    main()
