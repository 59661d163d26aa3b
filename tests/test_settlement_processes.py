"""Settlement rounds across three ``eap-node serve`` processes over mutual TLS
(docs/settlement.md), driven as an operator would through each node's NodeApi (gRPC):

* seeded random priced trades, local (``TransferBundle`` to an account of the node) and
  cross-node (``NODE/ACCOUNT``), in EUR and COP, then ``RunSettlement`` on one node: one
  statement everywhere, positions summing to zero, every obligation settled exactly once,
  every node's co-op ledger agreeing with the signed statements;
* the same with a settlement backend failing transiently (``EAP_TEST_FLAKY_BACKEND``);
* a node killed at each settlement persistence point and restarted;
* priced trades refused over real gRPC, changing nothing.

One federation serves the whole module (each test adds trades and rounds; the invariants are
checked cumulatively over every round so far).  The default run trades 300 times for the
main round and 60 times with the flaky backend (seeded), crashes once on the coordinator and
once on a participant (a seeded pick each) and SIGKILLs once; ``--runslow`` adds 1,200-trade
rounds (plain and flaky), the whole crash matrix and two more SIGKILL seeds.

**Persistence points** (``eap.node.federation.crashpoints.SETTLEMENT_POINTS``), in the order a
round reaches them; ``EAP_CRASH_AT=<point>`` makes the process exit at once (137, as SIGKILL):

``coordinator.after_round_created``
    the round is recorded (``gathering``), no view asked.  Restarted, the coordinator fails
    it (presumed abort); the round is run again.
``coordinator.after_views``
    views gathered, statement stored (``signing``), no signature asked.  As above.
``participant.after_signed``
    a participant signed and stored the statement; the signature never reaches the
    coordinator, the round fails; the coordinator's next round supersedes it there.
``coordinator.after_decision``
    every signature stored and the decision durable (``finals_pending``), no final sent.
    Restarted, the coordinator delivers the finals before anything else.
``coordinator.after_final_sent``
    a final acknowledged, the acknowledgement not recorded: delivered again (idempotent).
``participant.after_finalized``
    obligations settled and sides queued at the participant, the ack not sent: the
    coordinator redelivers and gets the same ack.
``executor.after_backend_call``
    the co-op ledger posted a side, its receipt not recorded: executed again with the same
    idempotency key, the ledger returns the first receipt and posts nothing.

The coordinator is ``a.example`` (also a participant and an executor, so every point fires
there); ``b.example`` crashes at the participant and executor points.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from fednet import FedNet, write_settings
from sqlalchemy import select

from eap.node.domain import settlement_round as sr
from eap.node.federation import crashpoints
from eap.node.federation import transfers as T
from eap.node.records.enums import Purpose
from eap.node.store import schema
from eap.node.store import settlement_repos as srr
from eap.node.store import transfer_repos as tr
from eap.plugins import coop_ledger
from eap.v1 import federation_pb2 as fedpb
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb

A, B, C = "a.example", "b.example", "c.example"
NODES = ((A, "CO-ANT"), (B, "ES"), (C, "NL"))
CURRENCIES = ("EUR", "COP")
TRADES_DEFAULT, TRADES_SLOW = 300, 1200
#: Fast timings for the node processes.
TRANSFERS = {"ttl_s": 30.0, "lease_s": 1.0, "worker_interval_s": 0.2, "backoff_base_s": 0.1,
             "backoff_cap_s": 1.0, "inquire_after_s": 2.0, "inquire_cap_s": 2.0,
             "rpc_timeout_s": 5.0, "inline_wait_s": 10.0}
SETTLEMENT = {"rpc_timeout_s": 10.0, "rpc_attempts": 2, "backoff_base_s": 0.05,
              "backoff_cap_s": 0.4, "exec_interval_s": 0.2, "round_interval_s": 0.5}
#: Every member may owe this much per currency (the co-op ledger's default credit line).
LINES = {"EUR": 10**13, "COP": 10**13}
#: Credit limit towards every peer, per currency (settle threshold 0: rounds only on demand).
PEER_LIMIT = 10**15
SELLERS, BUYERS, HOURS = 2, 2, 12
FLAKY_FAILURES = 2


class Fed:
    """Three serve processes, their accounts and the bundles their sellers trade from."""

    def __init__(self, root) -> None:
        self.net = FedNet(root, list(NODES))
        self.accounts: dict[str, list[str]] = {}
        #: Per node, one list per issued bundle: [current bundle id (the remainder after
        #: each trade), its owner (the seller)].
        self.chains: dict[str, list[list[str]]] = {}
        self.channels: dict[str, grpc.Channel] = {}
        self.trade_seq = 0
        #: The settlement backend the processes run with.
        self.backend = "coop-ledger"
        for proc in self.net:
            home = proc.home
            write_settings(home, "transfers", **TRANSFERS)
            write_settings(home, "settlement", **SETTLEMENT, backend="coop-ledger",
                           **{"coop-ledger": {"default_credit_line_minor": LINES},
                              "flaky": {"default_credit_line_minor": LINES}})
        self.net.connect_all()
        for proc in self.net:
            node = proc.node
            for _ in range(SELLERS):
                proc.issue_hours(HOURS)
            for i in range(BUYERS):
                node.create_account(request_id=f"buyer-{i}", label=f"buyer {i}")
            accts = node.list_accounts(purpose=Purpose.OPERATIONS, page_size=100).items
            self.accounts[proc.node_id] = sorted(a.id for a in accts)
            self.chains[proc.node_id] = [[b.id, b.owner] for b in node.list_bundles(
                purpose=Purpose.OPERATIONS, page_size=1000).items]
            proc.close()
        self.net.start_all()
        for proc in self.net:
            for peer in self.net.nodes:
                if peer == proc.node_id:
                    continue
                for cur in CURRENCIES:
                    self.api(proc.node_id).SetPeerLimits(api.SetPeerLimitsRequest(
                        peer=peer, currency=cur, credit_limit_minor=PEER_LIMIT,
                        settle_threshold_minor=0), metadata=self.md(proc.node_id), timeout=30)

    # -- access ----------------------------------------------------------------------------------

    def api(self, node_id: str) -> node_api_pb2_grpc.NodeApiStub:
        if node_id not in self.channels:
            self.channels[node_id] = grpc.insecure_channel(
                f"127.0.0.1:{self.net[node_id].api_port}")
        return node_api_pb2_grpc.NodeApiStub(self.channels[node_id])

    def md(self, node_id: str) -> tuple:
        from eap.node.config import NodeConfig

        return (("authorization", f"Bearer {NodeConfig.load(self.net[node_id].home).api_token()}"),)

    def store(self, node_id: str):
        return self.net[node_id].node.store

    def ensure_running(self, env: dict[str, str] | None = None) -> None:
        for proc in self.net:
            if not proc.running:
                proc.start(env=env)

    def restart_all(self, env: dict[str, str] | None = None) -> None:
        for proc in self.net:
            proc.stop()
        for proc in self.net:
            proc.start(env=env, wait=False)
        for proc in self.net:
            proc.wait_ready()

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        self.net.stop_all()

    # -- trades ----------------------------------------------------------------------------------

    def trades(self, n: int, seed: int, *, cross_share: float = 0.6, workers: int = 6) -> dict:
        """``n`` seeded random priced trades of 1 Wh each through the sellers' NodeApi; the
        chains of one bundle run one after the other, ``workers`` chains at a time.  Returns
        counts by kind and state."""
        rng = random.Random(seed)
        plan: dict[tuple[str, int], list[tuple]] = defaultdict(list)
        for _ in range(n):
            self.trade_seq += 1
            src = rng.choice(list(self.net.nodes))
            chain = rng.randrange(len(self.chains[src]))
            if rng.random() < cross_share:
                dst = rng.choice([x for x in self.net.nodes if x != src])
                to = f"{dst}/{rng.choice(self.accounts[dst])}"
            else:
                to = ""  # a local account other than the seller, chosen when sending
            plan[(src, chain)].append((f"t{self.trade_seq}", to, rng.randint(1, 50_000),
                                       rng.choice(CURRENCIES), rng.random()))
        counts: Counter = Counter()
        lock = threading.Lock()

        def run(key: tuple[str, int]) -> None:
            src, chain = key
            stub, md = self.api(src), self.md(src)
            holder = self.chains[src][chain]
            others = [x for x in self.accounts[src] if x != holder[1]]
            for rid, to, price, cur, pick in plan[key]:
                if not to:
                    to = others[int(pick * len(others))]
                res = stub.TransferBundle(api.TransferBundleRequest(
                    request_id=rid, bundle_id=holder[0], to_account=to, wh=1,
                    price_minor=price, currency=cur), metadata=md, timeout=60)
                if res.HasField("remainder"):
                    holder[0] = res.remainder.id
                kind = "cross" if "/" in to else "local"
                state = fedpb.TransferState.Name(res.transfer.state) \
                    if kind == "cross" else "committed"
                with lock:
                    counts[(kind, state)] += 1

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, sorted(plan)))
        wait_transfers_final(self)
        return dict(counts)

    def periods(self) -> list[str]:
        out = set()
        for proc in self.net:
            with self.store(proc.node_id).read() as conn:
                out |= {r.period for r in conn.execute(
                    select(schema.obligations.c.period)
                    .where(schema.obligations.c.settled_round.is_(None)))}
        return sorted(out)


def wait_transfers_final(fed: Fed, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        busy = []
        for proc in fed.net:
            with fed.store(proc.node_id).read() as conn:
                rows = tr.list_transfers(conn, direction=None, state=None, after=None,
                                         limit=100_000)
                busy += [(proc.node_id, r.id, r.state) for r in rows if r.state not in T.FINAL
                         or tr.outbox_unacked(conn, r.id)]
        if not busy:
            return
        assert time.monotonic() < deadline, f"transfers not final: {busy[:5]}"
        time.sleep(0.2)


# -- reading the three databases ---------------------------------------------------------------


def obligations(fed: Fed) -> dict[str, dict[str, str | None]]:
    """Federation-wide obligation id -> node -> the round that settled it there."""
    out: dict[str, dict[str, str | None]] = defaultdict(dict)
    for proc in fed.net:
        with fed.store(proc.node_id).read() as conn:
            for row in conn.execute(select(schema.obligations)).all():
                out[srr.global_id(proc.node_id, row)][proc.node_id] = row.settled_round
    return dict(out)


def rounds(fed: Fed, node_id: str) -> dict[str, api.SettlementRound]:
    stub, md = fed.api(node_id), fed.md(node_id)
    out, token = {}, ""
    while True:
        page = stub.ListSettlementRounds(api.ListSettlementRoundsRequest(
            page_size=500, page_token=token), metadata=md, timeout=30)
        out.update({r.round_id: r for r in page.rounds})
        token = page.next_page_token
        if not token:
            return out


def run_round(fed: Fed, period: str, coordinator: str = A, **kw) -> api.SettlementRound:
    return fed.api(coordinator).RunSettlement(api.RunSettlementRequest(period=period, **kw),
                                              metadata=fed.md(coordinator), timeout=120)


def _unfinished(node_id: str, r: api.SettlementRound) -> bool:
    """Decided with sides pending (``final``), in doubt (``signing``: signed, no final yet),
    or a coordinator's round still gathering.  A participant may keep a ``gathering`` view
    of a round its coordinator died in before asking signatures: it holds nothing."""
    return r.state in ("final", "signing") or (r.state == "gathering"
                                               and r.coordinator == node_id)


def wait_executed(fed: Fed, timeout: float = 90.0) -> None:
    """Until no round is unfinished (:func:`_unfinished`) at any node (a restarted
    coordinator's worker fails its undecided rounds, the next round supersedes in-doubt ones
    at the participants, executors finish), and every final has reached every participant
    (GetSettlementRound / ListSettlementRounds)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {p.node_id: rounds(fed, p.node_id) for p in fed.net}
        open_ = [(n, rid, r.state) for n, rs in seen.items() for rid, r in rs.items()
                 if _unfinished(n, r)]
        # a decided round (final or settled at its coordinator) not yet final everywhere
        for rid, r in seen[A].items():
            if r.state in ("final", "settled") and r.statement:
                stmt = pb.SettlementStatement.FromString(r.statement)
                open_ += [(n, rid, seen[n][rid].state if rid in seen[n] else "-")
                          for n in stmt.participants
                          if rid not in seen[n] or seen[n][rid].state not in ("final", "settled")]
        if not open_:
            return
        assert time.monotonic() < deadline, f"rounds not executed: {open_[:6]}"
        time.sleep(0.2)


