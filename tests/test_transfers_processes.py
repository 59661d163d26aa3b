"""Cross-node transfers between ``eap-node serve`` processes over mutual TLS, and crash tests
that kill a node process (``EAP_CRASH_AT`` → ``os._exit(137)``, or SIGKILL) and restart it.

Transfers are started with the CLI (``eap-node transfer BUNDLE --to NODE/ACCOUNT``), as an
operator would; the CLI delivers inline and the serve processes' background workers finish
whatever the CLI could not.  Conservation is checked over the three databases after each step.
"""

from __future__ import annotations

import random
import time

import pytest
from fednet import FedNet, write_settings
from support import write_csv

from eap.node.federation import conservation
from eap.node.federation import transfers as T
from eap.node.federation.client import PeerClient
from eap.node.records.enums import Purpose, Status
from eap.node.store import transfer_repos as tr
from eap.v1 import federation_pb2 as fed

A, B, C = "a.example", "b.example", "c.example"
ZONES = {A: "CO-ANT", B: "ES", C: "NL"}
#: Fast timings for the node processes (and the CLI, which reads the same config).
TIMINGS = {"ttl_s": 20.0, "lease_s": 1.0, "worker_interval_s": 0.2, "backoff_base_s": 0.1,
           "backoff_cap_s": 1.0, "inquire_after_s": 2.0, "inquire_cap_s": 2.0,
           "rpc_timeout_s": 3.0, "inline_wait_s": 5.0}


def _issue(proc, hours: int = 3) -> list[str]:
    node = proc.node
    tag = proc.node_id.split(".")[0]
    owner = node.create_account(request_id=f"owner-{tag}").account.id
    node.register_device(request_id=f"dev-{tag}", local_ref=f"roof-{tag}", capacity_w=5000,
                         source="solar", technology="photovoltaic", commissioned_on="2020-01-01",
                         latitude=41.4, longitude=2.17, zone=proc.zone, owner=owner,
                         meter_id=f"m-{tag}", attestation_evidence="grid connection 1")
    rows = [(f"2024-01-01 {h:02d}:00:00", f"2024-01-01 {h + 1:02d}:00:00", f"m-{tag}",
             900 + h) for h in range(hours)]
    node.import_readings(write_csv(proc.home / "m.csv", rows), request_id=f"imp-{tag}")
    node.issue(request_id=f"iss-{tag}")
    return [b.id for b in _active(proc)]


def _active(proc, owner: str = "") -> list:
    return proc.node.list_bundles(purpose=Purpose.OPERATIONS, owner=owner,
                                  status=int(Status.ACTIVE), page_size=1000).items


def _make_net(root, ids=(A, B, C), db_urls=None) -> tuple[FedNet, dict[str, str], dict]:
    net = FedNet(root, [(i, ZONES[i]) for i in ids], db_urls=db_urls)
    for proc in net:
        write_settings(proc.home, "transfers", **TIMINGS)
    net.connect_all()
    buyers = {proc.node_id: proc.node.create_account(request_id="buyer").account.id
              for proc in net}
    bundles = {proc.node_id: _issue(proc) for proc in net}
    return net, buyers, bundles


def _conserved(net: FedNet) -> conservation.ConservationReport:
    report = conservation.check({p.node_id: p.node.store for p in net})
    assert report.ok, report.describe()
    return report


def _unsettled(net: FedNet) -> list:
    out = []
    for proc in net:
        with proc.node.store.read() as conn:
            rows = tr.list_transfers(conn, direction=None, state=None, after=None, limit=1000)
            for r in rows:
                owed = tr.outbox_unacked(conn, r.id)
                if r.state not in T.FINAL or owed:
                    out.append((proc.node_id, r.id, r.state, [m.kind for m in owed]))
    return out


