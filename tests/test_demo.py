"""``eap-node demo``: three node processes over real sockets, checked from its JSON summary."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from eap.node import demo
from eap.node.config import NodeConfig
from eap.node.meters import SAMPLE_GREENBUTTON

CLI = [sys.executable, "-m", "eap.node"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One demo run, its workdir kept (``--workdir``) for inspection."""
    workdir = tmp_path_factory.mktemp("demo") / "run"
    reports = str(workdir.parent / "reports")
    proc = subprocess.run(
        [*CLI, "demo", "--json", "--workdir", str(workdir), "--reports", reports],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout), workdir, proc.stderr


def test_three_nodes_conserve_every_wh(run):
    data, _, _ = run
    assert data["ok"] and data["conserved"] and not data["unsettled"]
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert set(nodes) == {"medellin.example", "barcelona.example", "amsterdam.example"}
    for n in nodes.values():
        assert n["balanced"]
        assert (
            n["issued_wh"] + n["imported_wh"] == n["active_wh"] + n["retired_wh"] + n["exported_wh"]
        )


def test_the_federation_audit_closes_the_books(run):
    """The run ends with RunAudit on one node: every node's signed statement, over the
    federation protocol, reconciled per issuer."""
    data, _, stderr = run
    audit = data["audit"]
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert audit["ok"] and not audit["problems"]
    assert audit["auditor"] == "medellin.example"
    assert audit["statements"][0]["node_id"] == "medellin.example"
    assert {s["node_id"] for s in audit["statements"]} == set(nodes)
    assert all(s["verified"] and len(s["digest"]) == 64 for s in audit["statements"])
    issuers = {i["issuer"]: i for i in audit["issuers"]}
    assert set(issuers) == set(nodes)
    for node_id, i in issuers.items():
        assert i["ok"] and not i["problems"]
        assert i["missing_wh"] == i["conflicting_wh"] == i["in_flight_wh"] == 0
        assert i["issued_wh"] == nodes[node_id]["issued_wh"] > 0
        assert i["issued_wh"] == i["active_wh"] + i["retired_wh"]
    assert sum(i["retired_wh"] for i in issuers.values()) == sum(
        n["retired_wh"] for n in nodes.values()
    )
    assert "auditing the federation's books" in stderr


def test_exports_arrive_exactly_once(run):
    data, _, _ = run
    nodes = {n["node_id"]: n for n in data["nodes"]}
    for node_id, n in nodes.items():
        assert n["exported_wh"] == sum(n["exported_to"].values())
        assert n["imported_wh"] == sum(n["imported_from"].values())
        for peer, wh in n["exported_to"].items():
            assert nodes[peer]["imported_from"][node_id] == wh > 0
    assert (
        sum(n["exported_wh"] for n in nodes.values())
        == sum(n["imported_wh"] for n in nodes.values())
        > 0
    )
    kinds = {k for n in nodes.values() for k, v in n["transfers_out"].items() if v}
    assert {"whole", "partial"} <= kinds and "aborted" not in kinds
    assert data["replays"]["sent"] == data["replays"]["same_result"] == 3


def test_claims_match_consumption_hour_by_hour(run):
    data, _, _ = run
    for n in data["nodes"]:
        assert len(n["hourly_claimed"]) == len(n["hourly_consumption"]) == 24
        assert all(
            c <= d for c, d in zip(n["hourly_claimed"], n["hourly_consumption"], strict=True)
        )
        assert 0 < n["claimed_wh"] <= n["consumed_wh"]
        assert n["claimed_wh"] == n["retired_wh"] == sum(n["hourly_claimed"])
        assert 0 < n["claimed_imported_wh"] <= n["imported_wh"]
        assert 0 < n["cfe_score"] <= 1
        assert n["consumer"].startswith("acct_")


def test_every_node_synced_every_peer_batch(run):
    data, _, _ = run
    nodes = {n["node_id"]: n for n in data["nodes"]}
    for node_id, n in nodes.items():
        peers = set(nodes) - {node_id}
        assert set(n["synced_from"]) == peers
        for peer in peers:
            got = n["synced_from"][peer]
            assert got["records"] == nodes[peer]["issued_records"] > 0
            assert got["batches"] == nodes[peer]["batches"] == 4
            assert got["wh"] == nodes[peer]["issued_wh"]
        assert n["synced_records"] == sum(nodes[p]["issued_records"] for p in peers)