def settle_everything(fed: Fed, timeout: float = 120.0) -> list[str]:
    """Run rounds on A (retrying while a node restarts or a decided round's final is still
    owed) until no obligation is unsettled anywhere; wait for every side to execute.  The
    rounds run."""
    ran = []
    deadline = time.monotonic() + timeout
    while True:
        periods = fed.periods()
        if not periods:
            break
        assert time.monotonic() < deadline, f"still unsettled: {periods}"
        for period in periods:
            try:
                res = run_round(fed, period)
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                      grpc.StatusCode.UNAVAILABLE), exc
                time.sleep(0.5)
                continue
            ran.append(res.round_id)
            if res.state == "failed":
                time.sleep(0.5)
    wait_executed(fed)
    return ran


def check_federation(fed: Fed) -> dict[str, pb.SettlementStatement]:
    """Every invariant over the three nodes, cumulative over every round so far.

    * no round is left unfinished (:func:`_unfinished`) at any node;
    * a decided round has one statement (bytes and digest) at every participant, signed by
      all of them; its positions sum to zero per currency and its instructions move exactly
      the positions;
    * every obligation is settled, on both sides of a cross-node trade by the same round, and
      the obligations a round settled are the ones its statement counts and digests: nothing
      settled twice, nothing lost;
    * every instruction side of a decided round is executed once at its node: one co-op
      ledger entry per instruction involving the node (two sides of a local one post one
      entry), ``ledger check`` clean;
    * each member's ledger balance is the sum of its net positions over the statements;
      ``clearing:<B>`` at A is minus ``clearing:<A>`` at B per currency.

    Returns the decided statements by round id."""
    seen = {p.node_id: rounds(fed, p.node_id) for p in fed.net}
    decided: dict[str, pb.SettlementStatement] = {}
    for n, rs in seen.items():
        for rid, r in rs.items():
            assert not _unfinished(n, r), (n, rid, r.state)
            if r.state != "settled":
                continue
            assert r.digest == sr.digest(r.statement)
            stmt = pb.SettlementStatement.FromString(r.statement)
            for m in stmt.participants:
                other = seen[m][rid]
                assert other.state == "settled", (m, rid, other.state)
                assert (other.statement, other.digest) == (r.statement, r.digest), (m, rid)
                assert sorted(other.signed_by) == sorted(stmt.participants)
            decided[rid] = stmt
    for rid, stmt in decided.items():
        totals: Counter = Counter()
        flows: Counter = Counter()
        for p in stmt.positions:
            totals[p.currency] += p.net_minor
        assert set(totals.values()) <= {0}, (rid, totals)
        for ins in stmt.instructions:
            flows[(ins.payee, ins.currency)] += ins.amount_minor
            flows[(ins.payer, ins.currency)] -= ins.amount_minor
        assert {k: v for k, v in flows.items() if v} == \
            {(p.party, p.currency): p.net_minor for p in stmt.positions}, rid
        assert not stmt.held_out, (rid, list(stmt.held_out)[:3])

    # obligations: settled once, by a decided round, as that round's statement says
    by_round: dict[str, set[str]] = defaultdict(set)
    for oid, sides in obligations(fed).items():
        assert len(set(sides.values())) == 1, (oid, sides)
        (rid,) = set(sides.values())
        assert rid in decided, (oid, sides)
        stmt = decided[rid]
        assert set(sides) <= set(stmt.participants)
        assert len(sides) == (1 if "/trade/" in oid else 2), (oid, sides)
        by_round[rid].add(oid)
    for rid, stmt in decided.items():
        assert stmt.obligations == len(by_round[rid]), rid
        assert stmt.obligations_digest == sr.obligations_digest(by_round[rid]), rid

    # ledgers: executed once, balanced, matching the statements
    expected: Counter = Counter()
    for stmt in decided.values():
        for p in stmt.positions:
            expected[(p.party, p.currency)] += p.net_minor
    clearing: dict[tuple[str, str, str], int] = {}
    for proc in fed.net:
        n = proc.node_id
        store = fed.store(n)
        assert coop_ledger.check(store) == [], n
        mine = [ins for stmt in decided.values() for ins in stmt.instructions
                if sr.involves(ins, n)]
        sides = sum(len(sr.involves(ins, n)) for ins in mine)
        with store.read() as conn:
            execs = [e for rid in decided for e in srr.executions(conn, rid)]
        assert len(execs) == sides and {e.state for e in execs} <= {"executed"}, n
        entries = coop_ledger.entries(store)
        assert len(entries) == len(mine), (n, len(entries), len(mine))
        assert len({e["idempotency_key"] for e in entries}) == len(entries)
        assert Counter(e["instruction_id"] for e in entries) == \
            Counter(ins.id for ins in mine), n
        for row in coop_ledger.balances(store):
            if row["kind"] == "member":
                party = f"{n}/{row['account']}"
                assert row["balance_minor"] == expected.pop((party, row["currency"]), 0), \
                    (party, row)
            else:
                peer = row["account"].removeprefix("clearing:")
                clearing[(n, peer, row["currency"])] = row["balance_minor"]
    assert {k: v for k, v in expected.items() if v} == {}, "positions with no ledger account"
    for (n, peer, cur), bal in clearing.items():
        assert clearing.get((peer, n, cur), 0) == -bal, (n, peer, cur, bal)
    return decided


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    f = Fed(tmp_path_factory.mktemp("settle-procs"))
    yield f
    f.close()


