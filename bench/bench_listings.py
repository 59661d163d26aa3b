"""Listings, status and bulk onboarding at city scale, each beside a raw baseline.

    python bench/bench_listings.py [--devices 1000] [--hours 100] [--json]
                                   [--pg postgresql://postgres@127.0.0.1:5432/postgres]

One run builds a node through the bulk paths only (``device import`` of ``--devices`` devices,
one meter CSV of ``--hours`` hourly readings per device, one ``issue``: devices x hours
bundles), then measures, in the same run:

* **device import**: devices/s of :func:`onboard_devices` (``Node.import_devices``, all
  checks) beside the raw bulk insert of the same rows (``bulk_insert``, rolled back);
* **status**: ``Node.status()`` (maintained totals) beside ``SELECT`` of the totals table and
  beside the full recount the node used to run;
* **listings**: ``eap-node bundles --json`` and ``bundles --owner ACCOUNT --json`` as a user
  runs them (a subprocess): time to the first JSON line and rows/s (the whole process, and
  from the first to the last line), beside a raw streaming ``SELECT`` of the same rows in the
  same order (rows only, no JSON);
* **pages**: the first and the last page (1,000 rows) of one owner's bundles through
  ``Node.list_bundles`` beside the raw page query.

:func:`onboard_devices` is the function other benches (bench_city.py) call to register many
devices quickly through the real bulk path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HEADER = "ref,capacity_w,source,technology,commissioned,lat,lon,zone,owner,meter_id,attestation"


def write_device_csv(path: Path, owners: list[str], n: int, prefix: str = "dev") -> Path:
    """A ``device import`` CSV of ``n`` solar devices (meter ids ``{prefix}-m{i}``)."""
    with path.open("w") as f:
        f.write(HEADER + "\n")
        for i in range(n):
            f.write(
                f"{prefix}-{i},5000,solar,photovoltaic,2020-01-01,{6 + (i % 100) / 100},"
                f"-75.5,CO-ANT,{owners[i % len(owners)]},{prefix}-m{i},agreement {i}\n"
            )
    return path


def onboard_devices(
    node, n: int, owners: list[str] | None = None, prefix: str = "dev", workdir: Path | None = None
) -> dict:
    """Register ``n`` devices through ``Node.import_devices`` (every check, one transaction);
    returns ``{"devices", "seconds", "per_s", "meter_ids"}``.  Creates one owner if none."""
    owners = owners or [node.create_account(request_id=f"bench-owner-{uuid.uuid4()}").account.id]
    folder = Path(workdir or tempfile.mkdtemp(prefix="eap-bench-dev-"))
    path = write_device_csv(folder / f"{prefix}-devices.csv", owners, n, prefix)
    t0 = time.perf_counter()
    res = node.import_devices(path, request_id=f"bench-import-{uuid.uuid4()}")
    secs = time.perf_counter() - t0
    return {
        "devices": res.devices,
        "seconds": secs,
        "per_s": res.devices / secs,
        "meter_ids": [f"{prefix}-m{i}" for i in range(n)],
    }


def _raw_device_insert(node, n: int) -> float:
    """The raw bulk insert of ``n`` device rows (no checks), rolled back: seconds."""
    from eap.node.store import schema as t
    from eap.node.store.engine import bulk_insert

    cols = {
        "id": [f"dev_raw{i}" for i in range(n)],
        "local_ref": [f"raw-{i}" for i in range(n)],
        "capacity_w": [5000] * n,
        "source": [1] * n,
        "technology": [1] * n,
        "commissioned_on": ["2020-01-01"] * n,
        "latitude": [6.2] * n,
        "longitude": [-75.5] * n,
        "zone": ["CO-ANT"] * n,
        "cell": ["N06W076"] * n,
        "owner": ["acct_raw"] * n,
        "meter_id": [f"raw-m{i}" for i in range(n)],
        "renewable_ppm": [10**6] * n,
        "carbon_mg": [0] * n,
        "attested_by": ["operator-signed"] * n,
        "attestation_ref": ["x"] * n,
        "registered_at_ms": [0] * n,
    }
    conn = node.store.engine.connect()
    tx = conn.begin()
    t0 = time.perf_counter()
    bulk_insert(conn, t.devices, cols)
    secs = time.perf_counter() - t0
    tx.rollback()
    conn.close()
    return secs


def _rpc_register(node, n: int, owner: str) -> float:
    """``RegisterDevices`` of ``n`` devices over a real loopback gRPC call: devices/s."""
    import grpc

    from eap.node.api.server import build_server
    from eap.v1 import node_api_pb2 as api
    from eap.v1 import node_api_pb2_grpc
    from eap.v1 import types_pb2 as pb

    regs = [
        api.DeviceRegistration(
            device=pb.Device(
                local_ref=f"rpc-{i}",
                capacity_w=5000,
                source=pb.ENERGY_SOURCE_SOLAR,
                technology=pb.TECHNOLOGY_PHOTOVOLTAIC,
                commissioned_on="2020-01-01",
                latitude=6.2,
                longitude=-75.5,
                zone="CO-ANT",
                owner=owner,
                meter_id=f"rpc-m{i}",
            ),
            attestation=pb.Attestation(scheme="operator-signed", evidence=f"agreement {i}"),
        )
        for i in range(n)
    ]
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = node_api_pb2_grpc.NodeApiStub(ch)
            md = (("authorization", f"Bearer {node.config.api_token()}"),)
            t0 = time.perf_counter()
            stub.RegisterDevices(
                api.RegisterDevicesRequest(request_id="rpc", devices=regs), metadata=md
            )
            return n / (time.perf_counter() - t0)
    finally:
        server.stop(0).wait()


def _meter_csv(path: Path, meters: list[str], hours: int) -> Path:
    start = dt.datetime(2024, 1, 1)
    with path.open("w") as f:
        f.write(
            "interval_start_datetime,interval_end_datetime,device_id,interval_usage,"
            "gross_net_indicator\n"
        )
        for h in range(hours):
            s = start + dt.timedelta(hours=h)
            a, b = f"{s:%Y-%m-%d %H:%M:%S}", f"{s + dt.timedelta(hours=1):%Y-%m-%d %H:%M:%S}"
            for m in meters:
                f.write(f"{a},{b},{m},{1000 + h},NET\n")
    return path


def _timed(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _cli_stream(home: Path, *args: str) -> dict:
    """Run ``eap-node ARGS --json``: seconds to the first line, total, lines, peak RSS (MiB)."""
    import os

    cmd = [sys.executable, "-m", "eap.node", *args, "--json", "--home", str(home)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    t_first = t_last = time.perf_counter() - t0
    n = 1 if first else 0
    for _ in proc.stdout:
        n += 1
        t_last = time.perf_counter() - t0
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    total = time.perf_counter() - t0
    return {
        "first_line_s": t_first,
        "total_s": total,
        "rows": n,
        "rows_per_s": n / total,
        # the stream once the process is up: first to last line (no start, no exit)
        "stream_rows_per_s": (n - 1) / (t_last - t_first) if t_last > t_first else 0.0,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def _cli_start(home: Path) -> float:
    """Seconds of ``eap-node status --json`` (interpreter start, imports, open, status)."""
    return _timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "eap.node", "status", "--json", "--home", str(home)],
            capture_output=True,
            check=True,
        ),
        3,
    )


def _raw_stream(node, where: str = "") -> dict:
    from sqlalchemy import text

    with node.store.engine.connect() as conn:
        t0 = time.perf_counter()
        res = conn.execution_options(yield_per=1000).execute(
            text(f"SELECT * FROM bundles {where} ORDER BY issuer, serial_start")
        )
        first = None
        n = 0
        for _row in res:
            if first is None:
                first = time.perf_counter() - t0
            n += 1
        total = time.perf_counter() - t0
    return {"first_row_s": first or 0.0, "total_s": total, "rows": n, "rows_per_s": n / total}


def run(db: str | None, devices: int, hours: int, workdir: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_node
    from sqlalchemy import text

    from eap.node.records.enums import Purpose
    from eap.node.store import repos, totals_repos

    node = make_node(workdir / "home", db)
    out: dict = {"database": node.store.dialect, "devices": devices, "hours": hours}
    owners = [node.create_account(request_id=f"o{i}").account.id for i in range(10)]
    onboard = onboard_devices(node, devices, owners, workdir=workdir)
    raw = _raw_device_insert(node, devices)
    out["device_import"] = {
        "rpc_per_s": _rpc_register(node, devices, owners[0]),
        "per_s": onboard["per_s"],
        "seconds": onboard["seconds"],
        "raw_insert_per_s": devices / raw,
    }
    t0 = time.perf_counter()
    node.import_readings(_meter_csv(workdir / "m.csv", onboard["meter_ids"], hours), request_id="m")
    out["meter_import_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    iss = node.issue(request_id="iss")
    out["issue_s"] = time.perf_counter() - t0
    out["bundles"] = iss.bundles

    def raw_totals():
        with node.store.read() as conn:
            conn.execute(text("SELECT name, value FROM totals")).all()

    def recount():
        with node.store.read() as conn:
            repos.full_totals(conn)

    def status():
        node.status()

    with node.store.read() as conn:
        assert totals_repos.totals(conn)["wh_issued"] == repos.full_totals(conn)["wh_issued"]
    out["status"] = {
        "status_s": _timed(status),
        "raw_select_s": _timed(raw_totals),
        "full_recount_s": _timed(recount, 2),
        "cli_s": _cli_start(node.config.home),
    }
    owner = owners[3]
    home = node.config.home
    out["list_all"] = {"cli": _cli_stream(home, "bundles"), "raw": _raw_stream(node)}
    out["list_owner"] = {
        "cli": _cli_stream(home, "bundles", "--owner", owner),
        "raw": _raw_stream(node, f"WHERE owner = '{owner}'"),
    }
    ids = [b.id for b in node.stream_bundles(purpose=Purpose.OPERATIONS, owner=owner)]
    last_token = ids[-1001] if len(ids) > 1000 else ""

    def page(token):
        return lambda: node.list_bundles(
            purpose=Purpose.OPERATIONS, owner=owner, page_size=1000, page_token=token
        )

    def raw_page(token):
        q = repos.bundles_page_query(owner=owner, status=None, device=None, after=token, limit=1000)

        def go():
            with node.store.read() as conn:
                conn.execute(q).all()

        return go

    out["pages"] = {
        "first_s": _timed(page("")),
        "last_s": _timed(page(last_token)),
        "raw_first_s": _timed(raw_page("")),
        "raw_last_s": _timed(raw_page(last_token)),
    }
    node.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=100)
    ap.add_argument("--pg", default="", help="Also run on this PostgreSQL server (admin URL).")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(run(None, a.devices, a.hours, Path(tmp) / "sqlite"))
        if a.pg:
            import psycopg

            name = f"eap_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(a.pg, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            try:
                results.append(
                    run(f"{a.pg.rsplit('/', 1)[0]}/{name}", a.devices, a.hours, Path(tmp) / "pg")
                )
            finally:
                with psycopg.connect(a.pg, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if a.json:
        print(json.dumps(results, indent=2))
        return
    print(json.dumps(results), file=sys.stderr)  # the raw figures, whatever the table shows
    for r in results:
        d, s, p = r["device_import"], r["status"], r["pages"]
        print(
            f"== {r['database']}: {r['devices']:,} devices x {r['hours']} h = "
            f"{r['bundles']:,} bundles (meter import {r['meter_import_s']:.1f} s, "
            f"issue {r['issue_s']:.1f} s)"
        )
        print(
            f"device import   {d['per_s']:>12,.0f} devices/s   raw insert "
            f"{d['raw_insert_per_s']:,.0f}/s   ratio {d['per_s'] / d['raw_insert_per_s']:.2f}"
            f"   RegisterDevices RPC {d['rpc_per_s']:,.0f}/s"
        )
        print(
            f"status          {s['status_s'] * 1e3:>12.2f} ms          raw SELECT "
            f"{s['raw_select_s'] * 1e3:.2f} ms   old full recount "
            f"{s['full_recount_s'] * 1e3:.0f} ms   `eap-node status` process "
            f"{s['cli_s'] * 1e3:.0f} ms"
        )
        for key, label in (("list_all", "bundles --json"), ("list_owner", "--owner --json")):
            c, w = r[key]["cli"], r[key]["raw"]
            print(
                f"{label:<15} {c['rows_per_s']:>12,.0f} rows/s      first line "
                f"{c['first_line_s'] * 1e3:.0f} ms ({c['rows']:,} rows, {c['total_s']:.1f} s; "
                f"{c['stream_rows_per_s']:,.0f} rows/s after the first line)"
                f"   raw SELECT {w['rows_per_s']:,.0f} rows/s, first row "
                f"{w['first_row_s'] * 1e3:.1f} ms"
            )
        print(
            f"owner page      first {p['first_s'] * 1e3:.1f} ms, last {p['last_s'] * 1e3:.1f} ms"
            f"   raw first {p['raw_first_s'] * 1e3:.1f} ms, last {p['raw_last_s'] * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
