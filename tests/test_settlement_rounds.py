"""Settlement rounds across an in-process federation of three real nodes (docs/settlement.md):
one statement everywhere, positions summing to zero, every agreed obligation settled exactly
once, held-out obligations reported and left alone, refusals that change nothing, a crash at
every persistence point, and a backend that fails transiently."""

from __future__ import annotations

import contextlib
import threading

import grpc
import pytest
from sqlalchemy import select, update
from test_transfers_support import Federation

from eap.node.api.server import build_server
from eap.node.api.servicer import NodeApiServicer
from eap.node.domain import provenance
from eap.node.domain import settlement_round as sr
from eap.node.errors import FailedPrecondition, PermissionDenied
from eap.node.federation import crashpoints
from eap.node.federation import settlement as S
from eap.node.federation.crashpoints import SimulatedCrash
from eap.node.store import schema, settlement_repos
from eap.v1 import federation_pb2 as fed
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb

PERIOD = "2024-01-01"


def acct(tag: str) -> str:
    return "acct_" + (tag * 26)[:26]


class Backend:
    """A settlement backend idempotent by (instruction id, side), failing transiently the first
    ``fail`` calls."""

    class Error(Exception):
        def __init__(self, message: str, transient: bool = True) -> None:
            super().__init__(message)
            self.transient = transient

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.calls = 0
        self.entries: dict[tuple[str, str], dict] = {}

    def __call__(self, node, item: dict) -> dict:
        self.calls += 1
        if self.fail > 0:
            self.fail -= 1
            raise Backend.Error("ledger busy")
        key = (item["instruction_id"], item["side"])
        if key not in self.entries:
            self.entries[key] = {"backend": "test", "reference": f"e{len(self.entries)}",
                                 "node": node.node_id, **item}
        return self.entries[key]


@pytest.fixture
def abc(tmp_path):
    f = Federation(tmp_path, "abc", hours=1)
    f.backend = Backend()
    for key in "abc":
        f[key].engine.settlement._backend = f.backend
    yield f
    crashpoints.disarm()
    f.close()


def svc(f: Federation, key: str) -> S.Settlement:
    s = f[key].engine.settlement
    s._backend = f.backend
    return s


def insert(f: Federation, key: str, oid: str, payer: str, payee: str, amount: int,
           currency: str = "EUR", period: str = PERIOD) -> None:
    city = f[key]
    local = payer.split("/")[0] == payee.split("/")[0] == city.node_id
    with city.node.store.transaction() as conn:
        conn.execute(schema.obligations.insert().values(
            period=period, payer=payer.split("/", 1)[1] if local else payer,
            payee=payee.split("/", 1)[1] if local else payee, amount_minor=amount,
            currency=currency, bundle_id=f"{city.node_id}/0-1", wh=1, request_id=oid[-60:],
            created_at_ms=0, obligation_id=oid, transfer_id=None if local else oid,
            peer=None if local else next(p.split("/")[0] for p in (payer, payee)
                                         if p.split("/")[0] != city.node_id)))


def party(f: Federation, key: str, tag: str) -> str:
    return f"{f[key].node_id}/{acct(tag)}"


