"""Several ``eap-node serve`` replicas of one node sharing one PostgreSQL database.

Real processes on loopback: node ``a.example`` runs as two or three replicas (homes assembled
from the same identity, as Kubernetes pods are, each on its own ports) beside a peer
``b.example``.  Conflicting spends of the same bundles are driven through different replicas
at once over gRPC: exactly one wins each conflict and Wh is conserved.  Replicas are killed in
the middle of background work (an outbox delivery to the peer, an anchoring call) and another
replica finishes it exactly once.  A second ``serve`` on one SQLite database is refused.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from fednet import CLI, FedNet, NodeProc, free_port, write_settings

from eap.node.federation import conservation
from eap.node.federation import transfers as T
from eap.node.records.enums import Purpose, Status
from eap.node.store import schema as t
from eap.node.store import transfer_repos as tr
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc

A, B = "a.example", "b.example"
TIMINGS = {
    "ttl_s": 20.0,
    "lease_s": 1.0,
    "worker_interval_s": 0.2,
    "backoff_base_s": 0.1,
    "backoff_cap_s": 1.0,
    "inquire_after_s": 2.0,
    "inquire_cap_s": 2.0,
    "rpc_timeout_s": 3.0,
    "inline_wait_s": 5.0,
}
#: How a spend that lost its race may fail: the bundle is gone (split, claimed), no longer the
#: caller's (moved), or changed under it.
LOSING = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
}


def replica(proc: NodeProc, name: str) -> NodeProc:
    """Another replica of ``proc``'s node: its home copied (identity, config, TLS: what the
    Kubernetes pods install from Secrets), on new loopback ports, on the same database."""
    home = proc.home.parent / name
    shutil.copytree(proc.home, home, ignore=shutil.ignore_patterns("serve.log", "*.locks"))
    api_port, fed_port = free_port(), free_port()
    write_settings(home, "api", listen=f"127.0.0.1:{api_port}")
    write_settings(home, "federation", listen=f"127.0.0.1:{fed_port}")
    return NodeProc(proc.node_id, proc.zone, home, api_port, fed_port)


class Cluster:
    """Node A as replicas on one PostgreSQL database, and its peer B (SQLite)."""

    def __init__(self, root: Path, pg_url: str, n: int = 3, **sections: dict) -> None:
        self.net = FedNet(root, [(A, "CO-ANT"), (B, "ES")], db_urls={A: pg_url})
        for proc in self.net:
            write_settings(proc.home, "transfers", **TIMINGS)
            for section, values in sections.items():
                write_settings(proc.home, section, **values)
        self.net.connect_all()
        created = self.net[A].node.create_account(request_id="owner")
        self.owner, self.owner_token = created.account.id, created.token
        self.buyers = [
            self.net[A].node.create_account(request_id=f"buyer-{i}").account.id for i in range(2)
        ]
        self.remote = self.net[B].node.create_account(request_id="remote").account.id
        self.replicas = [self.net[A]] + [replica(self.net[A], f"a{i}") for i in range(2, n + 1)]
        self.token = self.net[A].node.config.api_token()
        self._channels: list[grpc.Channel] = []

    @property
    def node(self):
        return self.net[A].node

    def issue(self, hours: int) -> list:
        """Bundles of ``owner`` issued in-process on A's database (one batch)."""
        from support import write_csv

        node = self.node
        n = len(self.bundles()) + 1
        node.register_device(
            request_id=f"dev-{n}",
            local_ref=f"roof-{n}",
            capacity_w=5000,
            source="solar",
            technology="photovoltaic",
            commissioned_on="2020-01-01",
            latitude=6.2,
            longitude=-75.5,
            zone="CO-ANT",
            owner=self.owner,
            meter_id=f"m-{n}",
            attestation_evidence=f"grid {n}",
        )
        rows = [
            (
                f"2024-02-{1 + h // 24:02d} {h % 24:02d}:00:00",
                f"2024-02-{1 + (h + 1) // 24:02d} {(h + 1) % 24:02d}:00:00",
                f"m-{n}",
                900 + h,
            )
            for h in range(hours)
        ]
        node.import_readings(write_csv(self.net[A].home / f"m{n}.csv", rows), request_id=f"imp-{n}")
        node.issue(request_id=f"iss-{n}")
        return self.bundles()

    def bundles(self, owner: str | None = None) -> list:
        return self.node.list_bundles(
            purpose=Purpose.OPERATIONS,
            owner=owner or self.owner,
            status=int(Status.ACTIVE),
            page_size=1000,
        ).items

    def start(self, env: dict | None = None) -> None:
        for p in (*self.replicas, self.net[B]):
            p.start(wait=False, env=env if p.node_id == A else None)
        for p in (*self.replicas, self.net[B]):
            p.wait_ready()

    def stub(self, i: int) -> node_api_pb2_grpc.NodeApiStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.replicas[i].api_port}")
        self._channels.append(channel)
        return node_api_pb2_grpc.NodeApiStub(channel)

    @property
    def md(self):
        """The owner's credentials: once a bundle left the owner, it is not theirs to spend."""
        return (("authorization", f"Bearer {self.owner_token}"),)

    def stop(self) -> None:
        for c in self._channels:
            c.close()
        for p in self.replicas[1:]:
            p.stop()
            p.close()
        self.net.stop_all()

    def conserved(self) -> conservation.ConservationReport:
        report = conservation.check({A: self.node.store, B: self.net[B].node.store})
        assert report.ok, report.describe()
        return report


