"""Pieces of the transfer engine on their own: crash switch, conservation checker, schema,
settings and the CLI commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import delete, update
from test_transfers_support import Federation

from eap.node.federation import crashpoints
from eap.node.federation import transfers as T
from eap.node.records.enums import Status
from eap.node.store import open_store
from eap.node.store import schema as t

CLI = [sys.executable, "-m", "eap.node"]
MINE = ("transfers", "transfer_outbox", "transfer_inbox")


def _hit(env_value: str, hits: int) -> subprocess.CompletedProcess:
    code = ("from eap.node.federation import crashpoints\n"
            f"for i in range({hits}):\n"
            "    crashpoints.hit('dest.after_prepared_commit')\n"
            "    print('passed', i, flush=True)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, crashpoints.ENV: env_value}, timeout=60)


def test_crash_switch_exits_the_process_at_the_named_point():
    died = _hit("dest.after_prepared_commit", 3)
    assert died.returncode == 137 and died.stdout == ""
    second = _hit("source.after_send_prepare,dest.after_prepared_commit@2", 3)
    assert second.returncode == 137 and second.stdout == "passed 0\n"
    other = _hit("source.after_send_prepare", 2)
    assert other.returncode == 0 and other.stdout.count("passed") == 2


def test_armed_point_raises_once_in_process():
    crashpoints.arm("dest.after_status_reply")
    with pytest.raises(crashpoints.SimulatedCrash):
        crashpoints.hit("dest.after_status_reply")
    crashpoints.hit("dest.after_status_reply")  # once only
    with pytest.raises(ValueError):
        crashpoints.arm("nowhere")


def test_conservation_check_sees_duplicates_and_losses(tmp_path):
    f = Federation(tmp_path, "ab")
    try:
        a, b = f["a"], f["b"]
        a.engine.send(a.bundles[0], to=f.to("b"), request_id="t")
        f.assert_conserved()
        # forge a duplicate: A's exported copy comes back to life
        with a.node.store.transaction() as conn:
            conn.execute(update(t.bundles).where(t.bundles.c.id == a.bundles[0])
                         .values(status=int(Status.ACTIVE)))
        report = f.conservation()
        assert not report.ok and report.duplicated and "overlaps" in report.describe()
        # and a loss: B's imported bundle disappears, A's copy is exported again
        with a.node.store.transaction() as conn:
            conn.execute(update(t.bundles).where(t.bundles.c.id == a.bundles[0])
                         .values(status=int(Status.EXPORTED)))
        with b.node.store.transaction() as conn:
            conn.execute(delete(t.bundles).where(t.bundles.c.id == a.bundles[0]))
        report = f.conservation()
        assert not report.ok and report.lost == {a.node_id: 1000}
        assert "missing" in report.describe()
    finally:
        f.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_migration_creates_exactly_the_declared_tables(tmp_path, request, backend):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = (f"sqlite:///{tmp_path / 'x.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), t.metadata)
        mine = [d for d in diffs if any(name in repr(d) for name in MINE)]
        assert mine == []
    finally:
        store.dispose()


def test_transfer_id_and_destination_rules():
    assert T.split_destination("b.example/acct_" + "a" * 26) == ("b.example", "acct_" + "a" * 26)
    for bad in ("b.example", "B.example/acct_x", "/acct_" + "a" * 26, "b.example/"):
        with pytest.raises(T.InvalidArgument):
            T.split_destination(bad)
    assert T.TRANSFER_ID_RE.match("a.example/0b6c-11")
    assert not T.TRANSFER_ID_RE.match("a.example/../x")


def _run(home, *args, ok=True):
    proc = subprocess.run([*CLI, *args, "--home", str(home)], capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_routes_node_slash_account_to_a_cross_node_transfer(tmp_path):
    f = Federation(tmp_path, "ab")
    home = f["a"].home
    bid = f["a"].bundles[0]
    f.close()
    assert _run(home, "transfers", "--json").stdout == ""  # JSON Lines: no transfer, no line
    # an unknown peer is refused before anything is locked
    bad = _run(home, "transfer", bid, "--to", f"nowhere.example/acct_{'a' * 26}", ok=False)
    assert bad.returncode == 5 and "trust list" in bad.stderr
    # a local account still takes the local path
    acct = json.loads(_run(home, "account", "create", "--json").stdout)["account"]["id"]
    local = json.loads(_run(home, "transfer", bid, "--to", acct, "--json").stdout)
    assert local["transferred"]["owner"] == acct
    # a trusted peer that cannot be reached: locked, in flight, listed as such
    out = json.loads(_run(home, "transfer", bid, "--to", f"barcelona.example/acct_{'a' * 26}",
                          "--wh", "10", "--wait", "0", "--json").stdout)
    assert out["transfer"]["state"] == "preparing" and out["transfer"]["pending"] == ["prepare"]
    listed = [json.loads(line) for line in
              _run(home, "transfers", "--json", "--state", "preparing").stdout.splitlines()]
    assert [x["id"] for x in listed] == [out["transfer"]["id"]]
    table = _run(home, "transfers").stdout
    assert "preparing" in table and "barcelona.example" in table