def book(f: Federation) -> dict[str, set[str]]:
    """Agreed obligations (one on each side of a cross-node trade) and the held-out ones."""
    a, b, c = (lambda t, k=k: party(f, k, t) for k in "abc")
    agreed, held = set(), set()

    def local(key, oid, payer, payee, amount, cur="EUR"):
        insert(f, key, oid, payer, payee, amount, cur)
        agreed.add(oid)

    def cross(oid, k1, k2, payer, payee, amount, cur="EUR"):
        insert(f, k1, oid, payer, payee, amount, cur)
        insert(f, k2, oid, payer, payee, amount, cur)
        agreed.add(oid)

    an, bn, cn = (f[k].node_id for k in "abc")
    local("a", f"{an}/trade/1", a("x"), a("y"), 1_000)
    local("a", f"{an}/trade/2", a("y"), a("x"), 400)
    local("b", f"{bn}/trade/1", b("p"), b("q"), 250, "USD")
    cross(f"{an}/t1", "a", "b", b("p"), a("x"), 5_000)
    cross(f"{an}/t2", "a", "b", b("q"), a("y"), 700)
    cross(f"{bn}/t3", "b", "a", a("x"), b("p"), 1_200)
    cross(f"{bn}/t4", "b", "c", c("m"), b("p"), 3_000)
    cross(f"{cn}/t5", "c", "a", a("y"), c("m"), 2_500)
    cross(f"{cn}/t6", "c", "b", b("q"), c("n"), 90, "USD")
    # one-sided: A records a trade with C that C never recorded
    insert(f, "a", f"{an}/t7", c("m"), a("x"), 800)
    held.add(f"{an}/t7")
    # terms differ: B says 600, A says 650
    insert(f, "a", f"{bn}/t8", a("x"), b("q"), 650)
    insert(f, "b", f"{bn}/t8", a("x"), b("q"), 600)
    held.add(f"{bn}/t8")
    return {"agreed": agreed, "held": held}


def settled_rounds(f: Federation) -> dict[str, dict[str, str | None]]:
    """Obligation id -> node -> the round that settled it there."""
    out: dict[str, dict[str, str | None]] = {}
    for key in "abc":
        city = f[key]
        with city.node.store.read() as conn:
            for row in conn.execute(select(schema.obligations)).all():
                gid = settlement_repos.global_id(city.node_id, row)
                out.setdefault(gid, {})[key] = row.settled_round
    return out


def execute_all(f: Federation, rounds: int = 20) -> None:
    for _ in range(rounds):
        for key in "abc":
            svc(f, key).execute_due(force=True)
        with_pending = False
        for key in "abc":
            with f[key].node.store.read() as conn:
                with_pending |= bool(settlement_repos.due_executions(conn, 2**62, 1))
        if not with_pending:
            return
    raise AssertionError("executions still pending")


def check_settled_once(f: Federation, ids: dict[str, set[str]]) -> str:
    """Every agreed obligation settled on both sides by the same final round; held-out ones
    untouched; one statement everywhere; every instruction side executed once.  The round."""
    where = settled_rounds(f)
    rounds = set()
    for oid in ids["agreed"]:
        sides = where[oid]
        assert all(sides.values()), (oid, sides)
        assert len(set(sides.values())) == 1, (oid, sides)
        rounds |= set(sides.values())
    for oid in ids["held"]:
        assert not any(where[oid].values()), (oid, where[oid])
    assert len(rounds) == 1, rounds
    (round_id,) = rounds
    msgs = {k: svc(f, k).get(round_id) for k in "abc"}
    assert len({m.statement for m in msgs.values()}) == 1
    assert len({m.digest for m in msgs.values()}) == 1
    stmt = pb.SettlementStatement.FromString(msgs["a"].statement)
    assert stmt.obligations == len(ids["agreed"])
    assert {o.id for o in stmt.held_out} == ids["held"]
    totals: dict[str, int] = {}
    for p in stmt.positions:
        totals[p.currency] = totals.get(p.currency, 0) + p.net_minor
    assert set(totals.values()) == {0}
    # the instructions pay exactly the positions
    flows: dict[tuple[str, str], int] = {}
    for ins in stmt.instructions:
        flows[(ins.payee, ins.currency)] = flows.get((ins.payee, ins.currency), 0) \
            + ins.amount_minor
        flows[(ins.payer, ins.currency)] = flows.get((ins.payer, ins.currency), 0) \
            - ins.amount_minor
    assert {k: v for k, v in flows.items() if v} == \
        {(p.party, p.currency): p.net_minor for p in stmt.positions}
    execute_all(f)
    expected = {(ins.id, side) for ins in stmt.instructions for side in ("debit", "credit")}
    assert set(f.backend.entries) == expected
    for (iid, side), entry in f.backend.entries.items():
        ins = next(i for i in stmt.instructions if i.id == iid)
        who = ins.payer if side == "debit" else ins.payee
        assert entry["node"] == sr.node_of(who)
    for key in "abc":
        m = svc(f, key).get(round_id)
        assert m.state == S.SETTLED, (key, m.state, list(m.problems))
        assert len(m.signed_by) == 3
        for st in m.instructions:
            ours = sr.involves(st.instruction, f[key].node_id)
            assert st.state == ("executed" if ours else "not ours")
    return round_id


