"""Priced trades across nodes: one obligation on each side of a commit, none after an abort,
whatever crashes; credit limits, settlement thresholds and peer balances.

Real nodes in one process (:class:`test_transfers_support.Federation`), their transfer engines
wired through an in-process network; the gRPC API on a real socket for the error codes.
"""

from __future__ import annotations

import types

import grpc
import pytest
from test_transfers_support import FAST, Federation

from eap.node.api.server import build_server
from eap.node.api.servicer import NodeApiServicer
from eap.node.domain import obligations as obl
from eap.node.domain import peer_credit
from eap.node.errors import FailedPrecondition, InvalidArgument, NotFound
from eap.node.federation import crashpoints
from eap.node.federation import transfers as T
from eap.node.federation.crashpoints import SimulatedCrash
from eap.node.federation.inprocess import Faults
from eap.node.records.enums import Status
from eap.node.store import obligation_repos as ob
from eap.v1 import federation_pb2 as fed
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb


@pytest.fixture(autouse=True)
def _disarm():
    yield
    crashpoints.disarm()


@pytest.fixture
def f(tmp_path):
    fed_ = Federation(tmp_path, "ab")
    _limits(fed_, "a", "b", credit=1_000_000)
    yield fed_
    fed_.close()


def _limits(f, key, peer_key, *, credit, threshold=0, currency="EUR"):
    c = f[key]
    return peer_credit.set_limits(c.node.store, c.node_id, peer=f[peer_key].node_id,
                                  currency=currency, credit_limit_minor=credit,
                                  settle_threshold_minor=threshold)


def _obligations(f, key):
    c = f[key]
    with c.node.store.read() as conn:
        return [r for r in ob.all_obligations(conn, None, None)]


def _unsettled(f, key, period):
    c = f[key]
    with c.node.store.read() as conn:
        return ob.unsettled(conn, period)


def _terms(row):
    return (row.obligation_id, row.payer, row.payee, row.amount_minor, row.currency, row.period)


def _assert_one_each(f, tid, price, currency="EUR"):
    """Exactly one obligation on each side, the same id and terms."""
    a, b = f["a"], f["b"]
    oa, obb = _obligations(f, "a"), _obligations(f, "b")
    assert [r.obligation_id for r in oa] == [tid]
    assert [r.obligation_id for r in obb] == [tid]
    rec = a.engine.get(tid)
    period = obl.period_of(rec.expires_at_ms)
    ua, ub = _unsettled(f, "a", period), _unsettled(f, "b", period)
    assert [_terms(x) for x in ua] == [_terms(x) for x in ub]
    (row,) = ua
    assert row.payer == f"{b.node_id}/{b.account}"
    assert row.payee == f"{a.node_id}/{a.owner}"
    assert (row.amount_minor, row.currency) == (price, currency)
    assert oa[0].peer == b.node_id and obb[0].peer == a.node_id
    assert oa[0].transfer_id == obb[0].transfer_id == tid


def test_committed_priced_trade_leaves_one_obligation_on_each_side(f):
    a = f["a"]
    _, rec = a.engine.send(a.bundles[0], to=f.to("b"), wh=100, request_id="t",
                           price_minor=12_345, currency="EUR")
    f.settle()
    assert a.engine.get(rec.id).state == T.COMMITTED
    assert (rec.price_minor, rec.currency) == (12_345, "EUR")
    _assert_one_each(f, rec.id, 12_345)
    # a replay of the request changes nothing and records nothing more
    again, _ = a.engine.send(a.bundles[0], to=f.to("b"), wh=100, request_id="t",
                             price_minor=12_345, currency="EUR")
    assert again.transfer.id == rec.id
    f.settle()
    _assert_one_each(f, rec.id, 12_345)
    # the same request id with another price is an error
    with pytest.raises(InvalidArgument):
        a.engine.send(a.bundles[0], to=f.to("b"), wh=100, request_id="t", price_minor=1,
                      currency="EUR")
    f.assert_conserved()
    # the balances agree: a's receivable is b's payable
    (ba,) = peer_credit.balances(a.node.store, a.node_id)
    (bb,) = peer_credit.balances(f["b"].node.store, f["b"].node_id)
    assert (ba.receivable_minor, ba.payable_minor, ba.balance_minor) == (12_345, 0, 12_345)
    assert (bb.receivable_minor, bb.payable_minor, bb.balance_minor) == (0, 12_345, -12_345)
    assert bb.credit_limit_minor == 0  # b set no limit towards a


