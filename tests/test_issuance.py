"""Issuing everything pending: signed batches, keyset pages, replay, and crash recovery.

The crash tests run ``eap-node issue`` in a real process that dies (``os._exit``) at a named
crash point, between batches or inside a batch's transaction, then run it again and check
every reading was issued exactly once and every Wh is accounted for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from eap.node.domain import issuance
from eap.node.domain.node import Node
from eap.node.errors import InvalidArgument, NotFound
from eap.node.federation import crashpoints
from eap.node.store import custody_repos, repos
from eap.node.store import schema as t

CLI = [sys.executable, "-m", "eap.node"]
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
DEVICES = 4
HOURS = 60
#: Readings with Wh > 0 (zero-Wh readings are never pending).
LIVE = sum(1 for d in range(DEVICES) for h in range(HOURS) if (d * 7 + h * 13) % 200)


def write_csv(path: Path, devices: int = DEVICES, hours: int = HOURS, first_hour: int = 0) -> int:
    """Hourly readings of meters m0..m{devices-1}; returns the total Wh."""
    lines = [
        "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator"
    ]
    total = 0
    for d in range(devices):
        for h in range(first_hour, first_hour + hours):
            wh = (d * 7 + h * 13) % 200  # some zero-Wh hours too
            total += wh
            lines.append(f"{_ts(T0 + 3600 * h)},{_ts(T0 + 3600 * (h + 1))},m{d},{wh},NET")
    path.write_text("\n".join(lines) + "\n")
    return total


def _ts(unix: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def register(node, devices: int = DEVICES) -> str:
    owner = node.create_account(request_id="acct", label="co-op").account.id
    for d in range(devices):
        node.register_device(
            request_id=f"dev-{d}",
            local_ref=f"roof-{d}",
            capacity_w=1000,
            source="solar",
            technology="photovoltaic",
            commissioned_on="2020-05-01",
            latitude=6.2442,
            longitude=-75.5812,
            zone="CO-ANT",
            owner=owner,
            meter_id=f"m{d}",
            attestation_evidence="agreement",
        )
    return owner


def ledger_state(node) -> dict:
    """Per reading: issued in full? Per (device, start): how many bundles? Totals."""
    with node.store.read() as conn:
        r = t.readings.c
        readings = conn.execute(select(r.device_id, r.interval_start, r.wh, r.issued_wh)).all()
        grouped: dict = {}
        for b in repos.all_bundles(conn):
            n, wh = grouped.get((b.device_id, b.interval_start), (0, 0))
            grouped[b.device_id, b.interval_start] = (n + 1, wh + b.wh)
        per_key = [(k[0], k[1], n, wh) for k, (n, wh) in grouped.items()]
        batch_wh = conn.execute(select(func.coalesce(func.sum(t.batches.c.wh), 0))).scalar_one()
        batch_count = conn.execute(
            select(func.coalesce(func.sum(t.batches.c.count), 0))
        ).scalar_one()
        custody_wh = conn.execute(
            select(func.coalesce(func.sum(t.custody.c.serial_end - t.custody.c.serial_start), 0))
        ).scalar_one()
    return {
        "readings": {(x.device_id, x.interval_start): (x.wh, x.issued_wh) for x in readings},
        "bundles": {(x[0], x[1]): (x[2], int(x[3])) for x in per_key},
        "batch_wh": int(batch_wh),
        "batch_count": int(batch_count),
        "custody_wh": int(custody_wh),
    }


def assert_issued_exactly_once(node, total_wh: int) -> None:
    s = ledger_state(node)
    live = {k: wh for k, (wh, _) in s["readings"].items() if wh > 0}
    assert all(issued == wh for wh, issued in s["readings"].values())
    assert set(s["bundles"]) == set(live)
    assert all(count == 1 for count, _ in s["bundles"].values())
    assert {k: wh for k, (_, wh) in s["bundles"].items()} == live
    assert sum(live.values()) == total_wh == s["batch_wh"] == s["custody_wh"]
    assert s["batch_count"] == len(live)


@pytest.fixture
def loaded(node, tmp_path):
    register(node)
    total = write_csv(tmp_path / "m.csv")
    node.import_readings(tmp_path / "m.csv", request_id="imp")
    return node, total


def test_issue_all_in_batches_issues_everything_once(loaded):
    node, total = loaded
    seen = []
    res = node.issue_all(request_id="all", batch_size=50, progress=lambda d, n: seen.append((d, n)))
    assert res.wh == total and res.bundles == LIVE
    assert res.batches == -(-LIVE // 50)
    assert res.batch_seqs == list(range(1, res.batches + 1))
    assert seen[0] == (0, LIVE) and seen[-1] == (LIVE, LIVE)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert_issued_exactly_once(node, total)
    assert node.issue_all(request_id="again").batches == 0
    # a replay answers with the first run's batches and issues nothing
    assert node.issue_all(request_id="all", batch_size=50).to_dict() == res.to_dict()
    assert_issued_exactly_once(node, total)


def test_pending_readings_are_counted_only_for_a_progress_bar(loaded, monkeypatch):
    """Counting what is pending scans every reading; without a progress callback (a script,
    ``--json``, a pipe) a run does not count."""
    node, total = loaded
    counts = []
    original = repos.count_pending
    monkeypatch.setattr(
        repos, "count_pending", lambda *a, **k: counts.append(1) or original(*a, **k)
    )
    res = node.issue_all(request_id="quiet", batch_size=50)
    assert res.bundles == LIVE and counts == []
    assert_issued_exactly_once(node, total)
    seen = []
    again = node.issue_all(request_id="shown", progress=lambda d, n: seen.append((d, n)))
    assert again.batches == 0
    assert counts == [1] and seen == [(0, 0)]


def test_new_readings_after_a_run_need_a_new_request(loaded, tmp_path):
    node, total = loaded
    node.issue_all(request_id="all", batch_size=100)
    more = write_csv(tmp_path / "more.csv", first_hour=HOURS, hours=10)
    node.import_readings(tmp_path / "more.csv", request_id="imp-2")
    assert node.issue_all(request_id="all", batch_size=100).wh == total  # replay
    assert node.issue_all(request_id="later", batch_size=100).wh == more
    assert_issued_exactly_once(node, total + more)


def test_device_and_since_filters(loaded):
    node, total = loaded
    first = node.issue_all(request_id="one", device="roof-1", since=T0 + 3600 * 10, batch_size=7)
    expected = sum((1 * 7 + h * 13) % 200 for h in range(10, HOURS))
    assert first.wh == expected
    rest = node.issue_all(request_id="rest")
    assert first.wh + rest.wh == total
    assert_issued_exactly_once(node, total)


@pytest.mark.parametrize("size", [0, -1, 100_001])
def test_bad_batch_size_changes_nothing(loaded, size):
    node, _ = loaded
    with pytest.raises(InvalidArgument) as e:
        node.issue_all(request_id="x", batch_size=size)
    assert e.value.violations[0].field == "batch_size"
    assert ledger_state(node)["batch_count"] == 0


def test_unknown_device_and_bad_since(loaded):
    node, _ = loaded
    with pytest.raises(NotFound):
        node.issue_all(request_id="x", device="nope")
    with pytest.raises(InvalidArgument):
        node.issue_all(request_id="y", since=-1)
    assert ledger_state(node)["batch_count"] == 0


def test_issue_rpc_path_issues_one_bounded_batch(loaded):
    node, total = loaded
    node.config.max_batch_records = 100
    done = 0
    calls = 0
    while (res := node.issue(request_id=f"rpc-{calls}")).batch_seq:
        assert res.bundles <= 100
        done += res.wh
        calls += 1
    assert done == total and calls == -(-LIVE // 100)
    assert_issued_exactly_once(node, total)


def test_in_process_crash_inside_a_batch_rolls_it_back(loaded):
    node, total = loaded
    crashpoints.arm("issue.in_batch_txn")
    try:
        with pytest.raises(crashpoints.SimulatedCrash):
            node.issue_all(request_id="run", batch_size=64)
    finally:
        crashpoints.disarm()
    assert ledger_state(node)["batch_count"] == 0
    res = node.issue_all(request_id="run", batch_size=64)
    assert res.wh == total
    assert_issued_exactly_once(node, total)


def test_batches_are_cut_in_device_order_from_windows_of_pending_readings(loaded, monkeypatch):
    node, total = loaded
    monkeypatch.setattr(issuance, "WINDOW_BATCHES", 3)  # windows of 3 batches: several reads
    reads = []
    original = repos.pending_window
    monkeypatch.setattr(
        repos, "pending_window", lambda *a, **k: reads.append(a[1]) or original(*a, **k)
    )
    res = node.issue_all(request_id="all", batch_size=25)
    assert res.wh == total and res.bundles == LIVE
    assert len(reads) == LIVE // 75 + 1  # the last read finds the window short
    assert reads == sorted(reads)  # keyset by reading id, never from the start again
    assert_issued_exactly_once(node, total)
    with node.store.read() as conn:
        rows = [
            SimpleNamespace(
                batch_seq=custody_repos.batch_seq_of(conn, b.id),
                device_id=b.device_id,
                interval_start=b.interval_start,
            )
            for b in repos.all_bundles(conn)
        ]
    # within a batch, serials follow (device, hour); a batch spans at most two devices of its
    # window, where id order would give it every device of the import's chunk
    for seq in {r.batch_seq for r in rows}:
        batch = [(r.device_id, r.interval_start) for r in rows if r.batch_seq == seq]
        assert batch == sorted(batch)
        assert len({d for d, _ in batch}) <= 2


def test_a_rival_issuer_between_read_and_claim_makes_the_batch_read_again(loaded, monkeypatch):
    """Another issuer (a replica, or an ``IssueRecords`` call) takes readings after the run read
    its window: the run's batch claims fewer than it read, rolls back, reads again; every
    reading is still issued exactly once."""
    node, total = loaded
    rivals = []
    original = repos.PendingReadings.device_major

    def then_a_rival(self):
        if not rivals:
            node.config.max_batch_records = 30
            rivals.append(node.issue(request_id="rival"))
            node.config.max_batch_records = 100_000
        return original(self)

    monkeypatch.setattr(repos.PendingReadings, "device_major", then_a_rival)
    res = node.issue_all(request_id="run", batch_size=50)
    assert rivals[0].bundles == 30
    assert res.bundles == LIVE - 30 and res.wh + rivals[0].wh == total
    assert res.batch_seqs == list(range(2, 2 + res.batches))  # the rolled-back batch left none
    assert_issued_exactly_once(node, total)


@pytest.mark.parametrize("fetch", [1, 7, 50_000])
def test_pending_window_reads_in_pages_as_one_window(loaded, fetch, monkeypatch):
    node, _ = loaded
    monkeypatch.setattr(repos, "PENDING_FETCH", fetch)
    with node.store.read() as conn:
        rows = repos.pending_page(conn, 5, 100, None, T0 + 3600, lock=False)
        window = repos.pending_window(conn, 5, 100, None, T0 + 3600)
    expect = repos.PendingReadings.of_rows(rows)
    assert window.ids.tolist() == expect.ids.tolist()
    assert [window.devices[c] for c in window.device] == [r.device_id for r in rows]
    for f in ("starts", "ends", "wh", "issued"):
        assert getattr(window, f).tolist() == getattr(expect, f).tolist()


def _cli(home: Path, *args: str, crash: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != crashpoints.ENV}
    if crash:
        env[crashpoints.ENV] = crash
    return subprocess.run(
        [*CLI, *args, "--home", str(home)], capture_output=True, text=True, timeout=180, env=env
    )


@pytest.mark.parametrize(
    "crash",
    ["issue.after_batch_commit@2", "issue.in_batch_txn@3", "issue.in_batch_txn@1"],
)
@pytest.mark.parametrize("same_request", [True, False])
def test_process_killed_mid_run_then_rerun_issues_each_reading_once(
    node, tmp_path, crash, same_request
):
    register(node)
    total = write_csv(tmp_path / "m.csv")
    node.import_readings(tmp_path / "m.csv", request_id="imp")
    home = node.config.home
    node.close()
    died = _cli(home, "issue", "--batch-size", "40", "--request-id", "run-1", "--json", crash=crash)
    assert died.returncode == crashpoints.EXIT_CODE, died.stderr
    again = _cli(
        home,
        "issue",
        "--batch-size",
        "40",
        "--request-id",
        "run-1" if same_request else "run-2",
        "--json",
    )
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    reopened = Node.open(home)
    try:
        assert_issued_exactly_once(reopened, total)
        before = ledger_state(reopened)
    finally:
        reopened.close()
    if same_request:  # the committed batches are replayed, the rest issued
        assert out["wh"] == total
        assert out["batch_seqs"] == list(range(1, len(out["batch_seqs"]) + 1))
    else:  # a new request issues only what the dead run left pending
        committed = 2 if crash.startswith("issue.after_batch_commit") else int(crash[-1]) - 1
        assert out["batches"] == -(-LIVE // 40) - committed
        assert out["wh"] <= total
    assert before["batch_wh"] == total


def test_cli_issue_then_bundles_json_streams_across_pages(tmp_path):
    from support import make_node

    node = make_node(tmp_path / "home")
    register(node)
    total = write_csv(tmp_path / "m.csv", hours=300)  # 1,200 readings: more than one page
    node.import_readings(tmp_path / "m.csv", request_id="imp")
    home = node.config.home
    with node.store.read() as conn:
        owner = conn.execute(select(t.devices.c.owner)).scalars().first()
    node.close()
    issued = _cli(home, "issue", "--batch-size", "500", "--json")
    assert issued.returncode == 0, issued.stderr
    res = json.loads(issued.stdout)
    assert res["wh"] == total and res["batches"] == -(-res["bundles"] // 500)
    listed = _cli(home, "bundles", "--owner", owner, "--json")
    assert listed.returncode == 0, listed.stderr
    items = [json.loads(line) for line in listed.stdout.splitlines()]  # JSON Lines
    assert len(items) == res["bundles"] > 1000
    assert len({b["id"] for b in items}) == len(items)
    assert sum(b["serial_end"] - b["serial_start"] for b in items) == total
    assert len(_cli(home, "bundles", "--json", "--limit", "7").stdout.splitlines()) == 7
    none = _cli(home, "bundles", "--json", "--device", "no-such-device")
    assert none.returncode == 0 and none.stdout == ""


def test_the_issuance_claim_never_scans_the_whole_readings_table_on_postgres(pg_url):
    """A batch claims its readings as ranges of the primary key, however large the table:
    ``id = ANY(<a batch of ids>)`` was planned as a scan of every reading ever stored."""
    from eap.node.store import open_store

    store = open_store(pg_url)
    with store.engine.connect() as conn:
        conn.exec_driver_sql(
            "INSERT INTO readings (device_id, interval_start, interval_end, wh) "
            "SELECT 'dev-' || (g %% 50), g * 3600, g * 3600 + 3600, 5 "
            "FROM generate_series(1, 40000) g"
        )
        conn.exec_driver_sql("ANALYZE readings")
        conn.commit()
        ids = [r for (r,) in conn.exec_driver_sql("SELECT id FROM readings ORDER BY id")]
        conn.commit()
        batch = ids[5000:9000] + ids[20000:21000:2] + ids[30000:30010]  # runs and singles
        scans = (
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'readings'"
        )
        # the session's counts not flushed yet, then within this one transaction
        seq_before, index_before = conn.exec_driver_sql(scans).one()
        assert repos.claim_pending(conn, batch) == len(batch)
        seq_after, index_after = conn.exec_driver_sql(scans).one()
        conn.rollback()
    store.dispose()
    seq_scans, index_scans = seq_after - seq_before, index_after - index_before
    assert seq_scans == 0 and index_scans > 0