@pytest.fixture
def running(fed):
    """Every node up, with the co-op ledger as backend, before and after a test."""
    if fed.backend != "coop-ledger":
        for proc in fed.net:
            write_settings(proc.home, "settlement", backend="coop-ledger")
        fed.restart_all()
        fed.backend = "coop-ledger"
    fed.ensure_running()
    yield fed
    crashpoints.disarm()
    fed.ensure_running()


def _round_of_trades(fed: Fed, n: int, seed: int, *, tag: str = "") -> tuple[str, dict]:
    """``n`` trades, then a round on A per period they fall in (one, unless the trades
    straddle midnight UTC); checks each member's ledger balance moved by exactly its net
    position.  The (last) round's id and the counts of trades."""
    counts = fed.trades(n, seed)
    before = {p.node_id: coop_ledger.balances(fed.store(p.node_id)) for p in fed.net}
    positions: Counter = Counter()
    for period in fed.periods():
        res = run_round(fed, period, request_id=f"round-{tag}{seed}-{period}")
        assert res.state in ("final", "settled"), list(res.problems)
        for p in pb.SettlementStatement.FromString(res.statement).positions:
            positions[(p.party, p.currency)] += p.net_minor
    wait_executed(fed)
    after = {p.node_id: coop_ledger.balances(fed.store(p.node_id)) for p in fed.net}
    moved: Counter = Counter()
    for n_id in fed.net.nodes:
        for sign, rows in ((1, after[n_id]), (-1, before[n_id])):
            for row in rows:
                if row["kind"] == "member":
                    moved[(f"{n_id}/{row['account']}", row["currency"])] += \
                        sign * row["balance_minor"]
    assert {k: v for k, v in moved.items() if v} == {k: v for k, v in positions.items() if v}
    return res.round_id, counts