def test_plain_transfer_records_no_obligation(f):
    a = f["a"]
    a.engine.send(a.bundles[0], to=f.to("b"), request_id="plain")
    f.settle()
    assert _obligations(f, "a") == [] and _obligations(f, "b") == []


def test_destination_refusal_leaves_no_obligation(f):
    a = f["a"]
    to = f"{f['b'].node_id}/acct_{'a' * 26}"  # no such account on b
    _, rec = a.engine.send(a.bundles[0], to=to, request_id="t", price_minor=500,
                           currency="EUR")
    f.settle()
    assert a.engine.get(rec.id).state == T.ABORTED
    assert _obligations(f, "a") == [] and _obligations(f, "b") == []
    assert peer_credit.balances(a.node.store, a.node_id)[0].balance_minor == 0


def test_expired_trade_leaves_no_obligation(f):
    a = f["a"]
    f.net.faults = Faults(drop_reply=1.0)  # b prepares, a never hears it in time
    try:
        _, rec = a.engine.send(a.bundles[0], to=f.to("b"), request_id="t", price_minor=500,
                               currency="EUR")
    finally:
        f.net.faults = Faults()
    # in flight: counted in the balance with b
    (bal,) = peer_credit.balances(a.node.store, a.node_id)
    assert (bal.in_flight_minor, bal.balance_minor) == (500, 500)
    f.clock.advance(FAST.ttl_s + 1)
    f.settle()
    assert f.states(rec.id) == {"a": T.ABORTED, "b": T.ABORTED}
    assert _obligations(f, "a") == [] and _obligations(f, "b") == []
    (bal,) = peer_credit.balances(a.node.store, a.node_id)
    assert bal.balance_minor == 0
    f.assert_conserved()


#: Durability points around the decision and the commit (see test_transfers_crash.py).
CRASH_POINTS = ("dest.after_prepared_commit", "source.after_send_prepare",
                "source.after_decision_commit", "dest.in_commit_txn",
                "dest.after_commit_commit", "source.after_send_commit")


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_around_the_commit_leaves_one_obligation_each(tmp_path, point):
    f = Federation(tmp_path, "ab")
    try:
        _limits(f, "a", "b", credit=10_000)
        a = f["a"]
        crashpoints.arm(point)
        crashed = None
        try:
            a.engine.send(a.bundles[1], to=f.to("b"), wh=321, request_id="t", price_minor=777,
                          currency="EUR")
            for _ in range(50):
                if f.net.crashed:
                    break
                f.tick()
                f.clock.advance(1)
        except SimulatedCrash as crash:
            crashed = {"source": "a", "dest": "b"}[crash.point.split(".")[0]]
        if f.net.crashed:
            node_id = f.net.crashed[0][0]
            crashed = next(k for k, c in f.cities.items() if c.node_id == node_id)
        assert crashed, f"never reached {point}"
        f.down(crashed)
        f.clock.advance(2)
        f.tick()
        f.restart(crashed)
        f.net.down.discard(f[crashed].node_id)
        f[crashed].engine.recover()
        f.settle()
        f.assert_agree()
        f.assert_conserved()
        (rec,) = f["a"].engine.list()
        assert rec.state == T.COMMITTED
        _assert_one_each(f, rec.id, 777)
        # recovery again, and a replayed COMMIT, record nothing more
        f.tick(force=True)
        f["a"].engine.recover()
        f.settle()
        _assert_one_each(f, rec.id, 777)
    finally:
        f.close()


