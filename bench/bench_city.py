"""A city utility's month: register devices, import their hourly readings, issue, read back.

Usage::

    python bench/bench_city.py [--devices N] [--hours H] [--db sqlite,postgres]
                               [--batch-size N] [--json]

Defaults (200 devices x 48 h) are a smoke test; the city-scale issue's targets are
``--devices 10000 --hours 720`` (7.2 M readings) and ``--devices 100000 --hours 24``.
Each backend gets a fresh node and a fresh database (PostgreSQL: a new database on the local
server, dropped afterwards).  Every step runs in its own process, as an operator would run
it (the ``eap-node`` CLI where there is a command), timed wall-clock from the outside and
with the process's peak RSS (``VmHWM`` of its own address space, written at exit: not
inflated by the parent it was forked from); each is set beside a baseline of the same rows in
the same run where one makes sense:

* **register devices**: from one devices file (:func:`register_devices`: the bulk import of
  ``eap-node device import``, every check of a single registration, one transaction);
* **meter import**: ``eap-node meter import FILE`` vs a raw bulk insert of the same readings
  (the store's bulk path, pre-built arrays, fresh database);
* **re-import**: the same unchanged file again, vs the first import;
* **issue**: ``eap-node issue`` (validate, hash, sign, persist, all pending) vs a raw bulk
  insert of as many bundle rows;
* **bundles --owner X --json**: time to the first line, rows/s (the whole process, and after
  the first line: the stream once the process is up), vs a raw SELECT of the same bundles
  streamed out as JSON Lines the plainest way: rows as mappings, ``json.dumps`` per row in
  Python (the node's lines are rendered by the database, :mod:`eap.node.store.listing_repos`);
* **status**: ``eap-node status --json``;
* **page first / page last**: one page of 100 bundles (``list_bundles``) at the start and at
  the end of the id order, vs a raw ``SELECT ... LIMIT 100`` from the same place.

Prints a Markdown table (``--json``: the figures as JSON).  Ratios are step rate / baseline
rate (for times without a count: baseline time / step time); above 1 is faster.  ``rows/s
after 1st line`` is (lines - 1) / (last line - first line) for the streamed listings: the
stream once the process is up, without its start and exit.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
DEVICES_PER_OWNER = 100
PG_ADMIN = os.environ.get("EAP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
#: Runs a module as ``python -m`` would and, at exit, writes the process's peak RSS (VmHWM of
#: its own address space, so not inflated by the parent it was forked from) to a file.
_WRAP = (
    "import atexit, os, runpy, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            open(os.environ['BENCH_CITY_HWM'], 'w').write(line.split()[1])\n"
    "atexit.register(_hwm)\n"
    "mod, sys.argv = sys.argv[1], sys.argv[1:]\n"
    "runpy.run_module(mod, run_name='__main__', alter_sys=True)\n"
)
CLI = [sys.executable, "-c", _WRAP, "eap.node"]


# -- data ------------------------------------------------------------------------------------


def wh_of(device: int, hour: int) -> int:
    return (device * 7 + hour * 13) % 200


def write_readings(path: Path, devices: int, hours: int) -> int:
    """The registry's hourly CSV layout, hour by hour (as a utility exports a day)."""
    ts = [
        dt.datetime.fromtimestamp(T0 + 3600 * h, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        for h in range(hours + 1)
    ]
    with open(path, "w") as f:
        f.write(
            "interval_start_datetime,interval_end_datetime,device_id,interval_usage,"
            "gross_net_indicator\n"
        )
        for h in range(hours):
            a, b = ts[h], ts[h + 1]
            f.write("".join(f"{a},{b},meter-{d:07d},{wh_of(d, h)},NET\n" for d in range(devices)))
    return devices * hours


def write_devices(path: Path, devices: int) -> None:
    """One row per device; ``owner`` is the index of its owner account."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "local_ref",
                "meter_id",
                "capacity_w",
                "source",
                "technology",
                "commissioned_on",
                "latitude",
                "longitude",
                "zone",
                "owner",
            ]
        )
        for d in range(devices):
            w.writerow(
                [
                    f"roof-{d}",
                    f"meter-{d:07d}",
                    1000,
                    "solar",
                    "photovoltaic",
                    "2020-05-01",
                    6.2442,
                    -75.5812,
                    "CO-ANT",
                    d // DEVICES_PER_OWNER,
                ]
            )


# -- steps (each runs in its own process: ``bench_city.py --step NAME ...``) ----------------


def register_devices(node, devices_file: Path) -> int:
    """Accounts, then every device of the devices file in one bulk import
    (``Node.import_devices``, the path of ``eap-node device import``: every check of a single
    registration, one transaction)."""
    owners: dict[str, str] = {}
    rows = []
    with open(devices_file, newline="") as f:
        for row in csv.DictReader(f):
            key = row["owner"]
            if key not in owners:
                owners[key] = node.create_account(
                    request_id=f"acct-{key}", label=f"owner {key}"
                ).account.id
            rows.append(row)
    bulk = devices_file.with_name(devices_file.stem + "-import.csv")
    with open(bulk, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ref", "capacity_w", "source", "technology", "commissioned", "lat", "lon",
                    "zone", "owner", "meter_id", "attestation"])
        for r in rows:
            w.writerow([r["local_ref"], r["capacity_w"], r["source"], r["technology"],
                        r["commissioned_on"], r["latitude"], r["longitude"], r["zone"],
                        owners[r["owner"]], r["meter_id"], "grid-connection agreement"])
    return node.import_devices(bulk, request_id="bench-devices").devices


def _step(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from sqlalchemy import select

    from eap.node.domain.node import Node
    from eap.node.records.enums import Purpose
    from eap.node.store import open_store, run_repos
    from eap.node.store import schema as t
    from eap.node.store.engine import bulk_insert

    if args.step == "register":
        node = Node.open(Path(args.home))
        t0 = time.perf_counter()
        n = register_devices(node, Path(args.file))
        return {"items": n, "seconds": time.perf_counter() - t0}
    if args.step in ("raw_readings", "raw_bundles"):
        store = open_store(args.url, migrate=True)
        d, h = args.devices, args.hours
        # ids as long as the node's own (dev_ / acct_ and 26 characters)
        dev = np.array([f"dev_{i:026d}" for i in range(d)], dtype=object)
        step = max(1, 200_000 // d) * d
        n = d * h
        t0 = time.perf_counter()
        for lo in range(0, n, step):
            k = np.arange(lo, min(n, lo + step))
            hour, devi = k // d, k % d
            order = np.lexsort((hour, devi))  # by device, as the importer stores a chunk
            k, hour, devi = k[order], hour[order], devi[order]
            if args.step == "raw_bundles":  # zero-Wh readings issue no record
                live = (devi * 7 + hour * 13) % 200 != 0
                k, hour, devi = k[live], hour[live], devi[live]
            start = T0 + 3600 * hour
            with store.transaction() as conn:
                if args.step == "raw_readings":
                    bulk_insert(
                        conn,
                        t.readings,
                        {
                            "device_id": dev[devi],
                            "interval_start": start,
                            "interval_end": start + 3600,
                            "wh": (devi * 7 + hour * 13) % 200,
                            "issued_wh": np.zeros(len(k), dtype=np.int64),
                        },
                    )
                else:
                    bulk_insert(
                        conn,
                        t.bundles,
                        {
                            "id": [f"bench.example/{i * 1000}-{i * 1000 + 5}" for i in k.tolist()],
                            "issuer": ["bench.example"] * len(k),
                            "serial_start": k * 1000,
                            "serial_end": k * 1000 + 5,
                            "device_id": dev[devi],
                            "interval_start": start,
                            "interval_end": start + 3600,
                            "source": np.ones(len(k), np.int64),
                            "technology": np.ones(len(k), np.int64),
                            "renewable_ppm": np.full(len(k), 1_000_000),
                            "carbon_mg": np.zeros(len(k), np.int64),
                            "zone": ["CO-ANT"] * len(k),
                            "cell": ["N06W076"] * len(k),
                            "owner": [f"acct_{i // DEVICES_PER_OWNER:026d}" for i in devi.tolist()],
                            "status": np.ones(len(k), np.int64),
                            "parent_id": [None] * len(k),
                            "lineage_hash": ["00" * 32] * len(k),
                            "issued_at_ms": np.full(len(k), 1),
                            "batch_seq": np.ones(len(k), np.int64),
                            "version": np.zeros(len(k), np.int64),
                        },
                    )
        out = {"items": n, "seconds": time.perf_counter() - t0}
        store.engine.dispose()
        return out
    if args.step == "raw_select":  # bundles of one owner, streamed as JSON Lines to stdout
        store = open_store(args.url, migrate=False)
        c = t.bundles.c
        n = 0
        with store.read() as conn:
            result = conn.execution_options(yield_per=10_000).execute(
                select(t.bundles).where(c.owner == args.owner).order_by(c.id)
            )
            out = sys.stdout
            for row in result:
                m = row._mapping
                out.write(
                    json.dumps({k: (v.hex() if isinstance(v, bytes) else v) for k, v in m.items()})
                    + "\n"
                )
                n += 1
        out.flush()
        return {"items": n}
    if args.step in ("page_first", "page_last", "raw_page_first", "raw_page_last"):
        raw = args.step.startswith("raw")
        node = None if raw else Node.open(Path(args.home))
        store = open_store(args.url, migrate=False) if raw else node.store
        c = t.bundles.c
        token = ""
        if args.step.endswith("last"):
            if raw:  # the raw baseline pages the row-per-record table by id
                with store.read() as conn:
                    ids = conn.execute(select(c.id).order_by(c.id.desc()).limit(101)).scalars()
                    ids = ids.all()
            else:  # the node pages in serial order: here all in runs, the last run's records
                with store.read() as conn:
                    last = conn.execute(
                        select(t.bundle_runs.c.issuer, t.bundle_runs.c.serial_start)
                        .order_by(t.bundle_runs.c.issuer.desc(),
                                  t.bundle_runs.c.serial_start.desc()).limit(1)
                    ).first()
                    run = run_repos.run_at(conn, last.issuer, last.serial_start)
                    ids = [b.id for b in run.bundles(range(run.n))][-101:][::-1]
            token = ids[-1] if len(ids) == 101 else ""
        t0 = time.perf_counter()
        if raw:
            with store.read() as conn:
                items = conn.execute(
                    select(t.bundles).where(c.id > token).order_by(c.id).limit(100)
                ).all()
        else:
            items = node.list_bundles(
                purpose=Purpose.OPERATIONS, page_size=100, page_token=token
            ).items
        return {"items": len(items), "seconds": time.perf_counter() - t0}
    raise SystemExit(f"unknown step {args.step}")


# -- the parent: runs every step in a child process ------------------------------------------


def _child_env(extra: dict | None, hwm: str) -> dict[str, str]:
    """The environment of a step: this one, but with bytecode caching on, as an installed
    node has it (an environment with PYTHONDONTWRITEBYTECODE set would otherwise recompile
    the project's modules at every CLI start, about 0.2 s)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **(extra or {}), "BENCH_CITY_HWM": hwm}


def run(cmd: list[str], *, first_line: bool = False, env: dict | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall time, times to the first and the last stdout line, peak RSS (MB), its
    JSON."""
    hwm = tempfile.NamedTemporaryFile(prefix="bench-city-hwm-", delete=False)  # noqa: SIM115
    hwm.close()
    errors = tempfile.TemporaryFile()  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=errors,
        env=_child_env(env, hwm.name),
    )
    first = last = None
    lines = 0
    chunks = []
    assert proc.stdout is not None
    for line in proc.stdout:
        last = time.perf_counter() - t0
        if first is None:
            first = last
        lines += 1
        if not first_line:
            chunks.append(line)
    wall = time.perf_counter() - t0
    _, status, _ = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    text = Path(hwm.name).read_text().strip()
    os.unlink(hwm.name)
    rss_mb = int(text) / 1024 if text else 0.0
    errors.seek(0)
    err = errors.read()
    errors.close()
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} failed ({code}): {err.decode()[-2000:]}")
    body = b"".join(chunks).decode()
    data: Any = None
    if body and not first_line:
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            data = None
    return {
        "wall": wall,
        "first": first,
        "last": last,
        "lines": lines,
        "rss_mb": rss_mb,
        "data": data,
    }


def _self(*args: str) -> list[str]:
    wrap = _WRAP.replace(
        "run_module(mod, run_name='__main__', alter_sys=True)", "run_path(mod, run_name='__main__')"
    )
    return [sys.executable, "-c", wrap, str(Path(__file__).resolve()), *args]


def bench_backend(
    kind: str,
    work: Path,
    devices: int,
    hours: int,
    batch: int | None,
    readings_csv: Path,
    devices_csv: Path,
    n: int,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    dbs: list[str] = []

    def url_for(tag: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{work / f'{tag}.db'}"
        import psycopg

        name = f"bench_city_{tag}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        dbs.append(name)
        return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"

    def add(
        step: str,
        items: int | None,
        seconds: float,
        rss: float,
        base: float | None,
        first: float | None = None,
        base_items: int | None = None,
        last: float | None = None,
    ) -> None:
        rate = items / seconds if items and seconds else None
        after = last - first if first is not None and last is not None else 0.0
        stream = (items - 1) / after if items and items > 1 and after > 0 else None
        if base is None:
            ratio = None
        elif items:
            ratio = rate / ((base_items or items) / base) if base else None
        else:
            ratio = base / seconds if seconds else None
        rows.append(
            {
                "db": kind,
                "step": step,
                "items": items,
                "seconds": round(seconds, 3),
                "rate_per_s": round(rate) if rate else None,
                "first_line_s": round(first, 3) if first is not None else None,
                "stream_rate_per_s": round(stream) if stream else None,
                "baseline_s": round(base, 3) if base is not None else None,
                "ratio": round(ratio, 2) if ratio is not None else None,
                "peak_rss_mb": round(rss),
            }
        )

    try:
        from eap.node.config import create_home
        from eap.node.domain.node import Node

        home = work / f"home-{kind}"
        db_url = url_for("node")
        Node.initialise(
            create_home(home, "city.example", "CO-ANT", db_url, operator_signed=True)
        ).close()
        h = ["--home", str(home)]
        r = run(_self("--step", "register", "--file", str(devices_csv), *h))
        add("register devices", devices, r["data"]["seconds"], r["rss_mb"], None)

        raw = run(
            _self(
                "--step",
                "raw_readings",
                "--url",
                url_for("raw_readings"),
                "--devices",
                str(devices),
                "--hours",
                str(hours),
            )
        )
        imp = run([*CLI, "meter", "import", str(readings_csv), "--json", *h])
        assert imp["data"]["readings"] == n, imp["data"]
        add("meter import", n, imp["wall"], imp["rss_mb"], raw["data"]["seconds"])
        add("  raw bulk insert (baseline)", n, raw["data"]["seconds"], raw["rss_mb"], None)
        again = run([*CLI, "meter", "import", str(readings_csv), "--json", *h])
        assert again["data"]["unchanged"] == n and again["data"]["readings"] == 0, again["data"]
        add("re-import unchanged", n, again["wall"], again["rss_mb"], imp["wall"])

        live = sum(1 for d in range(devices) for hh in range(hours) if wh_of(d, hh))
        raw_b_url = url_for("raw_bundles")  # also read by the listing and page baselines
        raw_b = run(
            _self(
                "--step",
                "raw_bundles",
                "--url",
                raw_b_url,
                "--devices",
                str(devices),
                "--hours",
                str(hours),
            )
        )
        extra = ["--batch-size", str(batch)] if batch else []
        iss = run([*CLI, "issue", "--json", *extra, *h])
        assert iss["data"]["bundles"] == live, iss["data"]
        raw_s = raw_b["data"]["seconds"]
        add("issue all", live, iss["wall"], iss["rss_mb"], raw_s, base_items=live)
        add("  raw bundle insert (baseline)", live, raw_b["data"]["seconds"], raw_b["rss_mb"], None)

        from eap.node.records.enums import Purpose

        node = Node.open(home)  # the owner of the first device
        owner = node.list_devices(purpose=Purpose.OPERATIONS, page_size=1).items[0].owner
        node.close()
        lst = run([*CLI, "bundles", "--owner", owner, "--json", *h])
        got = lst["lines"]  # JSON Lines: one bundle per line
        # The raw baselines read the row-per-record table the raw bundle insert built (the
        # node keeps unchanged issued records as runs): the first owner's bundles there.
        raw_owner = f"acct_{0:026d}"
        sel = run(
            _self("--step", "raw_select", "--url", raw_b_url, "--owner", raw_owner),
            first_line=True,
        )
        add(
            "bundles --owner X --json",
            got,
            lst["wall"],
            lst["rss_mb"],
            sel["wall"],
            first=lst["first"],
            base_items=sel["lines"],
            last=lst["last"],
        )
        add(
            "  raw SELECT to JSON Lines (baseline)",
            sel["lines"],
            sel["wall"],
            sel["rss_mb"],
            None,
            first=sel["first"],
            last=sel["last"],
        )
        st = run([*CLI, "status", "--json", *h])
        add("status", None, st["wall"], st["rss_mb"], None)
        for where in ("first", "last"):
            pg = run(_self("--step", f"page_{where}", *h))
            rp = run(_self("--step", f"raw_page_{where}", "--url", raw_b_url, *h))
            add(
                f"page of 100 ({where})",
                pg["data"]["items"],
                pg["data"]["seconds"],
                pg["rss_mb"],
                rp["data"]["seconds"],
            )
    finally:
        if dbs:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                for name in dbs:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return rows


def markdown(rows: list[dict[str, Any]], devices: int, hours: int) -> str:
    head = (
        f"### bench_city: {devices:,} devices x {hours:,} h = {devices * hours:,} readings\n\n"
        "| db | step | items | s | items/s | first line s | rows/s after 1st line | baseline s "
        "| ratio | peak RSS MB |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )

    def f(v: Any) -> str:
        if v is None:
            return "—"
        return f"{v:,}" if isinstance(v, int) else str(v)

    return head + "\n".join(
        f"| {r['db']} | {r['step']} | {f(r['items'])} | {f(r['seconds'])} | {f(r['rate_per_s'])} "
        f"| {f(r['first_line_s'])} | {f(r['stream_rate_per_s'])} | {f(r['baseline_s'])} "
        f"| {f(r['ratio'])} "
        f"| {f(r['peak_rss_mb'])} |"
        for r in rows
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--hours", type=int, default=48)
    p.add_argument(
        "--db", default="sqlite,postgres", help="sqlite, postgres or sqlite,postgres (default)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="issue --batch-size")
    p.add_argument("--json", action="store_true")
    p.add_argument("--workdir", default=None, help="Keep files here (default: a temp dir).")
    p.add_argument("--step", help=argparse.SUPPRESS)
    for hidden in ("--home", "--file", "--url", "--owner"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:
        result = _step(args)
        if args.step != "raw_select":  # that one's stdout is the JSON Lines
            print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        readings_csv, devices_csv = work / "readings.csv", work / "devices.csv"
        n = write_readings(readings_csv, args.devices, args.hours)
        write_devices(devices_csv, args.devices)
        rows: list[dict[str, Any]] = []
        for kind in [k.strip() for k in args.db.split(",") if k.strip()]:
            if kind not in ("sqlite", "postgres"):
                raise SystemExit(f"--db: unknown backend {kind!r}")
            rows += bench_backend(
                kind, work, args.devices, args.hours, args.batch_size, readings_csv, devices_csv, n
            )
    if args.json:
        print(
            json.dumps(
                {"devices": args.devices, "hours": args.hours, "readings": n, "rows": rows},
                indent=2,
            )
        )
    else:
        print(markdown(rows, args.devices, args.hours))


if __name__ == "__main__":
    main()