# -- 1. many trades, one round ----------------------------------------------------------------


def _many_trades_one_round(fed: Fed, n: int, seed: int) -> None:
    earlier = set(rounds(fed, A))
    round_id, counts = _round_of_trades(fed, n, seed)
    assert sum(counts.values()) == n
    assert counts.get(("cross", "TRANSFER_STATE_COMMITTED"), 0) > n // 3, counts
    assert counts.get(("local", "committed"), 0) > n // 5, counts
    decided = check_federation(fed)
    stmt = decided[round_id]
    assert sum(decided[r].obligations for r in decided if r not in earlier) == \
        counts.get(("cross", "TRANSFER_STATE_COMMITTED"), 0) + counts[("local", "committed")]
    assert sorted(stmt.participants) == sorted(fed.net.nodes)
    assert {c for c in (p.currency for p in stmt.positions)} == set(CURRENCIES)
    for rid_node in fed.net.nodes:  # GetSettlementRound at each node: one statement
        got = fed.api(rid_node).GetSettlementRound(api.GetSettlementRoundRequest(
            round_id=round_id), metadata=fed.md(rid_node), timeout=30)
        assert got.state == "settled" and got.digest == sr.digest(got.statement)
        assert got.statement == sr.statement_bytes(stmt)
        assert all(s.state in ("executed", "not ours") for s in got.instructions)
    # a second round settles nothing
    (period,) = {stmt.period}
    again = run_round(fed, period)
    again_stmt = pb.SettlementStatement.FromString(again.statement)
    assert again_stmt.obligations == 0 and not again_stmt.instructions
    wait_executed(fed)
    assert check_federation(fed)[round_id] == stmt