# -- the round ---------------------------------------------------------------------------------


def test_a_round_settles_every_agreed_obligation_once(abc):
    ids = book(abc)
    result = svc(abc, "a").run(PERIOD, request_id="r1")
    assert result.state == S.FINAL, list(result.problems)
    assert result.round_id.startswith(f"{abc['a'].node_id}/{PERIOD}/")
    assert {c.currency for c in result.currencies} == {"EUR", "USD"}
    eur = next(c for c in result.currencies if c.currency == "EUR")
    assert eur.gross_minor == 1_000 + 400 + 5_000 + 700 + 1_200 + 3_000 + 2_500
    assert 0 < eur.efficiency < 1 and eur.net_minor < eur.gross_minor
    assert {o.id for o in result.held_out} == ids["held"]
    # idempotent by request id
    assert svc(abc, "a").run(PERIOD, request_id="r1").round_id == result.round_id
    round_id = check_settled_once(abc, ids)
    assert round_id == result.round_id
    d = S.round_dict(svc(abc, "b").get(round_id))
    assert d["state"] == "settled" and d["obligations"] == len(ids["agreed"])
    # a second round finds only the held-out obligations: nothing more is settled
    abc.clock.advance(1)
    again = svc(abc, "b").run(PERIOD)
    stmt = pb.SettlementStatement.FromString(again.statement)
    assert stmt.obligations == 0 and not stmt.instructions
    assert {o.id for o in stmt.held_out} == ids["held"]
    assert [r.round_id for r in svc(abc, "b").list().rounds][:2] == [again.round_id, round_id]


def test_transiently_failing_backend_is_retried_until_done(abc):
    ids = book(abc)
    abc.backend.fail = 7
    result = svc(abc, "a").run(PERIOD)
    assert result.state == S.FINAL
    svc(abc, "a").execute_due(force=True)
    m = svc(abc, "a").get(result.round_id)
    assert m.state == S.FINAL
    assert any(s.last_error and s.state == "pending" for s in m.instructions)
    for _ in range(3):
        abc.clock.advance(600)
        for key in "abc":
            svc(abc, key).execute_due()
    check_settled_once(abc, ids)


def test_unreachable_peer_fails_the_round_and_settles_nothing(abc):
    ids = book(abc)
    abc.down("c")
    result = svc(abc, "a").run(PERIOD)
    assert result.state == S.FAILED
    assert any("amsterdam" in p for p in result.problems), list(result.problems)
    assert not any(v for sides in settled_rounds(abc).values() for v in sides.values())
    abc.net.attach(abc["c"].engine)
    assert svc(abc, "a").run(PERIOD).state == S.FINAL
    check_settled_once(abc, ids)


def test_overflow_fails_the_round(abc):
    an = abc["a"].node_id
    big = 2**63 - 1
    for i in (1, 2):
        insert(abc, "a", f"{an}/o{i}", party(abc, "b", "p"), party(abc, "a", "x"), big)
        insert(abc, "b", f"{an}/o{i}", party(abc, "b", "p"), party(abc, "a", "x"), big)
    result = svc(abc, "a").run(PERIOD)
    assert result.state == S.FAILED and "OUT_OF_RANGE" in result.problems[0]
    assert not any(v for sides in settled_rounds(abc).values() for v in sides.values())


