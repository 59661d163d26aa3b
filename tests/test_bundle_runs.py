"""Issued records kept as runs (``bundle_runs``, migration 0021) until their first change.

Issuance writes one run per (batch, device) and no ``bundles`` row; a record's first change
writes its row, which from then on is the record everywhere; two writers racing for one
record's first change: exactly one wins.  On SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
import itertools
import threading

import pytest
from sqlalchemy import func, select

from eap.node.domain import listings
from eap.node.records.enums import Purpose, Status
from eap.node.store import custody_repos, repos, totals_repos
from eap.node.store import schema as t
from eap.node.store import transfer_repos as tr

OPS = Purpose.OPERATIONS


def _count(conn, table) -> int:
    return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _consistent(node) -> dict:
    with node.store.read() as conn:
        kept, full = totals_repos.totals(conn), repos.full_totals(conn)
    kept = {k: v for k, v in kept.items() if v}
    assert kept == {k: v for k, v in full.items() if v}
    return kept


@pytest.fixture
def issued(node, solar, meter_csv):
    node.import_readings(meter_csv, request_id="imp")
    res = node.issue(request_id="iss")
    assert res.bundles > 100
    return res


def test_issuance_writes_one_run_per_device_and_batch_and_no_row(node, issued):
    with node.store.read() as conn:
        assert _count(conn, t.bundles) == 0
        runs = conn.execute(select(t.bundle_runs)).all()
        assert len(runs) == 1 and runs[0].n == issued.bundles  # one device, one batch
        assert runs[0].batch_seq == issued.batch_seq
        listed = list(repos.all_bundles(conn))
        assert len(listed) == issued.bundles and sum(b.wh for b in listed) == issued.wh
        # contiguous serials, in order, every record ACTIVE, owned by the device's owner
        assert all(a.serial_end == b.serial_start for a, b in itertools.pairwise(listed))
        assert {(b.status, b.owner, b.parent_id) for b in listed} == {
            (int(Status.ACTIVE), runs[0].owner, None)
        }
        b = listed[7]
        assert repos.get_bundle(conn, b.id) == (b, 0)
        assert custody_repos.batch_seq_of(conn, b.id) == issued.batch_seq
        assert custody_repos.issued_cell(conn, b.issuer, b.serial_start, b.serial_end) == b.cell
        # a peer's import over these serials sees them held (transfer admission)
        over = tr.overlapping(conn, b.issuer, b.serial_start + 1, listed[9].serial_end)
        assert [(r.id, r.status) for r in over] == [
            (x.id, int(Status.ACTIVE)) for x in listed[7:10]
        ]
        # not a record: a sub-range, a range across two records, another issuer
        assert repos.get_bundle(conn, f"{b.issuer}/{b.serial_start}-{b.serial_end - 1}") is None
        assert repos.get_bundle(conn, f"{b.issuer}/{b.serial_start}-{listed[8].serial_end}") is None
        assert repos.get_bundle(conn, f"other.example/{b.serial_start}-{b.serial_end}") is None
    balances = {a.id: a.balance_wh for a in node.list_accounts(purpose=OPS).items}
    assert balances[listed[0].owner] == issued.wh
    _consistent(node)


def test_a_first_change_writes_the_row_which_is_then_the_record(node, issued):
    page = node.list_bundles(purpose=OPS, page_size=20).items
    owner = page[0].owner
    other = node.create_account(request_id="other").account.id
    node.transfer(page[3].id, to_account=other, request_id="t-whole")
    node.transfer(page[5].id, to_account=other, wh=1, request_id="t-part")
    node.retire(page[8].id, beneficiary="city hall", purpose="scope2", request_id="r")
    with node.store.read() as conn:
        rows = {r.id: r for r in conn.execute(select(t.bundles)).all()}
    # the three records and the split's two children: no other row
    assert {page[3].id, page[5].id, page[8].id} <= set(rows) and len(rows) == 5
    assert rows[page[5].id].status == Status.SPLIT and rows[page[3].id].version == 1
    listed = list(node.stream_bundles(purpose=OPS))
    ids = [b.id for b in listed]
    assert len(ids) == len(set(ids)) == issued.bundles + 2  # + the split's children
    assert sum(b.wh for b in listed if b.status != Status.SPLIT) == issued.wh
    mine = {b.id for b in node.stream_bundles(purpose=OPS, owner=owner)}
    assert page[3].id not in mine and page[4].id in mine
    theirs = [b for b in node.stream_bundles(purpose=OPS, owner=other)]
    assert {b.id for b in theirs} >= {page[3].id} and len(theirs) == 2
    retired = node.list_bundles(purpose=OPS, status=int(Status.RETIRED)).items
    assert [b.id for b in retired] == [page[8].id]
    # pages walk rows and runs as one serial order, whatever their size
    for size in (1, 3, 7):
        walked = listings.walk(functools.partial(node.list_bundles, purpose=OPS), size)
        assert [b.id for b in walked] == ids
    balances = {a.id: a.balance_wh for a in node.list_accounts(purpose=OPS).items}
    assert balances[other] == page[3].wh + 1
    assert balances[owner] == issued.wh - page[3].wh - 1 - page[8].wh
    _consistent(node)


def test_two_writers_racing_for_a_records_first_change_one_wins(tmp_path, pg_url):
    """Two replicas on one PostgreSQL: both read the record from its run at version 0; the
    second's change waits for the first's row and then fails its version check."""
    from support import make_node, write_csv

    from eap.node.store import open_store

    node = make_node(tmp_path / "home", pg_url)
    try:
        owner = node.create_account(request_id="o").account.id
        from test_totals import _device

        meter = _device(node, owner)
        csv = write_csv(tmp_path / "m.csv", [
            (f"2024-01-01 {h:02d}:00:00", f"2024-01-01 {h + 1:02d}:00:00", meter, 100 + h)
            for h in range(5)
        ])
        node.import_readings(csv, request_id="i")
        node.issue(request_id="s")
        target = node.list_bundles(purpose=OPS, page_size=5).items[2]
        other = open_store(pg_url, migrate=False)
        first_done = threading.Event()
        outcome = {}
        with node.store.engine.connect() as c1, other.engine.connect() as c2:
            _, v2 = repos.get_bundle(c2, target.id)  # replica 2 reads it from the run
            assert v2 == 0
            b1, v1 = repos.get_bundle(c1, target.id, lock=True)  # replica 1: writes its row
            assert repos.set_bundle_state(c1, target.id, v1, expect_status=Status.ACTIVE,
                                          status=int(Status.RETIRED))

            def second():
                outcome["won"] = repos.set_bundle_state(
                    c2, target.id, v2, expect_status=Status.ACTIVE, owner="acct_thief")
                outcome["after_first"] = first_done.is_set()
                c2.commit()

            th = threading.Thread(target=second)
            th.start()
            th.join(1.0)
            assert th.is_alive()  # waiting on the first writer's row
            first_done.set()
            c1.commit()
            th.join(30)
        other.dispose()
        assert outcome == {"won": False, "after_first": True}
        with node.store.read() as conn:
            row = conn.execute(select(t.bundles).where(t.bundles.c.id == target.id)).one()
            assert (row.status, row.owner, row.version) == (int(Status.RETIRED), b1.owner, 1)
            assert _count(conn, t.bundles) == 1
        _consistent(node)
    finally:
        node.close()


def test_downgrade_writes_every_run_record_as_a_row(node, issued):
    from alembic import command
    from alembic.config import Config

    from eap.node.store.engine import MIGRATIONS

    page = node.list_bundles(purpose=OPS, page_size=10).items
    other = node.create_account(request_id="other").account.id
    node.transfer(page[2].id, to_account=other, wh=3, request_id="t")
    before = [(b.id, b.status, b.owner, b.lineage_hash) for b in node.stream_bundles(purpose=OPS)]
    kept = _consistent(node)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with node.store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0020")
    with node.store.read() as conn:
        rows = conn.execute(select(t.bundles).order_by(t.bundles.c.issuer,
                                                       t.bundles.c.serial_start,
                                                       t.bundles.c.serial_end)).all()
        after = totals_repos.totals(conn)
    assert [(r.id, r.status, r.owner, r.lineage_hash) for r in rows] == before
    assert {k: v for k, v in after.items() if v} == kept
    with node.store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    after = [(b.id, b.status, b.owner, b.lineage_hash) for b in node.stream_bundles(purpose=OPS)]
    assert after == before