def test_many_trades_one_round(running):
    _many_trades_one_round(running, TRADES_DEFAULT, seed=1)


@pytest.mark.slow
def test_many_trades_one_round_slow(running):
    _many_trades_one_round(running, TRADES_SLOW, seed=2)


# -- 3. a node killed at each persistence point -----------------------------------------------

#: ``(node killed, crash point)``: the coordinator A at every point (it is also a participant
#: and an executor); the participant B at the participant and executor points.
CRASH_CASES = [(A, p) for p in crashpoints.SETTLEMENT_POINTS] + [
    (B, p) for p in crashpoints.SETTLEMENT_POINTS if not p.startswith("coordinator.")] + [
    # the coordinator dies after a *peer's* final is acknowledged (its own comes first)
    (A, "coordinator.after_final_sent@2")]
#: Nothing decided yet when the process dies at these: nothing may be settled anywhere.
UNDECIDED = ("coordinator.after_round_created", "coordinator.after_views",
             "participant.after_signed")
_rng = random.Random(8)
#: Default run: one seeded pick for the coordinator and one for a participant.
DEFAULT_CRASH_CASES = [_rng.choice([c for c in CRASH_CASES if c[0] == who]) for who in (A, B)]


def _settled_count(fed: Fed) -> int:
    return sum(1 for sides in obligations(fed).values() for r in sides.values() if r)


