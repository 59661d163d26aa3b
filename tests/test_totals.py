"""Maintained totals (migration 0014): ``status`` reads them, they always equal a full recount.

A random sequence of operations (accounts, devices, imports, issuance, transfers, splits,
retirements) must leave ``totals`` equal to the scans of :func:`repos.full_totals`; a failed
transaction leaves both untouched (the triggers run in the caller's transaction).
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import write_csv

from eap.node.errors import EapError
from eap.node.records.enums import Purpose, Status
from eap.node.store import repos, totals_repos

_seq = itertools.count()


def _consistent(node) -> dict:
    with node.store.read() as conn:
        kept, full = totals_repos.totals(conn), repos.full_totals(conn)
    zero_status = {f"wh_{s.name.lower()}" for s in Status}
    full = {k: v for k, v in full.items() if v or k not in zero_status}
    kept = {k: v for k, v in kept.items() if v or k not in zero_status}
    assert kept == full
    return kept


def _device(node, owner: str) -> str:
    n = next(_seq)
    node.register_device(
        request_id=f"dev-{n}",
        local_ref=f"roof-{n}",
        capacity_w=5000,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-05-01",
        latitude=6.2,
        longitude=-75.5,
        zone="CO-ANT",
        owner=owner,
        meter_id=f"m{n}",
        attestation_evidence="agreement",
    )
    return f"m{n}"


OPS = st.lists(
    st.tuples(
        st.sampled_from(["account", "device", "import", "issue", "transfer", "split", "retire"]),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_totals_equal_a_full_recount_after_random_operations(node, tmp_path, ops):
    owners = [a.id for a in node.list_accounts(purpose=Purpose.OPERATIONS, page_size=1000).items]
    if not owners:
        owners.append(node.create_account(request_id="first").account.id)
    meters = [
        d.meter_id for d in node.list_devices(purpose=Purpose.OPERATIONS, page_size=1000).items
    ]
    for op, x in ops:
        n = next(_seq)
        try:
            if op == "account":
                owners.append(node.create_account(request_id=f"a{n}").account.id)
            elif op == "device":
                meters.append(_device(node, owners[x % len(owners)]))
            elif op == "import" and meters:
                start = dt.datetime(2024, 1, 1) + dt.timedelta(hours=n)
                rows = [
                    (
                        f"{start:%Y-%m-%d %H:%M:%S}",
                        f"{start + dt.timedelta(hours=1):%Y-%m-%d %H:%M:%S}",
                        meters[x % len(meters)],
                        1 + x % 4000,
                    )
                ]
                node.import_readings(write_csv(tmp_path / f"r{n}.csv", rows), request_id=f"i{n}")
            elif op == "issue":
                node.issue(request_id=f"s{n}")
            elif op in ("transfer", "split", "retire"):
                active = node.list_bundles(
                    purpose=Purpose.OPERATIONS, status=int(Status.ACTIVE), page_size=50
                ).items
                if not active:
                    continue
                b = active[x % len(active)]
                part = 0 if op == "transfer" or b.wh < 2 else 1 + x % (b.wh - 1)
                if op == "retire":
                    node.retire(
                        b.id, beneficiary="city hall", purpose="scope2", wh=part, request_id=f"r{n}"
                    )
                else:
                    node.transfer(
                        b.id, to_account=owners[x % len(owners)], wh=part, request_id=f"t{n}"
                    )
        except EapError:
            pass  # a refused operation changes nothing; the totals must still match
        _consistent(node)


def test_status_reads_the_maintained_totals(node, solar, meter_csv):
    node.import_readings(meter_csv, request_id="imp")
    node.issue(request_id="iss")
    kept = _consistent(node)
    st_ = node.status()
    assert st_.devices == 1 and st_.accounts == 1
    assert st_.readings == kept["readings"] > 0
    assert st_.wh_issued == st_.wh_active == kept["wh_metered"] > 0
    # The status comes from the table: change a total behind the triggers' back and it shows.
    with node.store.transaction() as conn:
        conn.exec_driver_sql("UPDATE totals SET value = value + 7 WHERE name = 'devices'")
    assert node.status().devices == 8


def test_a_transaction_that_fails_midway_rolls_its_totals_back(node, solar, meter_csv):
    node.import_readings(meter_csv, request_id="imp")
    node.issue(request_id="iss")
    before = _consistent(node)
    bundle = node.list_bundles(purpose=Purpose.OPERATIONS, page_size=1).items[0]

    class Crash(Exception):
        pass

    with pytest.raises(Crash), node.store.transaction() as conn:
        # What a retirement writes, then the process "dies" before the commit.
        _found, version = repos.get_bundle(conn, bundle.id)
        assert repos.set_bundle_state(
            conn, bundle.id, version, expect_status=Status.ACTIVE, status=int(Status.RETIRED)
        )
        conn.exec_driver_sql("DELETE FROM readings")
        assert totals_repos.totals(conn) != before  # moved inside the transaction
        raise Crash
    assert _consistent(node) == before


def test_saturating_totals_survive_values_past_int64(node, solar):
    with node.store.transaction() as conn:
        repos.insert_readings(
            conn,
            {
                "device_id": [solar[1].id] * 2,
                "interval_start": [0, 3600],
                "interval_end": [3600, 7200],
                "wh": [2**63 - 1] * 2,
                "issued_wh": [0, 0],
            },
        )
    assert node.status().wh_metered == 2**63 - 1


def test_cross_node_transfer_totals_follow_state_changes(node):
    """``wh_exported`` / ``wh_imported`` count committed transfers only, whatever writes them."""
    row = (
        "INSERT INTO transfers (id, direction, peer, state, wh, expires_at_ms, created_at_ms,"
        " checks) VALUES ('{id}', '{d}', 'peer.example', '{s}', {wh}, 0, 0, 0)"
    )
    with node.store.transaction() as conn:
        conn.exec_driver_sql(row.format(id="a/1", d="out", s="preparing", wh=40))
        conn.exec_driver_sql(row.format(id="b/1", d="in", s="committed", wh=7))
    assert (node.status().wh_exported, node.status().wh_imported) == (0, 7)
    with node.store.transaction() as conn:
        conn.exec_driver_sql("UPDATE transfers SET state = 'committed' WHERE id = 'a/1'")
    assert node.status().wh_exported == 40
    with node.store.transaction() as conn:
        conn.exec_driver_sql("UPDATE transfers SET state = 'aborted'")
        conn.exec_driver_sql("DELETE FROM transfers WHERE id = 'b/1'")
    assert (node.status().wh_exported, node.status().wh_imported) == (0, 0)
    _consistent(node)
    # A bundle now in status EXPORTED does not count as exported Wh (the transfers do).
    from test_listings import _fill

    _fill(node, [node.create_account(request_id="x").account.id], 2)
    with node.store.transaction() as conn:
        conn.exec_driver_sql(f"UPDATE bundles SET status = {int(Status.EXPORTED)}")
    assert node.status().wh_exported == 0
    _consistent(node)


def test_only_the_counting_writers_insert_readings_and_bundles():
    """On SQLite no trigger counts inserted readings and bundles (migration 0018): every
    insert must go through ``repos.insert_readings`` or ``insert_bundles``, or be a run
    record's first change (``run_repos.materialize``: the record was counted with its run).
    An insert written anywhere else in the node would leave the totals short, so none may
    exist."""
    import re
    from pathlib import Path

    root = Path(repos.__file__).resolve().parents[1]  # the node package
    writer = re.compile(
        r"insert\(\s*t\.(readings|bundles)\b"
        r"|(bulk_insert|insert_if_absent)\([^)]*t\.(readings|bundles)\b"
        r"|INSERT\s+INTO\s+(readings|bundles)\b",
        re.IGNORECASE,
    )
    found = []
    for path in sorted(root.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        text = path.read_text()
        for m in writer.finditer(text):
            found.append(f"{path.relative_to(root)}:{text.count(chr(10), 0, m.start()) + 1}")
    # insert_bundles and insert_readings, materialize, and nothing else
    files = [f.split(":")[0] for f in found]
    assert files == ["store/repos.py"] * 2 + ["store/run_repos.py"], found