@pytest.fixture
def cluster(tmp_path, pg_url):
    c = Cluster(tmp_path, pg_url)
    yield c
    c.stop()


def _race(calls) -> list:
    """Run the calls at once (one thread each); their results or gRPC errors."""
    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i, fn):
        barrier.wait()
        try:
            out[i] = fn()
        except grpc.RpcError as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    return out


def _conflict_calls(c: Cluster, bundle, tag: str, rng: random.Random) -> list:
    """Four spends of one bundle, each through a replica: a whole local transfer, a split, a
    whole claim and a cross-node transfer to B."""
    stubs = [c.stub(i) for i in range(len(c.replicas))]
    order = rng.sample(range(len(stubs)), len(stubs))
    pick = [stubs[order[i % len(order)]] for i in range(4)]
    half = max(1, bundle.wh // 2)
    return [
        lambda: pick[0].TransferBundle(
            api.TransferBundleRequest(
                request_id=f"{tag}-whole", bundle_id=bundle.id, to_account=c.buyers[0]
            ),
            metadata=c.md,
            timeout=60,
        ),
        lambda: pick[1].TransferBundle(
            api.TransferBundleRequest(
                request_id=f"{tag}-split", bundle_id=bundle.id, to_account=c.buyers[1], wh=half
            ),
            metadata=c.md,
            timeout=60,
        ),
        lambda: pick[2].RetireBundle(
            api.RetireBundleRequest(
                request_id=f"{tag}-claim",
                bundle_id=bundle.id,
                beneficiary="city hall",
                purpose="scope2-market-based",
            ),
            metadata=c.md,
            timeout=60,
        ),
        lambda: pick[3].TransferBundle(
            api.TransferBundleRequest(
                request_id=f"{tag}-remote", bundle_id=bundle.id, to_account=f"{B}/{c.remote}"
            ),
            metadata=c.md,
            timeout=60,
        ),
    ]


def _won(c: Cluster, result) -> bool:
    """Whether one spend took the bundle (a cross-node transfer: if it committed, looked up
    once every transfer settled)."""
    if isinstance(result, grpc.RpcError):
        assert result.code() in LOSING, (result.code(), result.details())
        return False
    if isinstance(result, api.TransferBundleResponse) and result.HasField("transfer"):
        with c.node.store.read() as conn:
            return tr.get_transfer(conn, result.transfer.id).state == T.COMMITTED
    return True


def _wait_settled(c: Cluster, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_ = []
        for store in (c.node.store, c.net[B].node.store):
            with store.read() as conn:
                for r in tr.list_transfers(
                    conn, direction=None, state=None, after=None, limit=1000
                ):
                    if r.state not in T.FINAL or tr.outbox_unacked(conn, r.id):
                        open_.append((r.id, r.state))
        if not open_:
            return
        time.sleep(0.1)
    raise AssertionError(f"transfers not settled after {timeout} s: {open_}")


def _run_conflicts(c: Cluster, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    bundles = sorted(c.bundles(), key=lambda b: b.id)[:rounds]
    assert len(bundles) == rounds
    raced = [_race(_conflict_calls(c, b, f"r{i}", rng)) for i, b in enumerate(bundles)]
    _wait_settled(c)
    for bundle, results in zip(bundles, raced, strict=True):
        winners = [r for r in results if _won(c, r)]
        assert len(winners) == 1, (bundle.id, [_brief(r) for r in results])
        after = c.node.get_bundle(bundle.id)  # spent: not the owner's ACTIVE bundle any more
        assert after.status != Status.ACTIVE or after.owner != c.owner
    c.conserved()  # Wh issued = held + retired + exported, on both nodes
    with c.node.store.read() as conn:
        claims = conn.execute(t.claims.select()).all()
    assert len(claims) == sum(not isinstance(r[2], grpc.RpcError) for r in raced)


@pytest.mark.postgres
def test_conflicting_spends_through_different_replicas(cluster):
    cluster.issue(8)
    cluster.start()
    _run_conflicts(cluster, rounds=6, seed=20261130)
    _same_request_everywhere(cluster)


def _same_request_everywhere(c: Cluster) -> None:
    """One request id sent to every replica at once (a client retrying through the balancer):
    one effect, and every replica answers with the first result."""
    op = (("authorization", f"Bearer {c.token}"),)
    stubs = [c.stub(i) for i in range(len(c.replicas))]
    before = len(c.node.list_accounts(purpose=Purpose.OPERATIONS, page_size=1000).items)
    made = _race(
        [
            lambda s=s: s.CreateAccount(
                api.CreateAccountRequest(request_id="same-account", label="retried"),
                metadata=op,
                timeout=60,
            )
            for s in stubs
        ]
    )
    assert not any(isinstance(r, grpc.RpcError) for r in made), made
    assert len({r.account.id for r in made}) == 1
    after = c.node.list_accounts(purpose=Purpose.OPERATIONS, page_size=1000).items
    assert len(after) == before + 1
    bundle = max(c.bundles(), key=lambda b: b.wh)
    moved = _race(
        [
            lambda s=s: s.TransferBundle(
                api.TransferBundleRequest(
                    request_id="same-split", bundle_id=bundle.id, to_account=c.buyers[1], wh=3
                ),
                metadata=c.md,
                timeout=60,
            )
            for s in stubs
        ]
    )
    assert not any(isinstance(r, grpc.RpcError) for r in moved), moved
    assert len({r.SerializeToString(deterministic=True) for r in moved}) == 1
    assert c.node.get_bundle(moved[0].transferred.id).wh == 3
    c.conserved()


@pytest.mark.postgres
@pytest.mark.slow
def test_conflicting_spends_through_different_replicas_long(cluster):
    cluster.issue(48)
    cluster.start()
    _run_conflicts(cluster, rounds=40, seed=7)


#: Where the replica that took a cross-node transfer dies (``EAP_CRASH_AT``: exit 137, as
#: SIGKILL, no cleanup): PREPARE written not sent; PREPARED received not recorded; decision
#: durable not announced; COMMIT acknowledged, acknowledgement not recorded.
KILL_POINTS = (
    "source.after_prepare_commit",
    "source.after_send_prepare",
    "source.after_decision_commit",
    "source.after_send_commit",
)
#: The bounded seeded share run by default; --runslow runs every point.
DEFAULT_KILL_POINT = random.Random(20261130).choice(KILL_POINTS)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "point",
    [
        pytest.param(p, marks=() if p == DEFAULT_KILL_POINT else pytest.mark.slow)
        for p in KILL_POINTS
    ],
)
def test_replica_killed_mid_delivery_another_finishes_the_transfer(tmp_path, pg_url, point):
    c = Cluster(tmp_path, pg_url, n=2)
    try:
        bundle = sorted(c.issue(3), key=lambda b: b.id)[0]
        c.net[B].start()
        c.replicas[1].start()
        c.replicas[0].start(env={"EAP_CRASH_AT": point})
        c.net[B].js("sync", "--peer", A)
        with pytest.raises(grpc.RpcError) as err:
            c.stub(0).TransferBundle(
                api.TransferBundleRequest(
                    request_id="x1", bundle_id=bundle.id, to_account=f"{B}/{c.remote}"
                ),
                metadata=c.md,
                timeout=30,
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert c.replicas[0].proc.wait(30) == 137
        # the surviving replica's worker takes the leased message over and finishes it
        _wait_settled(c)
        with c.node.store.read() as conn:
            (out,) = tr.list_transfers(conn, direction="out", state=None, after=None, limit=10)
        assert out.state == T.COMMITTED
        with c.net[B].node.store.read() as conn:
            (inb,) = tr.list_transfers(conn, direction="in", state=None, after=None, limit=10)
            kinds = {
                r.kind
                for r in conn.execute(
                    t.transfer_inbox.select().where(t.transfer_inbox.c.transfer_id == out.id)
                )
            }
        assert inb.id == out.id and inb.state == T.COMMITTED
        assert kinds == {"prepare", "commit"}  # applied once each (the inbox answers replays)
        assert c.node.get_bundle(bundle.id).status == Status.EXPORTED
        held = (
            c.net[B]
            .node.list_bundles(
                purpose=Purpose.OPERATIONS, owner=c.remote, status=int(Status.ACTIVE), page_size=10
            )
            .items
        )
        assert [b.wh for b in held] == [bundle.wh]
        c.conserved()
    finally:
        c.stop()


@pytest.mark.postgres
def test_replica_sigkilled_mid_outbox_resend_another_finishes_it(tmp_path, pg_url):
    """The peer is down when a transfer starts, so its PREPARE waits in the outbox; once the
    peer is back, the replica whose worker resends it stops right after the peer answered
    PREPARED (``EAP_HANG_AT``: the first replica to get there, holding the worker's lock and
    the message's lease) and is SIGKILLed.  The other replica's worker takes the message over
    once the lease ends, and the transfer commits once on both nodes."""
    c = Cluster(tmp_path, pg_url, n=2)
    marker = tmp_path / "hung.pid"
    try:
        bundle = sorted(c.issue(3), key=lambda b: b.id)[0]
        c.start(env={"EAP_HANG_AT": f"source.after_send_prepare={marker}"})
        c.net[B].js("sync", "--peer", A)  # B knows A's batches, then goes down
        c.net[B].stop()
        res = c.stub(1).TransferBundle(
            api.TransferBundleRequest(
                request_id="x1", bundle_id=bundle.id, to_account=f"{B}/{c.remote}"
            ),
            metadata=c.md,
            timeout=30,
        )
        assert res.transfer.state == fed_state("preparing")  # the peer is down
        c.net[B].start()
        _wait("a replica's worker resent the PREPARE", marker.exists, timeout=60)
        hung_pid = int(_wait("the marker's pid", lambda: marker.read_text().strip()))
        (hung,) = [r for r in c.replicas if r.proc.pid == hung_pid]
        with c.node.store.read() as conn:
            assert tr.get_transfer(conn, res.transfer.id).state == T.PREPARING
        hung.proc.send_signal(signal.SIGKILL)
        hung.proc.wait(30)
        _wait_settled(c)
        with c.node.store.read() as conn:
            out = tr.get_transfer(conn, res.transfer.id)
        with c.net[B].node.store.read() as conn:
            inb = tr.get_transfer(conn, res.transfer.id)
        assert out.state == inb.state == T.COMMITTED
        held = (
            c.net[B]
            .node.list_bundles(
                purpose=Purpose.OPERATIONS, owner=c.remote, status=int(Status.ACTIVE), page_size=10
            )
            .items
        )
        assert [b.wh for b in held] == [bundle.wh]
        (survivor,) = [r for r in c.replicas if r is not hung]
        assert survivor.running
        c.conserved()
    finally:
        c.stop()


@pytest.mark.postgres
def test_replica_sigkilled_mid_anchoring_another_anchors_each_batch_once(tmp_path, pg_url):
    shared = tmp_path / "anchors"
    c = Cluster(tmp_path / "net", pg_url, n=2, plugins={"anchor_interval_s": 0.2})
    try:
        seqs = []
        for _ in range(3):
            c.issue(2)
            with c.node.store.read() as conn:
                seqs.append(
                    conn.execute(t.batches.select().order_by(t.batches.c.seq.desc())).first().seq
                )
        with c.node.store.transaction() as conn:  # the slow anchor's queue rows
            conn.execute(
                t.anchor_queue.insert(),
                [{"seq": s, "plugin": "slow_anchor", "enqueued_at_ms": 0} for s in seqs],
            )
        env = {"EAP_TEST_SLOW_ANCHOR": f"2.5:{shared}"}
        for r in c.replicas:
            r.start(wait=False, env=env)
        for r in c.replicas:
            r.wait_ready()
        live = c.node.store.coordinator.replicas()
        assert len(live) == 2 and all(r["application"].startswith("eap-node ") for r in live)
        calls = shared / "calls.log"

        def attempts() -> list[tuple[int, int]]:
            text = calls.read_text() if calls.exists() else ""
            return [tuple(map(int, x.split())) for x in text.splitlines()]

        deadline = time.monotonic() + 90
        # whoever drains first: let it finish one batch and begin the next, then SIGKILL it
        while len(attempts()) < 2:
            assert time.monotonic() < deadline, f"anchoring did not progress: {attempts()}"
            time.sleep(0.02)
        victim_pid = attempts()[0][0]
        (victim,) = [r for r in c.replicas if r.proc.pid == victim_pid]
        victim.proc.send_signal(signal.SIGKILL)  # mid-call: the plugin sleeps
        victim.proc.wait(30)
        before_kill = attempts()
        seqs.sort()
        # while it lived, no other replica drained beside it
        assert before_kill == [(victim_pid, seqs[0]), (victim_pid, seqs[1])]
        deadline = time.monotonic() + 90
        while True:
            with c.node.store.read() as conn:
                pending = conn.execute(
                    t.anchor_queue.select().where(
                        t.anchor_queue.c.plugin == "slow_anchor",
                        t.anchor_queue.c.anchored_at_ms.is_(None),
                    )
                ).all()
            if not pending:
                break
            assert time.monotonic() < deadline, f"still pending: {pending}"
            time.sleep(0.1)
        import json

        anchored = [json.loads(x) for x in (shared / "anchors.log").read_text().splitlines()]
        assert sorted(e["seq"] for e in anchored) == sorted(seqs)  # each batch once
        lines = attempts()
        by_others = [s for p, s in lines if p != victim_pid]
        # the survivor took over after the kill: the batch in flight again, then the rest;
        # never the batch the victim finished
        assert lines[:2] == before_kill and by_others == seqs[1:]
        by_seq = sorted(anchored, key=lambda e: e["seq"])
        assert [e["pid"] == victim_pid for e in by_seq] == [True, False, False]
        (survivor,) = [r for r in c.replicas if r is not victim]
        # the dead one's sessions are gone: the one holding the anchoring lock is (the survivor
        # took it over); its idle pool connections end when PostgreSQL reads their EOF
        def alone():
            live = survivor.js("replicas")["replicas"]
            return live if len(live) == 1 else None

        (left,) = _wait("only the survivor's sessions", alone, timeout=30)
        assert left["application"].endswith(f" {survivor.proc.pid}")
    finally:
        c.stop()


SETTLEMENT = {
    "rpc_timeout_s": 10.0,
    "rpc_attempts": 2,
    "backoff_base_s": 0.05,
    "backoff_cap_s": 0.4,
    "exec_interval_s": 0.2,
    "round_interval_s": 0.3,
    "backend": "coop-ledger",
    "coop-ledger": {"default_credit_line_minor": {"EUR": 10**13}},
}


def _unsettled_obligations(store) -> list:
    with store.read() as conn:
        return conn.execute(
            t.obligations.select().where(t.obligations.c.settled_round.is_(None))
        ).all()


def _wait(what, predicate, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.1)


@pytest.mark.postgres
def test_replica_killed_driving_a_round_another_fails_it_and_settles(tmp_path, pg_url):
    """The replica driving a settlement round dies (after gathering the views, before asking
    for signatures); another live replica fails that round (presumed abort: nobody holds its
    lock), and a round run through it settles every obligation once on both nodes."""
    from eap.plugins import coop_ledger

    c = Cluster(tmp_path, pg_url, n=2, settlement=SETTLEMENT)
    try:
        bundle = max(c.issue(4), key=lambda b: b.wh)
        c.net[B].issue_hours(2)
        b_node = c.net[B].node
        b_owner = b_node.list_bundles(purpose=Purpose.OPERATIONS, page_size=10).items[0]
        c.start()
        op = (("authorization", f"Bearer {c.token}"),)
        b_stub = node_api_pb2_grpc.NodeApiStub(
            grpc.insecure_channel(f"127.0.0.1:{c.net[B].api_port}")
        )
        b_md = (("authorization", f"Bearer {b_node.config.api_token()}"),)
        for stub, md, peer in ((c.stub(1), op, B), (b_stub, b_md, A)):
            stub.SetPeerLimits(
                api.SetPeerLimitsRequest(
                    peer=peer, currency="EUR", credit_limit_minor=10**15, settle_threshold_minor=0
                ),
                metadata=md,
                timeout=30,
            )
        # priced trades both ways, through both replicas of A
        source = bundle.id
        for i in range(4):
            res = c.stub(i % 2).TransferBundle(
                api.TransferBundleRequest(
                    request_id=f"sell-{i}",
                    bundle_id=source,
                    to_account=f"{B}/{c.remote}",
                    wh=1,
                    price_minor=1000 + i,
                    currency="EUR",
                ),
                metadata=c.md,
                timeout=60,
            )
            assert res.transfer.state == fed_state("committed")
            source = res.remainder.id
        b_source = b_owner.id
        for i in range(2):
            res = b_stub.TransferBundle(
                api.TransferBundleRequest(
                    request_id=f"buy-{i}",
                    bundle_id=b_source,
                    to_account=f"{A}/{c.buyers[0]}",
                    wh=1,
                    price_minor=700,
                    currency="EUR",
                ),
                metadata=b_md,
                timeout=60,
            )
            assert res.transfer.state == fed_state("committed")
            b_source = res.remainder.id
        _wait_settled(c)
        (period,) = {o.period for o in _unsettled_obligations(c.node.store)}
        # replica 0 coordinates, and dies with the round in hand
        dying = c.replicas[0]
        dying.stop()
        dying.start(env={"EAP_CRASH_AT": "coordinator.after_views"})
        with pytest.raises(grpc.RpcError) as err:
            c.stub(0).RunSettlement(
                api.RunSettlementRequest(period=period), metadata=op, timeout=60
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert dying.proc.wait(30) == 137
        with c.node.store.read() as conn:
            (orphan,) = conn.execute(t.settlement_rounds.select()).all()
        assert orphan.state == "signing"
        # the live replica's worker finds nobody driving it: presumed abort

        def failed():
            with c.node.store.read() as conn:
                row = conn.execute(
                    t.settlement_rounds.select().where(
                        t.settlement_rounds.c.round_id == orphan.round_id
                    )
                ).first()
            return row.state == "failed"

        _wait("the orphaned round failed", failed)
        done = c.stub(1).RunSettlement(
            api.RunSettlementRequest(period=period), metadata=op, timeout=120
        )
        assert done.state in ("final", "settled"), done
        _wait(
            "every obligation settled on both nodes",
            lambda: (
                not (_unsettled_obligations(c.node.store) or _unsettled_obligations(b_node.store))
            ),
        )

        def executed():
            with c.node.store.read() as conn:
                row = conn.execute(
                    t.settlement_rounds.select().where(
                        t.settlement_rounds.c.round_id == done.round_id
                    )
                ).first()
            return row.state == "settled"

        _wait("the round's sides executed", executed)
        with c.node.store.read() as conn:
            settled_by = {
                o.obligation_id: o.settled_round for o in conn.execute(t.obligations.select()).all()
            }
        assert set(settled_by.values()) == {done.round_id}
        assert coop_ledger.check(c.node.store) == []
        entries = coop_ledger.entries(c.node.store, done.round_id)
        assert entries and len({e["idempotency_key"] for e in entries}) == len(entries)
        c.conserved()
    finally:
        c.stop()


def fed_state(name: str) -> int:
    from eap.v1 import federation_pb2 as fed

    return fed.TransferState.Value(f"TRANSFER_STATE_{name.upper()}")


def test_a_second_serve_on_one_sqlite_database_is_refused(tmp_path):
    net = FedNet(tmp_path, [(A, "CO-ANT")])
    try:
        first = net[A].start()
        twin = replica(first, "twin")
        proc = subprocess.run(
            [*CLI, "serve", "--home", str(twin.home)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode != 0
        assert "another `eap-node serve` is running on the SQLite database" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert first.running  # the first one serves on
        (listed,) = twin.js("replicas")["replicas"]
        assert listed["pid"] == first.proc.pid
    finally:
        net.stop_all()


def _brief(result) -> str:
    if isinstance(result, grpc.RpcError):
        return f"{result.code().name}: {result.details()}"
    if isinstance(result, api.TransferBundleResponse):
        state = result.transfer.state if result.HasField("transfer") else "local"
        return (
            f"transfer {result.transferred.id} {result.transferred.wh} Wh "
            f"-> {result.transferred.owner} ({state})"
        )
    return f"claim {result.id}"