# -- refusals ---------------------------------------------------------------------------------


def _proposal(f: Federation, round_id: str) -> tuple[fed.SettlementProposal, dict]:
    """The proposal the coordinator A would send, built step by step."""
    a = f["a"].node_id
    signed = {k: svc(f, k).view(round_id, PERIOD, origin=a) for k in "abc"}
    with f["a"].node.store.transaction() as conn:
        settlement_repos.update_round(conn, round_id, state=S.SIGNING)
    views = {f[k].node_id: pb.SettlementView.FromString(s.body) for k, s in signed.items()}
    stmt = sr.compute(round_id=round_id, period=PERIOD, coordinator=a, views=views)
    data = sr.statement_bytes(stmt)
    return fed.SettlementProposal(round_id=round_id, statement=data,
                                  views=[signed[k] for k in "abc"]), signed


def _state(f: Federation) -> tuple:
    out = []
    for key in "abc":
        with f[key].node.store.read() as conn:
            out.append(sorted(tuple(r) for r in conn.execute(select(schema.obligations))))
            out.append(sorted((r.round_id, r.state, r.statement) for r in
                              conn.execute(select(schema.settlement_rounds))))
            out.append(sorted(tuple(r) for r in conn.execute(
                select(schema.settlement_signatures))))
    return tuple(out)