def _wait_settled(net: FedNet, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _unsettled(net):
            return
        time.sleep(0.1)
    raise AssertionError(f"not settled after {timeout} s: {_unsettled(net)}")


def _states(net: FedNet, tid: str) -> dict[str, str]:
    out = {}
    for proc in net:
        with proc.node.store.read() as conn:
            row = tr.get_transfer(conn, tid)
        if row is not None:
            out[proc.node_id] = row.state
    return out


def _agree(net: FedNet) -> None:
    seen: dict[str, set] = {}
    for proc in net:
        with proc.node.store.read() as conn:
            for r in tr.list_transfers(conn, direction=None, state=None, after=None, limit=1000):
                seen.setdefault(r.id, set()).add(r.state)
    for tid, states in seen.items():
        assert len(states) == 1 and states <= set(T.FINAL), (tid, states)


# -- three nodes, real sockets, TLS ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fed3(tmp_path_factory):
    net, buyers, bundles = _make_net(tmp_path_factory.mktemp("xfer"))
    net.start_all()
    yield net, buyers, bundles
    net.stop_all()


def test_a_to_b_whole_then_b_to_c_partial_and_rest(fed3):
    net, buyers, bundles = fed3
    bid = bundles[A][0]
    wh = net[A].node.get_bundle(bid).wh
    out = net[A].js("transfer", bid, "--to", f"{B}/{buyers[B]}")
    assert out["transfer"]["state"] == "committed" and out["exported"]["id"] == bid
    assert _states(net, out["transfer"]["id"]) == {A: "committed", B: "committed"}
    assert [b.id for b in _active(net[B], buyers[B])] == [bid]
    _conserved(net)

    part = net[B].js("transfer", bid, "--to", f"{C}/{buyers[C]}", "--wh", "250")
    rem = part["remainder"]
    assert part["transfer"]["state"] == "committed"
    assert rem["serial_end"] - rem["serial_start"] == wh - 250
    _conserved(net)
    rest = net[B].js("transfer", part["remainder"]["id"], "--to", f"{C}/{buyers[C]}")
    assert rest["transfer"]["state"] == "committed"
    on_c = sorted(b.wh for b in _active(net[C], buyers[C]))
    assert on_c == sorted([250, wh - 250])
    report = _conserved(net)
    assert report.per_node[B].get("active", 0) == sum(
        net[B].node.get_bundle(x).wh for x in bundles[B])
    st = {p.node_id: p.js("status") for p in net}
    assert st[A]["wh_exported"] == wh and st[B]["wh_imported"] == wh == st[B]["wh_exported"]
    assert st[C]["wh_imported"] == wh
    listed = net[B].js("transfers")
    assert {x["direction"] for x in listed} == {"in", "out"}
    assert all(x["state"] == "committed" and not x["pending"] for x in listed)
    _agree(net)


def test_partial_from_c_to_a_and_refusal(fed3):
    net, buyers, bundles = fed3
    out = net[C].js("transfer", bundles[C][1], "--to", f"{A}/{buyers[A]}", "--wh", "100")
    assert out["transfer"]["state"] == "committed"
    _conserved(net)
    # unknown destination account: refused by A, aborted on both sides, C's bundle unlocked
    bad = net[C].cli("transfer", bundles[C][2], "--to", f"{A}/acct_{'a' * 26}", "--json",
                     ok=False)
    assert bad.returncode == 5
    assert "no account" in bad.stdout
    assert net[C].node.get_bundle(bundles[C][2]).status == Status.ACTIVE
    _conserved(net)
    _agree(net)


def test_replayed_messages_over_tls_change_nothing(fed3):
    net, buyers, bundles = fed3
    a = net[A]
    engine = T.Transfers(a.node)  # no transport: the PREPARE waits in the outbox
    first = engine.start(bundles[A][2], to=f"{B}/{buyers[B]}", request_id="replay")
    tid = first.transfer.id
    with a.node.store.read() as conn:
        prepare = bytes(tr.outbox_unacked(conn, tid)[0].payload)
    with PeerClient(a.node) as client:
        answers = [client.call(B, "PrepareTransfer", T.PT_PREPARE, prepare) for _ in range(3)]
        assert len({x for x in answers}) == 1
        assert fed.TransferStatus.FromString(answers[0][1]).state == \
            fed.TRANSFER_STATE_PREPARED
        engine.transport = client
        rec = engine.pump(tid)
        assert rec.state == T.COMMITTED and rec.settled
        decision = fed.TransferDecision(transfer_id=tid, decision=fed.TRANSFER_STATE_COMMITTED)
        for _ in range(2):
            client.call(B, "DecideTransfer", T.PT_DECISION, decision.SerializeToString())
        again = client.call(B, "PrepareTransfer", T.PT_PREPARE, prepare)
        assert again == answers[0]
    assert [x.id for x in _active(net[B]) if x.id == bundles[A][2]] == [bundles[A][2]]
    _conserved(net)
    _agree(net)


# -- crashes of real processes ---------------------------------------------------------------------

#: ``(process to crash, crash point)``; ``cli`` is the operator's ``eap-node transfer``
#: process (the source's inline sender), ``a`` / ``b`` the source's / destination's server.
PROCESS_CASES = [
    ("cli", "source.after_prepare_commit"),
    ("cli", "source.after_send_prepare"),
    ("cli", "source.after_decision_commit"),
    ("cli", "source.after_send_commit"),
    ("a", "source.after_send_prepare"),
    ("a", "source.after_decision_commit"),
    ("a", "source.after_send_commit"),
    ("b", "dest.in_prepare_txn"),
    ("b", "dest.after_prepared_commit"),
    ("b", "dest.in_commit_txn"),
    ("b", "dest.after_commit_commit"),
    ("b", "dest.after_status_reply"),
]
_rng = random.Random(7)
#: Default run: one seeded pick per process (the CLI, the source's and the destination's server).
DEFAULT_PROCESS_CASES = [_rng.choice([c for c in PROCESS_CASES if c[0] == who])
                         for who in ("cli", "a", "b")]


def _crash_case(root, who: str, point: str) -> None:
    net, buyers, bundles = _make_net(root, ids=(A, B))
    a, b = net[A], net[B]
    crash = {"EAP_CRASH_AT": point}
    args = ("transfer", bundles[A][1], "--to", f"{B}/{buyers[B]}", "--wh", "400", "--json",
            "--wait", "3")
    try:
        if who == "cli":  # the operator's inline sender dies; A's server finishes the work
            net.start_all()
            assert _cli(a, crash, *args).returncode == 137
        elif who == "a":  # the CLI dies at once, A's server takes over and dies at the point
            a.start(env=crash)
            b.start()
            assert _cli(a, {"EAP_CRASH_AT": "source.after_prepare_commit"}, *args).returncode \
                == 137
            assert a.proc.wait(30) == 137, a.log()[-3000:]
            a.start()
        elif point == "dest.after_status_reply":
            # A decides COMMIT but holds the message (long lease): B must ask A, and dies
            # with A's answer in hand; restarted, it asks again.
            write_settings(a.home, "transfers", lease_s=60.0)
            a.start()
            b.start(env=crash)
            assert _cli(a, {"EAP_CRASH_AT": "source.after_decision_commit"}, *args) \
                .returncode == 137
            assert b.proc.wait(30) == 137, b.log()[-3000:]
            b.start()
            deadline = time.monotonic() + 30
            while _states(net, _only_transfer(a))[B] != "committed":
                assert time.monotonic() < deadline, _states(net, _only_transfer(a))
                time.sleep(0.1)
            a.stop()
            a.start()  # recovery delivers the held COMMIT: a harmless duplicate
        else:  # the destination's server dies at the point while the CLI sends
            a.start()
            b.start(env=crash)
            _cli(a, {}, *args)
            assert b.proc.wait(30) == 137, b.log()[-3000:]
            b.start()
        _wait_settled(net)
        _conserved(net)
        _agree(net)
        assert set(_states(net, _only_transfer(a)).values()) == {"committed"}
    finally:
        net.stop_all()


def _only_transfer(proc) -> str:
    with proc.node.store.read() as conn:
        rows = tr.list_transfers(conn, direction="out", state=None, after=None, limit=10)
    assert len(rows) == 1, rows
    return rows[0].id


def _cli(proc, env, *args):
    import os
    import subprocess

    from fednet import CLI

    return subprocess.run([*CLI, *args, "--home", str(proc.home)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


@pytest.mark.parametrize("who, point", DEFAULT_PROCESS_CASES)
def test_process_crash_default(tmp_path, who, point):
    _crash_case(tmp_path, who, point)


@pytest.mark.slow
@pytest.mark.parametrize("who, point", [c for c in PROCESS_CASES
                                        if c not in DEFAULT_PROCESS_CASES])
def test_process_crash_matrix(tmp_path, who, point):
    _crash_case(tmp_path, who, point)


@pytest.mark.parametrize("seed", [11])
def test_sigkill_during_a_stream_of_transfers(tmp_path, seed):
    """SIGKILL the destination at a random moment while transfers flow, restart it."""
    import threading

    rng = random.Random(seed)
    net, buyers, _bundles = _make_net(tmp_path, ids=(A, B))
    a, b = net[A], net[B]
    try:
        net.start_all()
        client = PeerClient(a.node)
        engine = T.Transfers(a.node, client,
                             settings=T.TransferSettings(**{**TIMINGS, "inline_wait_s": 0.2}))
        killer = threading.Timer(rng.uniform(0.05, 0.4), b.kill)
        killer.start()
        sent = 0
        for i in range(15):
            mine = [x for x in _active(a) if x.wh > 20]
            engine.send(rng.choice(mine).id, to=f"{B}/{buyers[B]}", wh=rng.randint(1, 20),
                        request_id=f"s{i}")
            sent += 1
        killer.join()
        assert not b.running
        b.start()
        _wait_settled(net)
        client.close()
        _conserved(net)
        _agree(net)
        with a.node.store.read() as conn:
            outs = tr.list_transfers(conn, direction="out", state=None, after=None, limit=100)
        assert len(outs) == sent
    finally:
        net.stop_all()


@pytest.fixture
def pg_pair(pg_server):
    import uuid

    import psycopg

    names = [f"eap_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server.rsplit("/", 1)[0]
    yield {A: f"{base}/{names[0]}", B: f"{base}/{names[1]}"}
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_processes_on_postgres_with_a_destination_crash(tmp_path, pg_pair):
    net, buyers, bundles = _make_net(tmp_path, ids=(A, B), db_urls=pg_pair)
    a, b = net[A], net[B]
    try:
        a.start()
        b.start(env={"EAP_CRASH_AT": "dest.after_prepared_commit"})
        _cli(a, {}, "transfer", bundles[A][0], "--to", f"{B}/{buyers[B]}", "--wait", "1")
        assert b.proc.wait(30) == 137
        b.start()
        _wait_settled(net)
        out = a.js("transfer", bundles[A][1], "--to", f"{B}/{buyers[B]}", "--wh", "77")
        assert out["transfer"]["state"] == "committed"
        _conserved(net)
        _agree(net)
    finally:
        net.stop_all()
