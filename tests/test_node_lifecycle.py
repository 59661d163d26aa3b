"""Issuance and the record lifecycle on SQLite and PostgreSQL, each rule tried and broken."""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest
from sqlalchemy import func, select
from support import write_csv

from eap.node.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from eap.node.records.enums import Purpose, Status
from eap.node.store import schema as t


def _issue_all(node, meter_csv):
    node.import_readings(meter_csv, request_id="imp-1")
    return node.issue(request_id="iss-1")


def _active(node, owner=""):
    return node.list_bundles(
        purpose=Purpose.OPERATIONS, owner=owner, status=int(Status.ACTIVE), page_size=1000
    ).items


def test_import_and_issue_from_real_csv(node, solar, meter_csv):
    owner, dev = solar
    total = sum(int(line.split(",")[3]) for line in meter_csv.read_text().splitlines()[1:])
    imp = node.import_readings(meter_csv, request_id="imp-1")
    assert (imp.readings, imp.wh) == (744, total)
    res = node.issue(request_id="iss-1")
    assert res.wh == total and res.batch_seq == 1 and len(res.merkle_root) == 32
    bundles = _active(node, owner)
    assert sum(b.wh for b in bundles) == total
    assert all(b.device_id == dev.id and b.zone == "CO-ANT" and b.owner == owner for b in bundles)
    # Serial ranges are disjoint and contiguous: each Wh serial issued exactly once.
    ranges = sorted((b.serial_start, b.serial_end) for b in bundles)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    st = node.status()
    assert (st.wh_metered, st.wh_issued, st.wh_active) == (total, total, total)


def test_issue_twice_issues_nothing_more(node, solar, meter_csv):
    first = _issue_all(node, meter_csv)
    again = node.issue(request_id="iss-2")
    assert again.bundles == 0 and again.wh == 0
    # Re-importing the same file changes nothing and issues nothing.
    imp = node.import_readings(meter_csv, request_id="imp-2")
    assert imp.readings == 0 and imp.unchanged == 744
    assert node.issue(request_id="iss-3").wh == 0
    assert node.status().wh_issued == first.wh


def test_reading_over_capacity_is_rejected_and_changes_nothing(node, solar, tmp_path):
    bad = write_csv(
        tmp_path / "m.csv",
        [
            ("2024-01-01 00:00:00", "2024-01-01 01:00:00", "1", 100),
            ("2024-01-01 01:00:00", "2024-01-01 02:00:00", "1", 251),  # 250 W x 1 h = 250 Wh
        ],
    )
    with pytest.raises(InvalidArgument) as err:
        node.import_readings(bad, request_id="imp")
    assert "capacity" in str(err.value)
    assert node.status().readings == 0


def test_reading_conflicting_with_stored_one_is_rejected(node, solar, tmp_path):
    ok = write_csv(tmp_path / "a.csv", [("2024-01-01 00:00:00", "2024-01-01 01:00:00", "1", 100)])
    node.import_readings(ok, request_id="a")
    changed = write_csv(
        tmp_path / "b.csv", [("2024-01-01 00:00:00", "2024-01-01 01:00:00", "1", 120)]
    )
    with pytest.raises(InvalidArgument, match="stored reading"):
        node.import_readings(changed, request_id="b")
    overlapping = write_csv(
        tmp_path / "c.csv", [("2024-01-01 00:30:00", "2024-01-01 00:45:00", "1", 10)]
    )
    with pytest.raises(InvalidArgument, match="overlaps"):
        node.import_readings(overlapping, request_id="c")
    last_quarter = write_csv(
        tmp_path / "d.csv", [("2024-01-01 00:45:00", "2024-01-01 01:00:00", "1", 10)]
    )
    with pytest.raises(InvalidArgument, match="overlaps"):
        node.import_readings(last_quarter, request_id="d")
    assert node.status().wh_metered == 100
    # Adjacent intervals touch but do not overlap; a file mixing stored and new rows keeps the
    # stored ones unchanged and adds the new ones.
    mixed = write_csv(
        tmp_path / "e.csv",
        [
            ("2023-12-31 23:00:00", "2024-01-01 00:00:00", "1", 7),
            ("2024-01-01 00:00:00", "2024-01-01 01:00:00", "1", 100),
            ("2024-01-01 01:00:00", "2024-01-01 02:00:00", "1", 9),
        ],
    )
    res = node.import_readings(mixed, request_id="e")
    assert (res.readings, res.unchanged, res.wh) == (2, 1, 16)
    assert node.status().wh_metered == 116


@pytest.mark.parametrize(
    "start,end",
    [
        ("2024-01-01 00:00:00", "2024-01-01 02:00:00"),  # longer than an hour
        ("2024-01-01 00:10:00", "2024-01-01 00:25:00"),  # 15 min not on a quarter hour
        ("2024-01-01 01:00:00", "2024-01-01 01:00:00"),  # empty
    ],
)
def test_bad_intervals_are_rejected(node, solar, tmp_path, start, end):
    with pytest.raises(InvalidArgument):
        node.import_readings(write_csv(tmp_path / "m.csv", [(start, end, "1", 5)]), request_id="x")
    assert node.status().readings == 0