def test_tampered_unsigned_foreign_and_replayed_messages_are_refused(abc):
    book(abc)
    a, b, c = (abc[k].node_id for k in "abc")
    b_svc = svc(abc, "b")
    with pytest.raises(PermissionDenied):
        b_svc.view(f"{c}/{PERIOD}/x1", PERIOD, origin=a)
    round_id = f"{a}/{PERIOD}/r1"
    with abc["a"].node.store.transaction() as conn:
        settlement_repos.insert_round(conn, round_id=round_id, period=PERIOD, coordinator=a,
                                      state=S.GATHERING, started_at_ms=0)
    proposal, signed = _proposal(abc, round_id)
    before = _state(abc)

    def refused(p: fed.SettlementProposal, origin: str = a, match: str | None = None) -> None:
        with pytest.raises(FailedPrecondition, match=match):
            b_svc.sign(p, origin=origin)
        assert _state(abc) == before

    # a tampered view: C's obligations changed after C signed
    view_c = pb.SettlementView.FromString(signed["c"].body)
    assert view_c.HasField("columns") and not view_c.obligations  # nodes send columns
    amounts = bytearray(view_c.columns.amount_minor)
    amounts[0] ^= 1
    view_c.columns.amount_minor = bytes(amounts)
    tampered = fed.SettlementProposal()
    tampered.CopyFrom(proposal)
    tampered.views[2].body = sr.view_bytes(view_c)
    refused(tampered, match="refused")
    # a view signed by C itself but malformed: an index outside its dictionary, both forms
    malformed = pb.SettlementView.FromString(signed["c"].body)
    malformed.columns.payee = bytes(len(malformed.columns.payee) - 4) + b"\xff\xff\x00\x00"
    bad = fed.SettlementProposal()
    bad.CopyFrom(proposal)
    bad.views[2].CopyFrom(provenance.sign(abc["c"].node.keys, c, sr.VIEW_TAG,
                                          sr.view_bytes(malformed)))
    refused(bad, match="INVALID_ARGUMENT view columns: payee has an index outside")
    both = pb.SettlementView.FromString(signed["c"].body)
    rows = sr.view_rows(both)
    both.obligations.append(rows.obligation(0))
    bad.views[2].CopyFrom(provenance.sign(abc["c"].node.keys, c, sr.VIEW_TAG,
                                          sr.view_bytes(both)))
    refused(bad, match="both obligations and columns")
    # an unsigned view
    unsigned = fed.SettlementProposal()
    unsigned.CopyFrom(proposal)
    unsigned.views[2].signature = b""
    refused(unsigned, match="refused")
    # a view signed by A but claiming to be C's
    forged = fed.SettlementProposal()
    forged.CopyFrom(proposal)
    forged.views[2].CopyFrom(provenance.sign(abc["a"].node.keys, a, sr.VIEW_TAG,
                                             signed["c"].body))
    refused(forged)
    # a statement that does not recompute (one instruction's amount changed)
    stmt = pb.SettlementStatement.FromString(proposal.statement)
    stmt.instructions[0].amount_minor += 1
    wrong = fed.SettlementProposal()
    wrong.CopyFrom(proposal)
    wrong.statement = sr.statement_bytes(stmt)
    refused(wrong, match="recompute")
    # a statement sent by a node that is not the round's coordinator
    refused(proposal, origin=c, match="not the coordinator")
    # a participant list that leaves the sender out, from a non-participant's round id
    stmt = pb.SettlementStatement.FromString(proposal.statement)
    del stmt.participants[:]
    stmt.participants.extend([b, c])
    refused(fed.SettlementProposal(round_id=round_id, statement=sr.statement_bytes(stmt),
                                   views=proposal.views[1:]), match="participants")
    # the honest proposal is signed; replaying it gets the same signature
    first = b_svc.sign(proposal, origin=a)
    assert b_svc.sign(proposal, origin=a) == first
    before = _state(abc)
    # replayed round message: same round id, other content (A now states no obligation)
    empty_a = pb.SettlementView(round_id=round_id, node_id=a, period=PERIOD)
    other = fed.SettlementProposal(round_id=round_id, views=proposal.views)
    other.views[0].CopyFrom(provenance.sign(abc["a"].node.keys, a, sr.VIEW_TAG,
                                            sr.view_bytes(empty_a)))
    other.statement = sr.statement_bytes(sr.compute(
        round_id=round_id, period=PERIOD, coordinator=a, views={
            a: empty_a, b: pb.SettlementView.FromString(signed["b"].body),
            c: pb.SettlementView.FromString(signed["c"].body)}))
    refused(other, match="replayed")
    # a final without every signature, or from another node, or with another statement
    sig_a = svc(abc, "a").sign(proposal, origin=a)
    sig_c = svc(abc, "c").sign(proposal, origin=a)
    before = _state(abc)
    partial = fed.SettlementFinal(round_id=round_id, statement=proposal.statement,
                                  signatures=[sig_a, first])
    with pytest.raises(FailedPrecondition, match="missing"):
        b_svc.finalize(partial, origin=a)
    full = fed.SettlementFinal(round_id=round_id, statement=proposal.statement,
                               signatures=[sig_a, first, sig_c])
    with pytest.raises(FailedPrecondition, match="not the coordinator"):
        b_svc.finalize(full, origin=c)
    bad = fed.SettlementFinal()
    bad.CopyFrom(full)
    bad.signatures[2].signature = bytes(64)
    with pytest.raises(FailedPrecondition, match="signature refused"):
        b_svc.finalize(bad, origin=a)
    assert _state(abc) == before
    # the honest final settles B's part, once
    ack = b_svc.finalize(full, origin=a)
    assert ack.final and ack.pending > 0
    assert b_svc.finalize(full, origin=a) == ack


