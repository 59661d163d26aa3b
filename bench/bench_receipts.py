"""Cost of selective-disclosure claim receipts, as ratios against baselines of the same run.

    python bench/bench_receipts.py [--n 200] [--json]

* **retire**: ``Node.retire`` of ``n`` whole bundles (one hour each, one 720-record batch)
  with SD receipts, against the same retirements with ``receipts.for_claim`` replaced by a
  function returning "" (the classic receipt only).  Samples alternate between two nodes
  (SD, baseline, SD, ...) so the load of a shared machine weighs on both alike.  Reported:
  median per retirement and the ratio SD / baseline.
* **verify**: ``verify_receipt`` of a presentation showing hour, zone, wh and inclusion,
  against one Ed25519 verification of a classic receipt digest (the classic check's floor).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _node(root: Path, name: str, hours: int):
    from support import write_csv

    from eap.node.config import create_home
    from eap.node.domain.node import Node
    from eap.node.records.enums import Purpose, Status

    node = Node.initialise(
        create_home(root / name, "medellin.example", "CO-ANT", None, operator_signed=True)
    )
    owner = node.create_account(request_id="o").account.id
    node.register_device(
        request_id="d",
        local_ref="r",
        capacity_w=5000,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-05-01",
        latitude=6.2,
        longitude=-75.5,
        zone="CO-ANT",
        owner=owner,
        meter_id="1",
        attestation_evidence="doc-1",
    )
    rows = [
        (
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(1767225600 + 3600 * i)),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(1767229200 + 3600 * i)),
            "1",
            1000,
        )
        for i in range(hours)
    ]
    node.import_readings(write_csv(root / f"{name}.csv", rows), request_id="i")
    node.issue(request_id="s")
    bundles = node.list_bundles(
        purpose=Purpose.OPERATIONS, status=int(Status.ACTIVE), page_size=1000
    ).items
    return node, [b.id for b in bundles]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="retirements per variant")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from eap.node.domain import node as node_module
    from eap.node.domain import receipts

    real = receipts.for_claim
    with tempfile.TemporaryDirectory() as tmp:
        sd_node, sd_ids = _node(Path(tmp), "sd", 720)
        base_node, base_ids = _node(Path(tmp), "base", 720)
        sd_t, base_t = [], []
        last = None
        for i in range(min(args.n, len(sd_ids))):
            for node, ids, out, fn in (
                (sd_node, sd_ids, sd_t, real),
                (base_node, base_ids, base_t, lambda *a, **k: ""),
            ):
                node_module.receipts.for_claim = fn
                t0 = time.perf_counter()
                rec = node.retire(ids[i], beneficiary="Metro", purpose="scope2", request_id=f"r{i}")
                out.append(time.perf_counter() - t0)
                if node is sd_node:
                    last = rec
        node_module.receipts.for_claim = real
        keys = {
            sd_node.node_id: {k.key_id: k.public_key for k in sd_node.keys.public_keys().values()}
        }
        shown = receipts.present(last.sd_receipt, ["hour", "zone", "wh", "inclusion"])
        pub = Ed25519PublicKey.from_public_bytes(keys[sd_node.node_id][last.key_id])
        ver_t, ed_t = [], []
        for _ in range(300):
            t0 = time.perf_counter()
            receipts.verify_receipt(shown, keys)
            ver_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pub.verify(last.signature, last.digest)
            ed_t.append(time.perf_counter() - t0)
        sizes = {"full_receipt_chars": len(last.sd_receipt), "presentation_chars": len(shown)}
        sd_node.close()
        base_node.close()
    med = statistics.median
    out = {
        "retire_sd_ms": med(sd_t) * 1e3,
        "retire_baseline_ms": med(base_t) * 1e3,
        "retire_ratio": med(sd_t) / med(base_t),
        "verify_presentation_us": med(ver_t) * 1e6,
        "verify_classic_ed25519_us": med(ed_t) * 1e6,
        "verify_ratio": med(ver_t) / med(ed_t),
        **sizes,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"retire, median of {len(sd_t)}: SD {out['retire_sd_ms']:.2f} ms, classic only "
        f"{out['retire_baseline_ms']:.2f} ms, ratio {out['retire_ratio']:.2f}x"
    )
    print(
        f"verify presentation (hour, zone, wh, inclusion): {out['verify_presentation_us']:.0f}"
        f" us = {out['verify_ratio']:.1f}x one Ed25519 verification "
        f"({out['verify_classic_ed25519_us']:.0f} us)"
    )
    print(
        f"sizes: full receipt {sizes['full_receipt_chars']} chars, presentation "
        f"{sizes['presentation_chars']} chars"
    )


if __name__ == "__main__":
    main()