def test_unknown_meters_are_reported_not_imported(node, solar, tmp_path):
    f = write_csv(
        tmp_path / "m.csv",
        [
            ("2024-01-01 00:00:00", "2024-01-01 01:00:00", "1", 10),
            ("2024-01-01 00:00:00", "2024-01-01 01:00:00", "ghost", 10),
        ],
    )
    res = node.import_readings(f, request_id="m")
    assert res.readings == 1 and res.unknown_meters == ["ghost"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("renewable_ppm", 1_000_001),
        ("carbon_mg", 2_000_001),
        ("capacity_w", 0),
        ("source", "unspecified"),
        ("technology", "warp-drive"),
        ("zone", "colombia"),
        ("latitude", 91.0),
        ("commissioned_on", "2999-01-01"),
    ],
)
def test_device_field_rules(node, solar, field, value):
    owner, _ = solar
    args = dict(
        local_ref="roof-2",
        capacity_w=100,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2021-01-01",
        latitude=6.0,
        longitude=-75.0,
        zone="CO-ANT",
        owner=owner,
        meter_id="m-2",
        attestation_evidence="doc",
    )
    args[field] = value
    with pytest.raises(InvalidArgument) as err:
        node.register_device(request_id=f"d-{field}", **args)
    assert any(field.split("_")[0] in v.field for v in err.value.violations)
    assert node.status().devices == 1


def test_duplicate_device_and_unknown_owner(node, solar):
    owner, _ = solar
    args = dict(
        capacity_w=100,
        source="wind",
        technology="onshore_wind",
        commissioned_on="2021-01-01",
        latitude=6.0,
        longitude=-75.0,
        zone="CO-ANT",
        attestation_evidence="doc",
    )
    with pytest.raises(AlreadyExists):
        node.register_device(
            request_id="dup", local_ref="roof-1", owner=owner, meter_id="9", **args
        )
    with pytest.raises(NotFound):
        node.register_device(
            request_id="ghost", local_ref="w-1", meter_id="w", owner="acct_" + "a" * 26, **args
        )


def test_whole_and_partial_transfer_keep_lineage_and_sum(node, solar, meter_csv):
    owner, _ = solar
    _issue_all(node, meter_csv)
    buyer = node.create_account(request_id="buyer").account.id
    b = max(_active(node, owner), key=lambda x: x.wh)
    res = node.transfer(b.id, to_account=buyer, wh=40, request_id="t1")
    moved, rest = res.transferred, res.remainder
    assert moved.wh == 40 and rest.wh == b.wh - 40
    assert moved.wh + rest.wh == b.wh  # children sum to the parent
    assert (moved.serial_start, rest.serial_end) == (b.serial_start, b.serial_end)
    assert moved.parent_id == rest.parent_id == b.id
    for child in (moved, rest):
        expect = hashlib.sha256(b"\x03" + bytes.fromhex(b.lineage_hash) + child.id.encode())
        assert child.lineage_hash == expect.hexdigest()
    assert node.get_bundle(b.id).status == Status.SPLIT
    # A split parent cannot be spent again.
    with pytest.raises(FailedPrecondition):
        node.transfer(b.id, to_account=buyer, request_id="t2")
    whole = node.transfer(rest.id, to_account=buyer, request_id="t3").transferred
    assert whole.id == rest.id and whole.owner == buyer
    total = node.status()
    assert total.wh_active == total.wh_issued


def test_spending_more_than_held_changes_nothing(node, solar, meter_csv):
    owner, _ = solar
    _issue_all(node, meter_csv)
    buyer = node.create_account(request_id="buyer").account.id
    b = _active(node, owner)[0]
    with pytest.raises(FailedPrecondition):
        node.transfer(b.id, to_account=buyer, wh=b.wh + 1, request_id="t")
    with pytest.raises(NotFound):
        node.transfer("medellin.example/9999999-99999999", to_account=buyer, request_id="t2")
    with pytest.raises(NotFound):
        node.transfer(b.id, to_account="acct_" + "b" * 26, request_id="t3")
    assert node.get_bundle(b.id).owner == owner