def test_signed_but_never_final_round_never_settles(abc, monkeypatch):
    """Presumed abort: every participant signed round R1 and the coordinator A died before
    deciding.  R1 settles nothing; A's next round R2 supersedes it everywhere, and a late
    final of R1 is refused."""
    ids = book(abc)
    a_svc = svc(abc, "a")
    collect = a_svc._collect
    got: dict = {}

    def collect_then_die(proposal, participants, verify):
        got["proposal"] = proposal
        got["signatures"], problems = collect(proposal, participants, verify)
        assert not problems
        raise SimulatedCrash("between the signatures and the decision")

    monkeypatch.setattr(a_svc, "_collect", collect_then_die)
    with pytest.raises(SimulatedCrash):
        a_svc.run(PERIOD)
    r1 = got["proposal"].round_id
    abc.restart("a")
    assert svc(abc, "a").recover() == 1
    assert svc(abc, "a").get(r1).state == S.FAILED
    assert svc(abc, "b").get(r1).state == S.SIGNING
    assert not any(v for sides in settled_rounds(abc).values() for v in sides.values())
    r2 = svc(abc, "a").run(PERIOD)
    assert r2.state == S.FINAL, list(r2.problems)
    for key in "bc":
        assert svc(abc, key).get(r1).state == S.FAILED
    late = fed.SettlementFinal(round_id=r1, statement=got["proposal"].statement,
                               signatures=list(got["signatures"].values()))
    with pytest.raises(FailedPrecondition, match="failed here"):
        svc(abc, "b").finalize(late, origin=abc["a"].node_id)
    assert check_settled_once(abc, ids) == r2.round_id


# -- crashes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("point", crashpoints.SETTLEMENT_POINTS)
def test_crash_at_every_persistence_point(abc, point):
    ids = book(abc)
    by_id = {c.node_id: k for k, c in abc.cities.items()}

    def revive() -> None:
        for node_id, _ in abc.net.crashed:
            abc.restart(by_id[node_id])
        abc.net.crashed.clear()

    crashpoints.arm(point)
    try:
        svc(abc, "a").run(PERIOD)
    except SimulatedCrash:
        abc.restart("a")
    revive()
    if point in ("coordinator.after_round_created", "coordinator.after_views",
                 "participant.after_signed"):
        # nothing decided: nothing settled anywhere
        assert not any(v for sides in settled_rounds(abc).values() for v in sides.values())
    for key in "abc":
        svc(abc, key).recover()
    for _ in range(3):
        for key in "abc":
            try:
                svc(abc, key).execute_due(force=True)
            except SimulatedCrash:
                abc.restart(key)
    where = settled_rounds(abc)
    if not all(all(where[oid].values()) for oid in ids["agreed"]):
        assert svc(abc, "a").run(PERIOD).state == S.FINAL
    check_settled_once(abc, ids)
    assert not crashpoints._armed, f"{point} was never reached"
    assert abc.backend.calls >= len(abc.backend.entries)


# -- the node API -----------------------------------------------------------------------------


def _api(node, servicer, token, call, request):
    server, port = build_server(node, "127.0.0.1:0", servicer=servicer)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = node_api_pb2_grpc.NodeApiStub(channel)
            return getattr(stub, call)(request, metadata=(("authorization", f"Bearer {token}"),),
                                       timeout=30)
    finally:
        server.stop(0).wait()


def test_settlement_over_the_node_api(abc):
    book(abc)
    a = abc["a"]
    token = a.node.config.api_token()
    with pytest.raises(grpc.RpcError) as err:
        _api(a.node, NodeApiServicer(a.node), token, "RunSettlement",
             api.RunSettlementRequest(period=PERIOD))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    ran = _api(a.node, NodeApiServicer(a.node, transfers=a.engine), token, "RunSettlement",
               api.RunSettlementRequest(period=PERIOD, request_id="api-1"))
    assert ran.state == S.FINAL and len(ran.signed_by) == 3
    got = _api(a.node, NodeApiServicer(a.node), token, "GetSettlementRound",
               api.GetSettlementRoundRequest(round_id=ran.round_id))
    assert got.statement == ran.statement
    listed = _api(a.node, NodeApiServicer(a.node), token, "ListSettlementRounds",
                  api.ListSettlementRoundsRequest())
    assert [r.round_id for r in listed.rounds] == [ran.round_id]
    holder = a.node.create_account(request_id="h", label="holder").token
    with pytest.raises(grpc.RpcError) as err:
        _api(a.node, NodeApiServicer(a.node, transfers=a.engine), holder, "RunSettlement",
             api.RunSettlementRequest(period=PERIOD))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_settlement_request_runs_a_round(abc):
    ids = book(abc)
    with abc["a"].node.store.transaction() as conn:
        conn.execute(schema.settlement_requests.insert().values(
            period=PERIOD, peer=abc["b"].node_id, reason="threshold", at_ms=0))
    ran = svc(abc, "a").take_requests()
    assert len(ran) == 1
    assert svc(abc, "a").take_requests() == []
    check_settled_once(abc, ids)
    with abc["a"].node.store.transaction() as conn:
        conn.execute(update(schema.settlement_requests).values(taken_at_ms=None))


