"""Cross-node transfer latency (p50/p99) on loopback, beside its baselines measured in one run.

    python bench/bench_transfer_latency.py [--n 200] [--pg URL | --no-pg] [--json]

Two nodes run as ``eap-node serve`` processes on 127.0.0.1 with mutual TLS (the source's
server too, so its background worker runs as in production).  This process plays the source
operator's inline sender, as ``eap-node transfer BUNDLE --to NODE/ACCOUNT`` does once started:
each sample is one call of ``Transfers.send`` from the request to its return with the transfer
COMMITTED on both nodes and the COMMIT acknowledged (two signed RPCs, five write
transactions, three of them forced to disk: see ``docs/transfers.md`` §4).

Baselines in the same run:

* **signed RPC**: one ``GetTransferStatus`` round trip through the same ``PeerClient`` (seal,
  mutual TLS, open on both sides, one read on the peer), the floor of one protocol step;
* **in-process**: the same transfer between two nodes in this process with the in-process
  transport (no network, no envelopes): the cost of the durable transactions alone.

The three are sampled in turn (RPC, cross-node, in-process, RPC, ...) so that the load of a
shared machine weighs on all of them alike.  Whole and partial (split) transfers are measured
separately; SQLite (``synchronous=FULL``) always, PostgreSQL when reachable.  Target on a
2-core machine: p50 under 20 ms.  Absolute times are noisy here; the ratios are steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import fednodes

TARGET_P50_MS = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _home(root: Path, name: str, node_id: str, db: str | None, ca: Path | None):
    from eap.node.config import create_home
    from eap.node.crypto import issue_node_cert
    from eap.node.domain.node import Node

    cfg = create_home(
        root / name, node_id, "ES", db, f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}",
        operator_signed=True,
    )
    node = Node.initialise(cfg)
    if ca is not None:
        from eap.node.federation.settings import update_settings

        update_settings(root / name, sync_interval_s=0, rate_per_s=10_000.0, burst=10_000)
        issue_node_cert(ca, node_id, root / name / "tls")
    return node


def _trust(a, b) -> None:
    from eap.node.federation.descriptor import describe
    from eap.node.federation.peers import TrustList

    TrustList(a.store, a.node_id).add_descriptor(describe(b))


def _issue(node, hours: int, tmp: Path) -> tuple[str, list[str]]:
    """An owner with ``hours`` hourly bundles of 5,000 Wh, plus one big bundle for splits."""
    import datetime as dt

    from eap.node.records.enums import Purpose, Status

    owner = node.create_account(request_id="owner").account.id
    node.register_device(
        request_id="dev",
        local_ref="farm",
        capacity_w=10_000_000,
        source="wind",
        technology="onshore_wind",
        commissioned_on="2020-01-01",
        latitude=41.4,
        longitude=2.2,
        zone="ES",
        owner=owner,
        meter_id="m1",
        attestation_evidence="grid connection agreement",
    )
    t0 = dt.datetime(2024, 1, 1)
    lines = [
        "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator"
    ]
    for h in range(hours + 1):
        s, e = t0 + dt.timedelta(hours=h), t0 + dt.timedelta(hours=h + 1)
        wh = 5_000 if h < hours else 9_000_000
        lines.append(f"{s:%Y-%m-%d %H:%M:%S},{e:%Y-%m-%d %H:%M:%S},m1,{wh},NET")
    path = tmp / "readings.csv"
    path.write_text("\n".join(lines) + "\n")
    node.import_readings(path, request_id="imp")
    node.issue(request_id="iss")
    items, token = [], ""
    while True:
        page = node.list_bundles(
            purpose=Purpose.OPERATIONS,
            owner=owner,
            status=int(Status.ACTIVE),
            page_size=1000,
            page_token=token,
        )
        items += page.items
        if not page.next_token:
            break
        token = page.next_token
    items.sort(key=lambda b: b.serial_start)
    return items[-1].id, [b.id for b in items[:-1]]


def _start(home: Path):
    """Start ``eap-node serve`` on ``home`` and wait until it serves (shared local-net code)."""
    from eap.node.federation.localnet import LocalNode

    node = LocalNode.from_home(home).start()
    node.wait_ready()
    return node


def _stats(samples: list[float]) -> dict:
    ms = sorted(x * 1000 for x in samples)
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


class _Sender:
    """One side of the comparison: a source engine, its destination, its bundles."""

    def __init__(self, engine, to: str, whole: list[str], big: str) -> None:
        self.engine, self.to, self.whole, self.big = engine, to, whole, big

    def one(self, mode: str) -> float:
        from eap.node.federation.transfers import COMMITTED

        t = time.perf_counter()
        if mode == "whole":
            _, rec = self.engine.send(self.whole.pop(), to=self.to, request_id=str(uuid.uuid4()))
        else:
            first, rec = self.engine.send(self.big, to=self.to, wh=10, request_id=str(uuid.uuid4()))
            self.big = first.remainder.id
        took = time.perf_counter() - t
        assert rec.state == COMMITTED and rec.settled, rec
        return took


def _rpc_once(client, peer: str) -> float:
    from eap.node.federation.transfers import PT_STATUS
    from eap.v1 import federation_pb2 as fed

    ask = fed.TransferStatus(transfer_id="bench.example/none").SerializeToString()
    t = time.perf_counter()
    client.call(peer, "GetTransferStatus", PT_STATUS, ask)
    return time.perf_counter() - t


def _in_process(root: Path, db: tuple[str | None, str | None], count: int):
    """Two nodes in this process, the in-process transport between them."""
    from eap.node.federation.inprocess import InProcessNetwork
    from eap.node.federation.peers import TrustList, keys_json
    from eap.node.federation.sync import BatchImporter
    from eap.node.federation.transfers import Transfers
    from eap.node.store import peer_repos, repos

    src = _home(root, "ip-src", "ipsrc.example", db[0], None)
    dst = _home(root, "ip-dst", "ipdst.example", db[1], None)
    net = InProcessNetwork()
    engines = {x.node_id: Transfers(x, net.transport(x.node_id)) for x in (src, dst)}
    for e in engines.values():
        net.attach(e)
    for a, b in ((src, dst), (dst, src)):
        with a.store.transaction() as conn:
            peer_repos.insert_peer(
                conn,
                {
                    "node_id": b.node_id,
                    "endpoint": "in-process:0",
                    "status": "active",
                    "public_keys": keys_json(b.keys.public_keys()),
                    "added_at_ms": 0,
                },
            )
    big, whole = _issue(src, count, root / "ip-src")
    with src.store.read() as conn:  # what dst's sync would pull: src's signed batches
        payloads = [(bytes(r.payload), int(r.seq)) for r in repos.batches_after(conn, 0, 1000)]
    importer = BatchImporter(dst, TrustList(dst.store, dst.node_id))
    for payload, seq in payloads:
        importer.import_batch(src.node_id, payload, seq)
    buyer = dst.create_account(request_id="buyer").account.id
    return _Sender(engines[src.node_id], f"{dst.node_id}/{buyer}", whole, big), (src, dst)


def _run(root: Path, urls: list[str | None], n: int, warm: int) -> dict:
    """Samples of the three measurements taken in turn, so that load changes hit all alike."""
    from eap.node.crypto import create_ca
    from eap.node.federation.client import PeerClient
    from eap.node.federation.transfers import Transfers

    root.mkdir(parents=True)
    create_ca(root / "ca")
    src = _home(root, "src", "src.example", urls[0], root / "ca")
    dst = _home(root, "dst", "dst.example", urls[1], root / "ca")
    hop = _home(root, "hop", "hop.example", urls[4], root / "ca")
    for x, y in ((src, dst), (src, hop), (dst, hop)):
        _trust(x, y)
        _trust(y, x)
    count = 3 * (n + warm) + 2
    big, whole = _issue(src, count, root / "src")
    buyer = dst.create_account(request_id="buyer").account.id
    hop_owner = hop.create_account(request_id="owner").account.id
    dst.close()
    local, local_nodes = _in_process(root, (urls[2], urls[3]), count)
    procs = [_start(root / "src"), _start(root / "dst"), _start(root / "hop")]
    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "rpc",
            "whole",
            "partial",
            "in_process_whole",
            "in_process_partial",
            "custody_whole",
            "custody_partial",
        )
    }
    try:
        with PeerClient(src) as client, PeerClient(hop) as hop_client:
            src_engine = Transfers(src, client)
            # Stock of src's serials at hop (not measured): hop's transfers to dst then need
            # the issuer's custody hop (MoveCustody to src).
            third = [whole.pop() for _ in range(n + warm)]
            for bundle in third:
                src_engine.send(
                    bundle, to=f"{hop.node_id}/{hop_owner}", request_id=str(uuid.uuid4())
                )
            first, _ = src_engine.send(
                big,
                to=f"{hop.node_id}/{hop_owner}",
                wh=20 * (n + warm),
                request_id=str(uuid.uuid4()),
            )
            big = first.remainder.id
            remote = _Sender(src_engine, f"{dst.node_id}/{buyer}", whole, big)
            via = _Sender(
                Transfers(hop, hop_client), f"{dst.node_id}/{buyer}", third, first.exported.id
            )
            for mode in ("whole", "partial"):
                for i in range(warm + n):
                    got = (
                        _rpc_once(client, dst.node_id),
                        remote.one(mode),
                        local.one(mode),
                        via.one(mode),
                    )
                    if i >= warm:
                        samples["rpc"].append(got[0])
                        samples[mode].append(got[1])
                        samples[f"in_process_{mode}"].append(got[2])
                        samples[f"custody_{mode}"].append(got[3])
    finally:
        for p in procs:
            p.stop()
        src.close()
        hop.close()
        for node in local_nodes:
            node.close()
    result = {k: _stats(v) for k, v in samples.items()}
    whole_p50 = result["whole"]["p50_ms"]
    result["whole_vs_rpc"] = round(whole_p50 / result["rpc"]["p50_ms"], 2)
    result["whole_vs_in_process"] = round(whole_p50 / result["in_process_whole"]["p50_ms"], 2)
    result["custody_hop_ms"] = round(result["custody_whole"]["p50_ms"] - whole_p50, 2)
    result["meets_target"] = all(
        result[k]["p50_ms"] < TARGET_P50_MS
        for k in ("whole", "partial", "custody_whole", "custody_partial")
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="samples per measurement")
    parser.add_argument("--warm", type=int, default=10, help="warm-up calls per measurement")
    parser.add_argument(
        "--pg",
        default=os.environ.get("EAP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    results: dict = {"n": args.n, "target_p50_ms": TARGET_P50_MS}
    with tempfile.TemporaryDirectory(prefix="eap-bench-xfer-") as tmp:
        results["sqlite"] = _run(Path(tmp) / "sqlite", [None] * 5, args.n, args.warm)
        if not args.no_pg:
            urls = [fednodes.pg_database(args.pg) for _ in range(5)]
            try:
                if all(urls):
                    results["postgresql"] = _run(Path(tmp) / "pg", urls, args.n, args.warm)
            finally:
                for url in urls:
                    if url:
                        fednodes.drop_database(args.pg, url)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    _print(results)


def _print(r: dict) -> None:
    kinds = [k for k in ("sqlite", "postgresql") if k in r]
    print(
        f"cross-node transfer latency on loopback, {r['n']} samples each "
        f"(target p50 < {r['target_p50_ms']:g} ms)"
    )
    print(f"{'':44}" + "".join(f"{k + ' p50':>17}{k + ' p99':>17}" for k in kinds))
    rows = [
        ("signed RPC round trip (baseline)", lambda x: x["rpc"]),
        ("in-process transfer, whole (baseline)", lambda x: x["in_process_whole"]),
        ("in-process transfer, partial (baseline)", lambda x: x["in_process_partial"]),
        ("cross-node transfer, whole", lambda x: x["whole"]),
        ("cross-node transfer, partial (split)", lambda x: x["partial"]),
        ("third party's serials, whole (custody hop)", lambda x: x["custody_whole"]),
        ("third party's serials, partial (custody hop)", lambda x: x["custody_partial"]),
    ]
    for label, get in rows:
        print(
            f"{label + ' (ms)':44}"
            + "".join(f"{get(r[k])['p50_ms']:>17.2f}{get(r[k])['p99_ms']:>17.2f}" for k in kinds)
        )
    print(
        f"{'whole transfer p50 / signed RPC p50':44}"
        + "".join(f"{r[k]['whole_vs_rpc']:>17.2f}{'':>17}" for k in kinds)
    )
    print(
        f"{'whole transfer p50 / in-process p50':44}"
        + "".join(f"{r[k]['whole_vs_in_process']:>17.2f}{'':>17}" for k in kinds)
    )
    print(
        f"{'meets target':44}"
        + "".join(f"{'yes' if r[k]['meets_target'] else 'NO':>17}{'':>17}" for k in kinds)
    )


if __name__ == "__main__":
    main()
