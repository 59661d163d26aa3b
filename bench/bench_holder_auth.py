"""Cost of holder signatures on local transfers, as a ratio to custodial transfers in one run.

Usage: ``python bench/bench_holder_auth.py [--quick] [--db URL]``

One node (SQLite in a temporary folder by default), ``n`` issued bundles held by a custodial
account and ``n`` by a holder-signed one; each bundle is moved once, whole, to a third account,
interleaving the two kinds so both see the same machine.  Prints transfers per second of each
kind, the holder-signed / custodial ratio, and the holder's signing cost alone (what a wallet
spends).  See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from eap.node.config import create_home
from eap.node.domain import holder_auth as H
from eap.node.domain.node import Node
from eap.node.records.enums import Purpose, Status


def _issue(node: Node, tmp: Path, owner: str, tag: str, hours: int) -> list[str]:
    node.register_device(
        request_id=f"dev-{tag}",
        local_ref=f"roof-{tag}",
        capacity_w=100_000,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-01-01",
        latitude=6.2,
        longitude=-75.5,
        zone="CO-ANT",
        owner=owner,
        meter_id=f"m-{tag}",
        attestation_evidence="bench",
    )
    t0 = dt.datetime(2024, 1, 1)
    lines = [
        "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator"
    ]
    for h in range(hours):
        a, b = t0 + dt.timedelta(hours=h), t0 + dt.timedelta(hours=h + 1)
        lines.append(f"{a:%Y-%m-%d %H:%M:%S},{b:%Y-%m-%d %H:%M:%S},m-{tag},{1000 + h},NET")
    path = tmp / f"{tag}.csv"
    path.write_text("\n".join(lines) + "\n")
    node.import_readings(path, request_id=f"imp-{tag}")
    node.issue(request_id=f"iss-{tag}")
    page = node.list_bundles(
        purpose=Purpose.OPERATIONS, owner=owner, status=int(Status.ACTIVE), page_size=1000
    )
    return [b.id for b in page.items]


def run(n: int, db: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        node = Node.initialise(
            create_home(tmp / "home", "bench.example", "CO-ANT", db, operator_signed=True)
        )
        try:
            key = Ed25519PrivateKey.generate()
            cust = node.create_account(request_id="c").account.id
            held = node.create_account(
                request_id="h", holder_public_key=H.public_key_of(key)
            ).account.id
            dest = node.create_account(request_id="d").account.id
            plain, signed = _issue(node, tmp, cust, "c", n), _issue(node, tmp, held, "h", n)
            t_plain = t_signed = t_sign = 0.0
            for i, (p, s) in enumerate(zip(plain, signed, strict=True)):
                t0 = time.perf_counter()
                node.transfer(p, to_account=dest, request_id=f"p-{i}")
                t1 = time.perf_counter()
                auth = H.sign(
                    key,
                    H.Intent(
                        node_id=node.node_id,
                        account=held,
                        operation=H.TRANSFER,
                        moves=((s, 0),),
                        destination=dest,
                        request_id=f"s-{i}",
                        expires_at_ms=H.now_ms() + 60_000,
                    ),
                )
                t2 = time.perf_counter()
                node.transfer(s, to_account=dest, request_id=f"s-{i}", holder=auth)
                t3 = time.perf_counter()
                t_plain, t_sign, t_signed = t_plain + t1 - t0, t_sign + t2 - t1, t_signed + t3 - t2
        finally:
            node.close()
    return {
        "custodial_per_s": n / t_plain,
        "holder_signed_per_s": n / t_signed,
        "ratio": t_plain / t_signed,
        "sign_us": 1e6 * t_sign / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 transfers of each kind")
    parser.add_argument("--db", default=None, help="database URL (default: SQLite)")
    args = parser.parse_args()
    n = 50 if args.quick else 200
    r = run(n, args.db)
    print(f"{n} whole-bundle local transfers of each kind ({args.db or 'sqlite'})")
    print(f"  custodial       {r['custodial_per_s']:8.1f} /s   1.00")
    print(
        f"  holder-signed   {r['holder_signed_per_s']:8.1f} /s   {r['ratio']:.2f}"
        "  (verification + spent-signature row, in the move's transaction)"
    )
    print(f"  wallet signing  {r['sign_us']:8.1f} us per request", file=sys.stdout)


if __name__ == "__main__":
    main()