def _crash_case(fed: Fed, who: str, point: str, seed: int) -> None:
    victim = fed.net[who]
    victim.stop()
    victim.start(env={crashpoints.ENV: point})
    fed.trades(40, seed)
    periods = fed.periods()
    settled = _settled_count(fed)
    try:
        for period in periods:
            run_round(fed, period)
    except grpc.RpcError as exc:  # the coordinator died with the call in hand
        assert who == A and exc.code() == grpc.StatusCode.UNAVAILABLE, exc
    assert victim.proc.wait(60) == crashpoints.EXIT_CODE, victim.log()[-3000:]
    if point.partition("@")[0] in UNDECIDED:
        assert _settled_count(fed) == settled, "settled before the decision"
    victim.start()
    settle_everything(fed)
    check_federation(fed)


@pytest.mark.parametrize("who, point", DEFAULT_CRASH_CASES)
def test_crash_default(running, who, point):
    _crash_case(running, who, point, seed=100 + CRASH_CASES.index((who, point)))


@pytest.mark.slow
@pytest.mark.parametrize("who, point", [c for c in CRASH_CASES if c not in DEFAULT_CRASH_CASES])
def test_crash_matrix(running, who, point):
    _crash_case(running, who, point, seed=100 + CRASH_CASES.index((who, point)))