def test_over_the_credit_limit_is_refused_and_changes_nothing(f):
    a = f["a"]
    _limits(f, "a", "b", credit=1_000)
    a.engine.send(a.bundles[0], to=f.to("b"), wh=10, request_id="t1", price_minor=700,
                  currency="EUR")
    f.settle()
    before = f.bundle("a", a.bundles[1])
    with pytest.raises(FailedPrecondition) as err:
        a.engine.send(a.bundles[1], to=f.to("b"), wh=10, request_id="t2", price_minor=301,
                      currency="EUR")
    msg = err.value.message
    assert "limit 1,000" in msg and "balance 700" in msg and "EUR" in msg
    after = f.bundle("a", a.bundles[1])
    assert (after.status, after.wh, after.owner) == (before.status, before.wh, before.owner)
    assert len(a.engine.list()) == 1 and len(_obligations(f, "a")) == 1
    # exactly at the limit is fine; the refused request id is still free
    _, rec2 = a.engine.send(a.bundles[1], to=f.to("b"), wh=10, request_id="t2",
                            price_minor=300, currency="EUR")
    f.settle()
    assert a.engine.get(rec2.id).state == T.COMMITTED
    (bal,) = peer_credit.balances(a.node.store, a.node_id)
    assert bal.balance_minor == bal.credit_limit_minor == 1_000


def test_no_limit_set_refuses_priced_trades_to_that_peer(f):
    a = f["a"]
    with pytest.raises(FailedPrecondition, match=r"no credit limit set for .* in COP"):
        a.engine.send(a.bundles[0], to=f.to("b"), request_id="t", price_minor=5,
                      currency="COP")
    assert f.bundle("a", a.bundles[0]).status == Status.ACTIVE
    # a plain transfer needs no limit
    a.engine.send(a.bundles[0], to=f.to("b"), request_id="plain")


@pytest.mark.parametrize(("price", "currency", "field"), [
    (5, "XYZ", "currency"), (5, "eur", "currency"), (5, "", "currency"),
    (-1, "EUR", "price_minor"), (0, "EUR", "price_minor"), (2**62 + 1, "EUR", "price_minor"),
    (2**64, "EUR", "price_minor"),
])
def test_bad_prices_are_invalid_argument_and_change_nothing(f, price, currency, field):
    a = f["a"]
    with pytest.raises(InvalidArgument) as err:
        a.engine.send(a.bundles[0], to=f.to("b"), request_id="t", price_minor=price,
                      currency=currency)
    assert field in [v.field for v in err.value.violations]
    assert a.engine.list() == []
    # the same rule for a local trade
    with pytest.raises(InvalidArgument) as err:
        a.node.transfer(a.bundles[0], to_account=a.account, request_id="l", price_minor=price,
                        currency=currency)
    assert field in [v.field for v in err.value.violations]
    assert _obligations(f, "a") == []


def _prepare(f, tid, **kw):
    wire, proof = f.wire("a", f["a"].bundles[0])
    return fed.TransferPrepare(transfer_id=tid, bundle=wire, to_account=f["b"].account,
                               expires_at_ms=int((f.clock() + 30) * 1000), proof=proof, **kw)


@pytest.mark.parametrize(("price", "seller", "why"), [
    (pb.Price(amount_minor=10, currency="ABC"), "a", "ISO 4217"),
    (pb.Price(amount_minor=0, currency="EUR"), "a", "must be 1..2^62"),
    (pb.Price(amount_minor=-5, currency="EUR"), "a", "must be 1..2^62"),
    (pb.Price(amount_minor=10, currency="EUR"), "b", "not an account of the sender"),
    (pb.Price(amount_minor=10, currency="EUR"), "junk", "malformed seller"),
    (None, "a", "must be 1..2^62"),
])
def test_destination_refuses_a_bad_price_or_seller(f, price, seller, why):
    """b checks the price and seller of a prepare itself (a peer may not be honest)."""
    sellers = {"a": f"{f['a'].node_id}/{f['a'].owner}", "b": f"{f['b'].node_id}/{f['b'].owner}",
               "junk": "nobody"}
    tid = f"{f['a'].node_id}/bad-price"
    msg = _prepare(f, tid, price=price, seller=sellers[seller])
    env = types.SimpleNamespace(origin=f["a"].node_id, payload=msg.SerializeToString())
    _, data = f["b"].engine.on_prepare(env)
    reply = fed.TransferStatus.FromString(data)
    assert reply.state == fed.TRANSFER_STATE_ABORTED and why in reply.reason
    assert _obligations(f, "b") == []