def test_settle_status_and_show_commands(abc):
    import json

    from click.testing import CliRunner

    from eap.node.cli import main

    ids = book(abc)
    ran = svc(abc, "a").run(PERIOD)
    execute_all(abc)
    home = str(abc["b"].home)
    runner = CliRunner()
    out = runner.invoke(main, ["settle", "status", "--home", home, "--json"])
    assert out.exit_code == 0, out.output
    rounds = json.loads(out.output)
    assert [r["round_id"] for r in rounds] == [ran.round_id]
    assert rounds[0]["state"] == "settled"
    out = runner.invoke(main, ["settle", "show", ran.round_id, "--home", home, "--json"])
    shown = json.loads(out.output)
    assert shown["digest"] == ran.digest and len(shown["signed_by"]) == 3
    assert {o["id"] for o in shown["held_out"]} == ids["held"]
    assert {i["state"] for i in shown["instructions"]} <= {"executed", "not ours"}
    assert any(i["receipt"] for i in shown["instructions"])
    text = runner.invoke(main, ["settle", "show", ran.round_id, "--home", home])
    assert text.exit_code == 0 and "held out" in text.output and ran.digest in text.output
    text = runner.invoke(main, ["settle", "status", "--home", home])
    assert text.exit_code == 0 and "settled" in text.output
    missing = runner.invoke(main, ["settle", "show", "x.example/2024-01-01/nope", "--home", home])
    assert missing.exit_code != 0


def test_recovery_after_a_restart_leaves_rounds_of_the_new_process_alone(abc, monkeypatch):
    """The serve worker recovers a restarted coordinator a moment after start; a round the
    new process already started (e.g. through the node API) is not one of the undecided
    rounds of before the restart and must not be failed by it."""
    ids = book(abc)
    a_svc = svc(abc, "a")
    collect = a_svc._collect
    recovered: list[int] = []

    def collect_while_recovering(proposal, participants, verify):
        recovered.append(a_svc.recover())  # the worker's first tick lands mid-round
        return collect(proposal, participants, verify)

    monkeypatch.setattr(a_svc, "_collect", collect_while_recovering)
    result = a_svc.run(PERIOD)
    assert recovered == [0]
    assert result.state == S.FINAL, list(result.problems)
    check_settled_once(abc, ids)


def _together(fn):
    """``fn`` wrapped so that two calls wait for each other inside it: when the first holds
    something that keeps the second out, it goes on alone after 3 s."""
    both_in = threading.Barrier(2, timeout=3)

    def wrapper(*args):
        with contextlib.suppress(threading.BrokenBarrierError):
            both_in.wait()
        return fn(*args)

    return wrapper


def _twice_at_once(fn) -> list:
    """``fn()`` in two threads at once; their results (the first error is raised)."""
    results: list = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(fn())
        except BaseException as exc:  # raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def abc_pg(tmp_path, pg_url):
    """:func:`abc` with A on PostgreSQL, where replicas of A write to one database at once."""
    f = Federation(tmp_path, "abc", hours=1, db_urls={"a": pg_url})
    f.backend = Backend()
    for key in "abc":
        f[key].engine.settlement._backend = f.backend
    yield f
    crashpoints.disarm()
    f.close()