@pytest.mark.parametrize("seed", [21, pytest.param(22, marks=pytest.mark.slow),
                                  pytest.param(23, marks=pytest.mark.slow)])
def test_sigkill_during_a_round(running, seed):
    """SIGKILL (a real signal, at no chosen point) a participant at a seeded random moment
    while a round runs and its sides execute; restarted, everything settles once."""
    fed = running
    rng = random.Random(seed)
    fed.trades(80, seed)
    victim = fed.net[rng.choice((B, C))]
    killer = threading.Timer(rng.uniform(0.0, 0.6), victim.kill)
    killer.start()
    try:
        for period in fed.periods():
            run_round(fed, period)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
    killer.join()
    assert not victim.running
    victim.start()
    settle_everything(fed)
    check_federation(fed)


# -- 4. refused over real gRPC, nothing changed -----------------------------------------------


def _snapshot(fed: Fed) -> tuple:
    out = []
    for proc in fed.net:
        with fed.store(proc.node_id).read() as conn:
            for table in (schema.obligations, schema.transfers, schema.settlement_rounds):
                out.append(sorted(tuple(map(repr, r)) for r in conn.execute(select(table))))
        out.append(coop_ledger.balances(fed.store(proc.node_id)))
        bal = fed.api(proc.node_id).ListPeerBalances(api.ListPeerBalancesRequest(),
                                                     metadata=fed.md(proc.node_id), timeout=30)
        out.append([b.SerializeToString() for b in bal.balances])
    return tuple(out)