def test_threshold_crossing_requests_a_settlement_on_both_sides(f):
    a, b = f["a"], f["b"]
    _limits(f, "a", "b", credit=10_000, threshold=1_000)
    _limits(f, "b", "a", credit=0, threshold=1_500)
    a.engine.send(a.bundles[0], to=f.to("b"), wh=10, request_id="t1", price_minor=600,
                  currency="EUR")
    f.settle()
    with a.node.store.read() as conn:
        assert ob.all_requests(conn) == []
    _, rec = a.engine.send(a.bundles[1], to=f.to("b"), wh=10, request_id="t2",
                           price_minor=400, currency="EUR")
    f.settle()
    period = obl.period_of(a.engine.get(rec.id).expires_at_ms)
    with a.node.store.read() as conn:
        (req,) = ob.all_requests(conn)
    assert (req.peer, req.period, req.taken_at_ms) == (b.node_id, period, None)
    assert "1,000" in req.reason
    with b.node.store.read() as conn:  # b: |-1,000| < 1,500
        assert ob.all_requests(conn) == []
    # one open request per peer and period: another crossing adds none
    a.engine.send(a.bundles[2], to=f.to("b"), wh=10, request_id="t3", price_minor=600,
                  currency="EUR")
    f.settle()
    with a.node.store.read() as conn:
        assert len(ob.open_requests(conn)) == 1
        assert ob.take_requests(conn, [req.id], 1) == 1
    with b.node.store.read() as conn:  # b: |-1,600| >= 1,500
        (breq,) = ob.all_requests(conn)
    assert breq.peer == a.node_id


def test_settled_obligations_leave_the_balance(f):
    a = f["a"]
    _, rec = a.engine.send(a.bundles[0], to=f.to("b"), wh=10, request_id="t1",
                           price_minor=600, currency="EUR")
    a.node.transfer(a.bundles[1], to_account=a.account, wh=5, request_id="local",
                    price_minor=50, currency="EUR")
    f.settle()
    period = obl.period_of(a.engine.get(rec.id).expires_at_ms)
    with a.node.store.read() as conn:
        rows = ob.unsettled(conn, period)
    local = next(r for r in rows if r.peer is None)
    assert local.obligation_id == f"{a.node_id}/trade/1"
    assert local.payer == f"{a.node_id}/{a.account}"  # bare ids are qualified when read
    with a.node.store.transaction() as conn:
        assert ob.mark_settled(conn, [rec.id, local.obligation_id], "r1") == 2
        assert ob.mark_settled(conn, [rec.id], "r2") == 0  # settled once only
    with a.node.store.read() as conn:
        assert ob.unsettled(conn, period) == []
    (bal,) = peer_credit.balances(a.node.store, a.node_id)
    assert bal.balance_minor == 0


def test_set_limits_rules(f):
    a = f["a"]
    with pytest.raises(NotFound):
        peer_credit.set_limits(a.node.store, a.node_id, peer="nobody.example", currency="EUR",
                               credit_limit_minor=1, settle_threshold_minor=0)
    with pytest.raises(InvalidArgument) as err:
        peer_credit.set_limits(a.node.store, a.node_id, peer=f["b"].node_id, currency="EURO",
                               credit_limit_minor=-1, settle_threshold_minor=2**63)
    assert {v.field for v in err.value.violations} == {
        "currency", "credit_limit_minor", "settle_threshold_minor"}


# -- through gRPC --------------------------------------------------------------------------------


@pytest.fixture
def grpc_a(f):
    a = f["a"]
    server, port = build_server(a.node, "127.0.0.1:0",
                                servicer=NodeApiServicer(a.node, transfers=a.engine))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    md = (("authorization", f"Bearer {a.node.config.api_token()}"),)
    yield node_api_pb2_grpc.NodeApiStub(channel), md
    channel.close()
    server.stop(0).wait()


