"""Cost of the duplicate-device check, as ratios to baselines measured in the same run.

Usage: ``python bench/bench_device_check.py [--quick]``

* **OPRF**: one blinded check of a meter (hash to the group, blind, the peer's evaluation,
  unblind, tag) against the device pseudonym HMAC every registration already computes.
* **registration**: ``register_device`` on a node with two peers answering ``CheckDevices``
  over real gRPC with mutual TLS (loopback), against the same node with the check off.
* **sweep**: meters checked per second against one peer (64 points per call) against
  registrations per second without the check.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from eap.node.crypto import device_pseudonym
from eap.node.crypto import meter_oprf as oprf
from eap.node.domain.node import Node
from eap.node.federation.localnet import LocalFederation
from eap.node.federation.runtime import FederationRuntime

IDS = ("a.example", "b.example", "c.example")


def best(fn, n: int, repeat: int = 3) -> float:
    """Best seconds per call of ``fn`` over ``repeat`` runs of ``n`` calls."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        out.append((time.perf_counter() - t0) / n)
    return min(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    n = 50 if args.quick else 300
    secret, key = os.urandom(32), oprf.derive_key(os.urandom(32))

    def check(i: int) -> None:
        r, b = oprf.blind(f"MTR-{i}")
        oprf.tag("b.example", oprf.unblind(r, oprf.evaluate(key, b)))

    hmac_s = best(lambda i: device_pseudonym(secret, f"MTR-{i}"), n * 10)
    oprf_s = best(check, n)
    print(
        f"OPRF check of one meter: {oprf_s * 1e6:,.0f} us = {oprf_s / hmac_s:,.0f} x the "
        f"pseudonym HMAC ({hmac_s * 1e6:.1f} us)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        net = LocalFederation.create(
            Path(tmp),
            [(i, "ES") for i in IDS],
            federation={
                "sync_interval_s": 0,
                "rate_per_s": 1e6,
                "burst": 10**6,
                "device_checks_per_hour": 1e9,
                "device_check_burst": 10**9,
            },
        )
        nodes, runtimes = {}, {}
        for m in net:
            nodes[m.node_id] = Node.open(m.home)
            runtimes[m.node_id] = FederationRuntime(
                nodes[m.node_id], listen=f"127.0.0.1:{m.fed_port}"
            )
            runtimes[m.node_id].start()
        try:
            for a in IDS:
                for b in IDS:
                    if a != b:
                        runtimes[a].client.hello(b, timeout=10)
            a = nodes[IDS[0]]
            owner = a.create_account(request_id="o", label="o").account.id
            count = [0]

            def register(_: int) -> None:
                count[0] += 1
                a.register_device(
                    request_id=f"d{count[0]}",
                    local_ref=f"r{count[0]}",
                    capacity_w=100,
                    source="solar",
                    technology="photovoltaic",
                    commissioned_on="2020-01-01",
                    latitude=1.0,
                    longitude=2.0,
                    zone="ES",
                    owner=owner,
                    meter_id=f"M-{count[0]}",
                    attestation_evidence="gca 2020/1",
                )

            guard = a.meter_guard
            a.meter_guard = None
            off = best(register, n // 2)
            a.meter_guard = guard
            on = best(register, n // 2)
            print(
                f"registration with 2 peers checked: {on * 1e3:.1f} ms = {on / off:.2f} x "
                f"without the check ({off * 1e3:.1f} ms)"
            )
            t0 = time.perf_counter()
            res = runtimes[IDS[0]].device_checker.sweep_peer(IDS[1])
            sweep = time.perf_counter() - t0
            rate = res["checked"] / sweep if res["checked"] else 0.0
            print(
                f"sweep: {res['checked']} meters in {sweep:.2f} s = {rate:,.0f}/s = "
                f"{rate * off:.1f} x registrations/s without the check"
            )
        finally:
            for rt in runtimes.values():
                rt.stop(grace=0.5)
            for node in nodes.values():
                node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