def test_retired_never_moves_and_claim_is_signed(node, solar, meter_csv):
    owner, _ = solar
    _issue_all(node, meter_csv)
    buyer = node.create_account(request_id="buyer").account.id
    b = max(_active(node, owner), key=lambda x: x.wh)
    rec = node.retire(
        b.id,
        wh=30,
        beneficiary="Escuela La Esperanza",
        purpose="scope2-market-based",
        request_id="r1",
    )
    assert rec.bundle.wh == 30 and rec.bundle.status == Status.RETIRED
    node.keys.verify(rec.key_id, rec.digest, rec.signature)
    # Anyone can recompute the digest from the receipt's own fields (docs/protocol.md).
    body = {
        "id": rec.id,
        "bundle": rec.bundle.id,
        "lineage": rec.bundle.lineage_hash,
        "wh": rec.bundle.wh,
        "beneficiary": rec.beneficiary,
        "purpose": rec.purpose,
        "consumption": [rec.consumption_start, rec.consumption_end],
        "zone": rec.consumption_zone,
        "claimed_at_ms": rec.claimed_at_ms,
        "generation": [rec.bundle.interval_start, rec.bundle.interval_end],
        "source": rec.bundle.source,
        "carbon_mg": rec.bundle.carbon_mg,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(b"EAP-CLAIM-v1\x00" + canonical).digest() == rec.digest
    with pytest.raises(FailedPrecondition):
        node.transfer(rec.bundle.id, to_account=buyer, request_id="t")
    with pytest.raises(FailedPrecondition):
        node.retire(rec.bundle.id, beneficiary="x", purpose="y", request_id="r2")
    st = node.status()
    assert st.wh_retired == 30 and st.wh_active + st.wh_retired == st.wh_issued


def test_claim_must_overlap_generation_hour(node, solar, meter_csv):
    owner, _ = solar
    _issue_all(node, meter_csv)
    b = _active(node, owner)[0]
    with pytest.raises(InvalidArgument, match="overlap"):
        node.retire(
            b.id,
            beneficiary="x",
            purpose="p",
            consumption_start=b.interval_end + 3600,
            consumption_end=b.interval_end + 7200,
            request_id="r",
        )


def test_idempotent_replay_and_conflicting_reuse(node, solar, meter_csv):
    owner, _ = solar
    _issue_all(node, meter_csv)
    buyer = node.create_account(request_id="buyer").account.id
    b = max(_active(node, owner), key=lambda x: x.wh)
    first = node.transfer(b.id, to_account=buyer, wh=10, request_id="same")
    again = node.transfer(b.id, to_account=buyer, wh=10, request_id="same")
    assert again.to_dict() == first.to_dict()
    with pytest.raises(InvalidArgument) as err:
        node.transfer(b.id, to_account=buyer, wh=11, request_id="same")
    assert err.value.violations[0].field == "request_id"
    # Account creation replays without revealing the token twice.
    a1 = node.create_account(request_id="acct-x", label="x")
    a2 = node.create_account(request_id="acct-x", label="x")
    assert a1.account.id == a2.account.id and a1.token and not a2.token
    with node.store.read() as conn:
        assert (
            conn.execute(
                select(func.count()).select_from(t.journal).where(t.journal.c.action == "transfer")
            ).scalar()
            == 1
        )


def test_account_principal_can_only_spend_its_own(node, solar, meter_csv):
    owner, _ = solar
    _issue_all(node, meter_csv)
    other = node.create_account(request_id="other")
    stranger = node.principal_for_token(other.token)
    assert stranger.account_id == other.account.id
    b = _active(node, owner)[0]
    with pytest.raises(PermissionDenied):
        node.transfer(b.id, to_account=other.account.id, request_id="steal", principal=stranger)
    with pytest.raises(PermissionDenied):
        node.list_devices(purpose=Purpose.OPERATIONS, principal=stranger)
    holdings = node.list_bundles(purpose=Purpose.HOLDINGS, principal=stranger).items
    assert holdings == []


def test_transparency_reads_hide_private_fields(node, solar):
    devs = node.list_devices(purpose=Purpose.TRANSPARENCY).items
    assert devs[0].latitude is None and devs[0].meter_id is None and devs[0].local_ref == ""
    assert devs[0].cell == "876619d92ffffff"  # the resolution-7 H3 cell around the roof
    with pytest.raises(InvalidArgument):
        node.list_devices(purpose=Purpose.UNSPECIFIED)


def test_bulk_issuance_uses_one_statement_per_table(node, solar, tmp_path):
    from sqlalchemy import event

    rows = []
    for h in range(3000):
        s = 1704067200 + 3600 * h
        rows.append((_ts(s), _ts(s + 3600), "1", 1 + h % 200))
    node.import_readings(write_csv(tmp_path / "big.csv", rows), request_id="big")
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()[:3]))

    event.listen(node.store.engine, "before_cursor_execute", count)
    res = node.issue(request_id="iss")
    event.remove(node.store.engine, "before_cursor_execute", count)
    assert res.bundles == 3000
    # The batch is stored as one run (one device) and no bundles row at all: one executemany
    # on SQLite; on PostgreSQL the run goes through COPY, not INSERT.
    runs = ["INSERT INTO bundle_runs"] if node.store.dialect == "sqlite" else []
    assert [s for s in statements if s.startswith("INSERT INTO bundle")] == runs, statements


def _ts(unix: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