def test_grpc_priced_trade_limits_and_balances(f, grpc_a):
    from eap.node.api.status import field_violations

    stub, md = grpc_a
    a, b = f["a"], f["b"]
    lim = stub.SetPeerLimits(api.SetPeerLimitsRequest(
        peer=b.node_id, currency="EUR", credit_limit_minor=5_000, settle_threshold_minor=4_000),
        metadata=md)
    assert (lim.credit_limit_minor, lim.balance_minor) == (5_000, 0)
    out = stub.TransferBundle(api.TransferBundleRequest(
        request_id="g1", bundle_id=a.bundles[0], to_account=f.to("b"), wh=10,
        price_minor=4_500, currency="EUR"), metadata=md)
    f.settle()
    assert a.engine.get(out.transfer.id).state == T.COMMITTED
    _assert_one_each(f, out.transfer.id, 4_500)
    bal = stub.ListPeerBalances(api.ListPeerBalancesRequest(), metadata=md).balances
    assert [(x.peer, x.currency, x.receivable_minor, x.payable_minor, x.balance_minor)
            for x in bal] == [(b.node_id, "EUR", 4_500, 0, 4_500)]
    with a.node.store.read() as conn:  # 4,500 >= 4,000
        assert len(ob.all_requests(conn)) == 1
    with pytest.raises(grpc.RpcError) as err:
        stub.TransferBundle(api.TransferBundleRequest(
            request_id="g2", bundle_id=a.bundles[1], to_account=f.to("b"), wh=10,
            price_minor=501, currency="EUR"), metadata=md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "limit 5,000" in err.value.details() and "balance 4,500" in err.value.details()
    for price, cur, field in ((10, "XXX", "currency"), (-3, "EUR", "price_minor"),
                              (2**62 + 1, "EUR", "price_minor")):
        for to in (f.to("b"), a.account):  # cross-node and local
            with pytest.raises(grpc.RpcError) as err:
                stub.TransferBundle(api.TransferBundleRequest(
                    request_id=f"bad-{price}-{cur}-{len(to)}", bundle_id=a.bundles[1],
                    to_account=to, wh=10, price_minor=price, currency=cur), metadata=md)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in {name for name, _ in field_violations(err.value)}
    assert len(a.engine.list()) == 1
    # a local priced trade through the API records its obligation
    stub.TransferBundle(api.TransferBundleRequest(
        request_id="g3", bundle_id=a.bundles[1], to_account=a.account, wh=10,
        price_minor=99, currency="COP"), metadata=md)
    assert {r.obligation_id for r in _obligations(f, "a")} == {
        out.transfer.id, f"{a.node_id}/trade/1"}
    with pytest.raises(grpc.RpcError) as err:
        stub.SetPeerLimits(api.SetPeerLimitsRequest(peer="x.example", currency="EUR"),
                           metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_migration_0006_backfills_obligation_ids(tmp_path):
    """Local trades recorded before 0006 get ``<node>/trade/<row id>``; new ones continue."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from eap.node.store import open_store
    from eap.node.store.engine import MIGRATIONS

    store = open_store(f"sqlite:///{tmp_path / 'n.db'}", migrate=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        conn.execute(text("INSERT INTO meta (key, value) VALUES ('node_id', 'x.example')"))
        for i in range(2):
            conn.execute(text(
                "INSERT INTO obligations (period, payer, payee, amount_minor, currency, "
                "bundle_id, wh, request_id, created_at_ms) VALUES ('2026-01-01', 'acct_p', "
                f"'acct_q', {10 + i}, 'EUR', 'x.example/0-{1 + i}', 1, 'r{i}', 0)"))
    store.migrate()
    with store.read() as conn:
        rows = ob.unsettled(conn, "2026-01-01")
        from eap.node.store import repos

        assert repos.bump(conn, "trades") + 1 == 3
    assert [(r.obligation_id, r.payer, r.payee) for r in rows] == [
        ("x.example/trade/1", "x.example/acct_p", "x.example/acct_q"),
        ("x.example/trade/2", "x.example/acct_p", "x.example/acct_q")]
    store.dispose()