def test_nodes_were_separate_processes_and_are_stopped(run):
    data, workdir, stderr = run
    assert data["workdir"] == str(workdir)
    assert "every transfer settled" in stderr  # progress went to stderr
    for name in ("medellin", "barcelona", "amsterdam"):
        home = workdir / name
        log = (home / "serve.log").read_text()
        assert "serving eap.v1.Federation (mutual TLS)" in log and "Traceback" not in log
        cfg = NodeConfig.load(home)
        port = int(cfg.api_listen.rsplit(":", 1)[1])
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    assert sorted(p.name for p in (workdir / "descriptors").iterdir()) == [
        "amsterdam.example.json",
        "barcelona.example.json",
        "medellin.example.json",
    ]


def test_workdir_must_be_new_or_empty(tmp_path):
    (tmp_path / "something").write_text("x")
    proc = subprocess.run(
        [*CLI, "demo", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 5 and "not empty" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_packaged_sample_stands_in_for_the_shared_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "SHARED_GREENBUTTON", tmp_path / "absent")
    day = demo.parse_day(demo.DEFAULT_DAY)
    plans = [demo.plan_city(c, day, 7) for c in demo.CITIES]
    for p in plans:
        assert p.consumption_source == SAMPLE_GREENBUTTON
        assert len(p.demand) == 24 and min(p.demand) > 0
        assert all(0 <= s <= p.capacity_w["solar"] for s in p.solar)
        assert all(0 < w <= p.capacity_w["wind"] for w in p.wind)
    # Same customer, replayed in each city's local time: Medellín is 7 hours behind Barcelona.
    med, bcn = plans[0].demand, plans[1].demand
    assert med == bcn[-7:] + bcn[:-7]


def test_synthetic_sun_follows_the_cities():
    day = demo.parse_day("2025-06-21")
    med, bcn, ams = demo.CITIES
    noon = {
        c.node_id: max(
            range(24), key=lambda h, c=c: demo.sun_height(c.lat, c.lon, day + 3600 * h + 1800)
        )
        for c in demo.CITIES
    }
    assert noon[bcn.node_id] in (11, 12) and noon[med.node_id] in (16, 17)
    assert demo.sun_height(ams.lat, ams.lon, day + 23 * 3600) == 0.0
    plan = demo.plan_city(bcn, day, 7)
    assert plan == demo.plan_city(bcn, day, 7)  # seeded: the same day every run
    assert Path(plan.consumption_source).suffix == ".xml"


def test_the_day_ends_with_a_signed_settlement_round(run):
    """Priced trades (COP locally in Medellín, EUR elsewhere and across borders) are netted in
    one round across the three nodes; every node signed it and executed its payments into its
    co-op ledger, whose books balance."""
    data, workdir, stderr = run
    st = data["settlement"]
    assert st["ok"] and not st["problems"] and st["held_out"] == 0
    assert st["signed_by"] == sorted(n["node_id"] for n in data["nodes"])
    assert set(st["gross"]) == {"COP", "EUR"}
    assert all(isinstance(v, int) for v in [*st["gross"].values(), *st["net"].values()])
    assert all(0 < st["net"][c] <= st["gross"][c] for c in st["gross"])
    assert st["efficiency"]["EUR"] > 0  # the co-ops' cross-border debts run in a circle
    digests = st["digest"] if isinstance(st["digest"], list) else [st["digest"]]
    assert all(len(d) == 64 for d in digests)
    assert "settling the day's trades" in stderr
    for node in data["nodes"]:
        home = workdir / node["node_id"].split(".")[0]
        check = subprocess.run([*CLI, "ledger", "check", "--home", str(home)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        balances = subprocess.run([*CLI, "ledger", "balances", "--json", "--home", str(home)],
                                  capture_output=True, text=True, timeout=60)
        assert balances.returncode == 0 and json.loads(balances.stdout)


def test_each_city_customer_gets_its_matching_report(run):
    """The demo asks each node for its customer's hourly matching (GetMatchingReport) and
    writes one HTML report per city; its 24/7 score is the one the demo measured."""
    import re

    data, workdir, _ = run
    assert len(data["reports"]) == 3
    scores = {n["city"]: n["cfe_score"] for n in data["nodes"]}
    for city, path in data["reports"].items():
        page = Path(path).read_text()
        assert Path(path).parent == workdir.parent / "reports"
        for div in ("plot-supply", "plot-score", "plot-emissions", "plot-flows"):
            assert f'id="{div}"' in page
        shown = re.search(r"24/7 carbon-free score</th><td>([0-9.]+)%", page)
        assert shown and abs(float(shown.group(1)) / 100 - scores[city]) < 0.0006, city