def test_refused_trades_change_nothing(running):
    """Unknown currency, negative or overflowing price (INVALID_ARGUMENT naming the field),
    a price past the peer's credit limit (FAILED_PRECONDITION naming limit and balance): the
    serve processes change nothing, at the seller's node and at the peer's."""
    from eap.node.api.status import field_violations

    fed = running
    stub, md = fed.api(A), fed.md(A)
    bundle, seller = fed.chains[A][0]
    cross_to = f"{C}/{fed.accounts[C][0]}"
    local_to = next(x for x in fed.accounts[A] if x != seller)
    (bal,) = [b for b in stub.ListPeerBalances(api.ListPeerBalancesRequest(), metadata=md,
                                               timeout=30).balances
              if (b.peer, b.currency) == (C, "EUR")]
    limit = max(bal.balance_minor, 0) + 100
    stub.SetPeerLimits(api.SetPeerLimitsRequest(peer=C, currency="EUR", credit_limit_minor=limit),
                       metadata=md, timeout=30)
    try:
        before = _snapshot(fed)
        bad = [(10, "ABC", "currency"), (10, "EURO", "currency"), (10, "eur", "currency"),
               (10, "", "currency"), (-5, "EUR", "price_minor"), (-(2**63), "COP", "price_minor"),
               (2**62 + 1, "EUR", "price_minor"), (2**63 - 1, "COP", "price_minor")]
        for i, (price, cur, field) in enumerate(bad):
            for to in (cross_to, local_to):
                with pytest.raises(grpc.RpcError) as err:
                    stub.TransferBundle(api.TransferBundleRequest(
                        request_id=f"bad-{i}-{len(to)}", bundle_id=bundle, to_account=to, wh=1,
                        price_minor=price, currency=cur), metadata=md, timeout=30)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (price, cur, to)
                assert field in {name for name, _ in field_violations(err.value)}, \
                    (price, cur, err.value.details())
        with pytest.raises(ValueError):  # past int64: no such request can be sent
            api.TransferBundleRequest(price_minor=2**63)
        over = limit - bal.balance_minor + 1
        with pytest.raises(grpc.RpcError) as err:
            stub.TransferBundle(api.TransferBundleRequest(
                request_id="over-limit", bundle_id=bundle, to_account=cross_to, wh=1,
                price_minor=over, currency="EUR"), metadata=md, timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"limit {limit:,}" in err.value.details(), err.value.details()
        assert f"balance {bal.balance_minor:,}" in err.value.details(), err.value.details()
        assert _snapshot(fed) == before
        # exactly at the limit: accepted
        ok = stub.TransferBundle(api.TransferBundleRequest(
            request_id="at-limit", bundle_id=bundle, to_account=cross_to, wh=1,
            price_minor=over - 1, currency="EUR"), metadata=md, timeout=60)
        assert ok.transfer.state == fedpb.TRANSFER_STATE_COMMITTED
        fed.chains[A][0][0] = ok.remainder.id
    finally:
        stub.SetPeerLimits(api.SetPeerLimitsRequest(peer=C, currency="EUR",
                                                    credit_limit_minor=PEER_LIMIT),
                           metadata=md, timeout=30)
    wait_transfers_final(fed)
    settle_everything(fed)
    check_federation(fed)


# -- 2. a backend failing transiently ---------------------------------------------------------


def _flaky_backend(fed: Fed, n: int, seed: int) -> None:
    """Every node's executor uses ``flaky`` (the co-op ledger behind ``FLAKY_FAILURES``
    transient failures per idempotency key): retries end with every side executed once."""
    for proc in fed.net:
        write_settings(proc.home, "settlement", backend="flaky")
    fed.restart_all(env={"EAP_TEST_FLAKY_BACKEND": str(FLAKY_FAILURES)})
    fed.backend = "flaky"  # switched back by the `running` fixture of the next test
    earlier = set(rounds(fed, A))
    _round_of_trades(fed, n, seed, tag="flaky-")
    decided = check_federation(fed)
    new = [rid for rid in decided if rid not in earlier]
    assert new
    for proc in fed.net:
        n_id = proc.node_id
        for rid in new:
            got = fed.api(n_id).GetSettlementRound(api.GetSettlementRoundRequest(
                round_id=rid), metadata=fed.md(n_id), timeout=30)
            for st in got.instructions:
                sides = sr.involves(st.instruction, n_id)
                if not sides:
                    assert st.state == "not ours"
                    continue
                # each side failed FLAKY_FAILURES times, then executed once
                assert st.state == "executed" and not st.last_error, st
                assert st.attempts == (FLAKY_FAILURES + 1) * len(sides), st
                assert st.backend == "flaky"
        # the operator's check, in its own process (exit 0)
        assert proc.js("ledger", "check") == {"ok": True, "problems": []}
        assert "simulated outage" in proc.log()


def test_flaky_backend(running):
    _flaky_backend(running, 60, seed=3)


@pytest.mark.slow
def test_flaky_backend_many_trades(running):
    _flaky_backend(running, TRADES_SLOW, seed=4)