@pytest.mark.postgres
def test_two_deliveries_of_one_final_settle_it_once(abc_pg, monkeypatch):
    """A decided round's final is delivered to the coordinator's own part twice at once: by
    the thread that ran the round and by the worker's ``resume`` (or another replica's).
    Each reads the round, sees it unsettled and settles it; the second waits for the first
    and finds it final, instead of queueing every instruction side a second time (which
    failed the node API call with INTERNAL)."""
    ids = book(abc_pg)
    a_svc = svc(abc_pg, "a")
    crashpoints.arm("coordinator.after_decision")
    with pytest.raises(SimulatedCrash):
        a_svc.run(PERIOD)
    (decided,) = a_svc.list().rounds
    assert decided.state == S.SIGNING
    # both deliveries inside _settle at once, if the round lets both in
    monkeypatch.setattr(a_svc, "_settle", _together(a_svc._settle))
    _twice_at_once(a_svc.resume)
    assert a_svc.get(decided.round_id).state == S.FINAL
    assert check_settled_once(abc_pg, ids) == decided.round_id


@pytest.mark.postgres
def test_two_requests_for_a_view_of_a_new_round_get_one_view(abc_pg, monkeypatch):
    """A participant on PostgreSQL asked twice at once for its view of a round it has not seen
    (the coordinator's transport retried): both requests get the view stored first, and the
    round has one row, where the second insert failed on the primary key (INTERNAL)."""
    import uuid

    book(abc_pg)
    a_svc = svc(abc_pg, "a")
    b_id = abc_pg["b"].node_id
    round_id = f"{b_id}/{PERIOD}/{uuid.uuid4().hex}"
    # both requests past the read of the (absent) round at once
    monkeypatch.setattr(a_svc, "_fill", _together(a_svc._fill))
    views = _twice_at_once(lambda: a_svc.view(round_id, PERIOD, origin=b_id))
    assert len(views) == 2 and views[0] == views[1]
    with abc_pg["a"].node.store.read() as conn:
        rows = conn.execute(select(schema.settlement_rounds).where(
            schema.settlement_rounds.c.round_id == round_id)).all()
    assert len(rows) == 1 and pb.Signed.FromString(rows[0].view) == views[0]


class BatchBackend(Backend):
    """:class:`Backend` that also executes many sides in one call, as the co-op ledger does."""

    def __init__(self, fail: int = 0) -> None:
        super().__init__(fail)
        self.batches = 0

    def execute_many(self, node, items: list[dict]) -> list:
        self.batches += 1
        out: list = []
        for item in items:
            try:
                out.append(self(node, item))
            except Backend.Error as exc:
                out.append(exc)
        return out


@pytest.mark.parametrize("crash", [False, True])
def test_executor_runs_due_sides_in_one_batch(abc, crash):
    """One backend call per executor round; a crash after it replays the same keys and
    nothing executes twice; a side failing inside a batch is retried alone."""
    ids = book(abc)
    abc.backend = BatchBackend(fail=1)
    for key in "abc":
        svc(abc, key)._backend = abc.backend
    result = svc(abc, "a").run(PERIOD)
    assert result.state == S.FINAL
    if crash:
        crashpoints.arm("executor.after_backend_call")
        with pytest.raises(SimulatedCrash):
            svc(abc, "a").execute_due(force=True)
        abc.restart("a")
        svc(abc, "a")._backend = abc.backend
    for key in "abc":
        svc(abc, key).execute_due(force=True)
    assert abc.backend.batches >= 3
    m = svc(abc, "a").get(result.round_id)
    assert any(s.last_error and s.state == "pending" for s in m.instructions) or crash
    abc.clock.advance(600)
    check_settled_once(abc, ids)
    assert abc.backend.calls > len(abc.backend.entries)  # the failed side and any replay
