"""The two-phase transfer state machine between real nodes in one process (in-process transport).

Each test checks federation-wide conservation (every issued Wh held in exactly one place) and
that both sides of every transfer agree.
"""

from __future__ import annotations

import hashlib

import pytest
from test_transfers_support import FAST, Federation

from eap.node.crypto import VerifiedEnvelope
from eap.node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from eap.node.federation import transfers as T
from eap.node.federation.inprocess import Faults
from eap.node.records.enums import Status
from eap.node.records.models import Principal
from eap.v1 import federation_pb2 as fed


@pytest.fixture
def ab(tmp_path):
    f = Federation(tmp_path, "ab")
    yield f
    f.close()


@pytest.fixture
def abc(tmp_path):
    f = Federation(tmp_path, "abc")
    yield f
    f.close()


def _env(origin: str, payload: bytes, ptype: str) -> VerifiedEnvelope:
    return VerifiedEnvelope(payload=payload, payload_type=ptype, origin=origin, key_id="k",
                            nonce=b"0" * 16, expires_at_ms=0)


def _status(reply: tuple[str, bytes]) -> fed.TransferStatus:
    assert reply[0] == T.PT_STATUS
    return fed.TransferStatus.FromString(reply[1])


def _outbox_prepare(city, transfer_id: str) -> bytes:
    from eap.node.store import transfer_repos as tr

    with city.node.store.read() as conn:
        return bytes(next(m.payload for m in tr.outbox_unacked(conn, transfer_id)
                          if m.kind == T.PREPARE))


# -- the happy paths ---------------------------------------------------------------------------


def test_whole_bundle_moves_exactly_once(ab):
    a, b = ab["a"], ab["b"]
    bid = a.bundles[0]
    before = ab.bundle("a", bid)
    first, rec = a.engine.send(bid, to=ab.to("b"), request_id="t-1")
    assert rec.state == T.COMMITTED and rec.settled and rec.wh == before.wh
    assert first.transfer.id.startswith("medellin.example/") and first.remainder is None
    assert ab.states(rec.id) == {"a": "committed", "b": "committed"}
    out = ab.bundle("a", bid)
    assert out.status == Status.EXPORTED and out.held_by == b.node_id
    assert out.owner == f"{b.node_id}/{b.account}"
    inn = ab.bundle("b", bid)  # same id, same lineage, now owned on B
    assert inn.status == Status.ACTIVE and inn.owner == b.account and inn.held_by is None
    assert (inn.lineage_hash, inn.device_id, inn.interval_start, inn.zone) == (
        before.lineage_hash, before.device_id, before.interval_start, before.zone)
    assert a.node.status().wh_exported == before.wh
    assert b.node.status().wh_imported == before.wh
    assert [x.id for x in ab.active("b", b.account)] == [bid]
    ab.assert_conserved()
    ab.assert_agree()


def test_partial_transfer_splits_with_hash_chained_children(ab):
    a, _b = ab["a"], ab["b"]
    parent = ab.bundle("a", a.bundles[1])
    first, rec = a.engine.send(parent.id, to=ab.to("b"), wh=700, request_id="t-1")
    assert rec.state == T.COMMITTED and rec.wh == 700
    moved, rest = first.exported, first.remainder
    assert moved.wh + rest.wh == parent.wh and moved.serial_end == rest.serial_start
    for child in (moved, rest):
        assert child.parent_id == parent.id
        expect = hashlib.sha256(b"\x03" + bytes.fromhex(parent.lineage_hash)
                                + child.id.encode()).hexdigest()
        assert child.lineage_hash == expect
    assert ab.bundle("a", parent.id).status == Status.SPLIT
    assert ab.bundle("a", rest.id).status == Status.ACTIVE
    assert ab.bundle("a", moved.id).status == Status.EXPORTED
    there = ab.bundle("b", moved.id)
    assert there.status == Status.ACTIVE and there.lineage_hash == moved.lineage_hash
    assert there.parent_id == parent.id
    ab.assert_conserved()


def test_a_to_b_then_b_to_c_partial_and_whole(abc):
    a, b, c = abc["a"], abc["b"], abc["c"]
    _, r1 = a.engine.send(a.bundles[2], to=abc.to("b"), request_id="ab")
    abc.assert_conserved()
    _, r2 = b.engine.send(a.bundles[2], to=abc.to("c"), wh=1234, principal=Principal.operator(),
                          request_id="bc-part")
    abc.assert_conserved()
    rest = next(x for x in abc.active("b", b.account) if x.issuer == a.node_id)
    _, r3 = b.engine.send(rest.id, to=abc.to("c"), request_id="bc-rest")
    assert [r.state for r in (r1, r2, r3)] == [T.COMMITTED] * 3
    on_c = sorted((x.serial_start, x.serial_end) for x in abc.active("c", c.account))
    original = abc.bundle("a", a.bundles[2])
    assert on_c == [(original.serial_start, original.serial_start + 1234),
                    (original.serial_start + 1234, original.serial_end)]
    assert b.node.status().wh_imported == original.wh == b.node.status().wh_exported
    abc.assert_conserved()
    abc.assert_agree()


def test_round_trip_revives_the_exported_row(ab):
    a, b = ab["a"], ab["b"]
    bid = a.bundles[0]
    a.engine.send(bid, to=ab.to("b"), request_id="out")
    _, back = b.engine.send(bid, to=f"{a.node_id}/{a.owner}", request_id="back")
    assert back.state == T.COMMITTED
    home = ab.bundle("a", bid)
    assert home.status == Status.ACTIVE and home.owner == a.owner and home.held_by is None
    assert ab.bundle("b", bid).status == Status.EXPORTED
    st = a.node.status()
    assert st.wh_exported == st.wh_imported == home.wh
    # and it can leave again
    _, again = a.engine.send(bid, to=ab.to("b"), request_id="again")
    assert again.state == T.COMMITTED
    ab.assert_conserved()
    ab.assert_agree()


# -- idempotency and duplicates ------------------------------------------------------------------


def test_same_request_id_is_one_transfer(ab):
    a = ab["a"]
    first, rec = a.engine.send(a.bundles[1], to=ab.to("b"), wh=10, request_id="same")
    again, rec2 = a.engine.send(a.bundles[1], to=ab.to("b"), wh=10, request_id="same")
    assert again.transfer.id == first.transfer.id and rec2.id == rec.id
    assert len(a.engine.list()) == 1
    with pytest.raises(InvalidArgument, match="different request"):
        a.engine.start(a.bundles[1], to=ab.to("b"), wh=11, request_id="same")
    ab.assert_conserved()


def test_replayed_and_duplicated_messages_change_nothing(ab):
    a, b = ab["a"], ab["b"]
    first = a.engine.start(a.bundles[0], to=ab.to("b"), request_id="t")
    tid = first.transfer.id
    prepare = _outbox_prepare(a, tid)
    env = _env(a.node_id, prepare, T.PT_PREPARE)
    r1 = _status(b.engine.on_prepare(env))
    r2 = _status(b.engine.on_prepare(env))  # replay: first answer again
    assert r1 == r2 and r1.state == fed.TRANSFER_STATE_PREPARED
    a.engine.pump(tid)
    assert ab.states(tid) == {"a": "committed", "b": "committed"}
    commit = fed.TransferDecision(transfer_id=tid, decision=fed.TRANSFER_STATE_COMMITTED)
    for _ in range(3):  # duplicated COMMITs
        assert _status(b.engine.on_decision(
            _env(a.node_id, commit.SerializeToString(), T.PT_DECISION))).state == \
            fed.TRANSFER_STATE_COMMITTED
    # a PREPARE replayed after the commit still gets the first answer and changes nothing
    assert _status(b.engine.on_prepare(env)) == r1
    assert len(ab.active("b", b.account)) == 1
    # an ABORT after the commit is refused in effect: the import stays committed
    abort = fed.TransferDecision(transfer_id=tid, decision=fed.TRANSFER_STATE_ABORTED)
    assert _status(b.engine.on_decision(
        _env(a.node_id, abort.SerializeToString(), T.PT_DECISION))).state == \
        fed.TRANSFER_STATE_COMMITTED
    ab.assert_conserved()
    ab.assert_agree()


def test_abort_overtaking_the_prepare_leaves_a_tombstone(ab):
    a, b = ab["a"], ab["b"]
    ab.down("b")
    first = a.engine.start(a.bundles[0], to=ab.to("b"), request_id="t", ttl_s=5)
    tid = first.transfer.id
    a.engine.pump(tid)
    ab.clock.advance(6)
    a.engine.tick()  # expiry: abort, bundle back, ABORT in the outbox
    assert a.engine.get(tid).state == T.ABORTED
    assert ab.bundle("a", a.bundles[0]).status == Status.ACTIVE
    ab.net.attach(b.engine)
    ab.settle()  # ABORT arrives before any PREPARE: tombstone
    assert ab.states(tid) == {"a": "aborted", "b": "aborted"}
    late = _status(b.engine.on_prepare(_env(a.node_id, _outbox_prepare_any(a, tid),
                                            T.PT_PREPARE)))
    assert late.state == fed.TRANSFER_STATE_ABORTED
    assert ab.active("b", b.account) == []
    ab.assert_conserved()


def _outbox_prepare_any(city, tid):
    from sqlalchemy import select

    from eap.node.store import schema as t

    with city.node.store.read() as conn:
        return bytes(conn.execute(select(t.transfer_outbox.c.payload).where(
            t.transfer_outbox.c.transfer_id == tid,
            t.transfer_outbox.c.kind == T.PREPARE)).scalar_one())


def test_locked_range_has_no_other_use(ab):
    a = ab["a"]
    ab.down("b")
    first = a.engine.start(a.bundles[1], to=ab.to("b"), wh=5, request_id="t")
    moved = first.exported.id
    assert ab.bundle("a", moved).status == Status.EXPORT_PENDING
    with pytest.raises(FailedPrecondition, match="EXPORT_PENDING"):
        a.node.transfer(moved, to_account=ab["a"].account, request_id="local")
    with pytest.raises(FailedPrecondition, match="EXPORT_PENDING"):
        a.node.retire(moved, beneficiary="x", purpose="y", request_id="claim")
    with pytest.raises(FailedPrecondition, match="EXPORT_PENDING"):
        a.engine.start(moved, to=ab.to("b"), request_id="twice")
    # the pending Wh still count as this node's (active) until the decision
    assert a.node.status().wh_active == a.node.status().wh_issued
    ab.assert_conserved()


# -- refusals and expiry ---------------------------------------------------------------------------


def test_destination_refusal_aborts_and_unlocks(ab):
    a = ab["a"]
    to = f"{ab['b'].node_id}/acct_{'a' * 26}"
    _first, rec = a.engine.send(a.bundles[0], to=to, request_id="t")
    assert rec.state == T.ABORTED and "no account" in rec.reason and rec.settled
    assert ab.bundle("a", a.bundles[0]).status == Status.ACTIVE
    assert ab.states(rec.id) == {"a": "aborted", "b": "aborted"}
    assert a.node.status().wh_exported == 0
    ab.assert_conserved()


def test_bad_requests_change_nothing(ab):
    a = ab["a"]
    with pytest.raises(FailedPrecondition, match="trust list"):
        a.engine.start(a.bundles[0], to=f"nowhere.example/{ab['b'].account}", request_id="1")
    with pytest.raises(InvalidArgument):
        a.engine.start(a.bundles[0], to="barcelona.example", request_id="2")
    with pytest.raises(InvalidArgument):
        a.engine.start(a.bundles[0], to=f"{a.node_id}/{a.account}", request_id="3")
    with pytest.raises(NotFound):
        a.engine.start("medellin.example/9-10", to=ab.to("b"), request_id="4")
    with pytest.raises(FailedPrecondition):
        a.engine.start(a.bundles[0], to=ab.to("b"), wh=10**6, request_id="5")
    with pytest.raises(PermissionDenied):
        a.engine.start(a.bundles[0], to=ab.to("b"), request_id="6",
                       principal=Principal("account", a.account))
    assert a.engine.list() == [] and a.engine.backlog() == {}
    assert all(ab.bundle("a", x).status == Status.ACTIVE for x in a.bundles)


def test_unreachable_destination_expires_and_aborts(ab):
    a = ab["a"]
    ab.down("b")
    _first, rec = a.engine.send(a.bundles[0], to=ab.to("b"), request_id="t", ttl_s=10)
    assert rec.state == T.PREPARING and rec.pending == ["prepare"] and rec.last_error
    for _ in range(12):
        ab.clock.advance(1)
        a.engine.tick()
    rec = a.engine.get(rec.id)
    assert rec.state == T.ABORTED and "expired" in rec.reason
    assert ab.bundle("a", a.bundles[0]).status == Status.ACTIVE
    ab.assert_conserved()


def test_prepared_answer_after_expiry_aborts_both_sides(ab):
    a, b = ab["a"], ab["b"]
    ab.net.faults = Faults(drop_reply=1.0)  # B prepares, A never hears it
    _first, rec = a.engine.send(a.bundles[0], to=ab.to("b"), request_id="t", ttl_s=10)
    assert ab.states(rec.id) == {"a": "preparing", "b": "prepared"}
    ab.net.faults = Faults()
    ab.clock.advance(11)
    ab.settle()
    assert ab.states(rec.id) == {"a": "aborted", "b": "aborted"}
    assert ab.active("b", b.account) == []
    ab.assert_conserved()


def test_destination_asks_source_when_commit_is_lost(ab):
    a, b = ab["a"], ab["b"]
    calls = []
    real = a.engine.transport

    class LoseDecisions:
        def call(self, peer, rpc, *args, **kw):
            calls.append(rpc)
            if rpc == "DecideTransfer":
                raise T.Unavailable("lost")
            return real.call(peer, rpc, *args, **kw)

    a.engine.transport = LoseDecisions()
    _, rec = a.engine.send(a.bundles[0], to=ab.to("b"), request_id="t")
    assert ab.states(rec.id) == {"a": "committed", "b": "prepared"}
    ab.clock.advance(FAST.inquire_after_s + 0.1)
    assert b.engine.tick() == 1  # GetTransferStatus -> COMMITTED
    assert ab.states(rec.id) == {"a": "committed", "b": "committed"}
    assert [x.id for x in ab.active("b", b.account)] == [a.bundles[0]]
    a.engine.transport = real
    ab.settle()  # A's COMMIT finally arrives: a duplicate, harmless
    ab.assert_conserved()
    ab.assert_agree()


def test_source_answers_status_of_an_expired_undecided_transfer_by_aborting(ab):
    a, b = ab["a"], ab["b"]
    first = a.engine.start(a.bundles[0], to=ab.to("b"), request_id="t", ttl_s=5)
    tid = first.transfer.id
    b.engine.on_prepare(_env(a.node_id, _outbox_prepare(a, tid), T.PT_PREPARE))
    ab.clock.advance(FAST.inquire_after_s + 1)  # past the expiry, A never ticked
    assert b.engine.tick() == 1
    assert ab.states(tid) == {"a": "aborted", "b": "aborted"}
    assert ab.bundle("a", a.bundles[0]).status == Status.ACTIVE
    ab.settle()
    ab.assert_conserved()


def test_source_without_record_means_presumed_abort(ab):
    a, b = ab["a"], ab["b"]
    wire, proof = ab.wire("a", a.bundles[0])
    tid = f"{a.node_id}/forged-0001"
    msg = fed.TransferPrepare(transfer_id=tid, bundle=wire, to_account=b.account,
                              expires_at_ms=int(ab.clock() * 1000) + 60_000, proof=proof)
    assert _status(b.engine.on_prepare(
        _env(a.node_id, msg.SerializeToString(), T.PT_PREPARE))).state == \
        fed.TRANSFER_STATE_PREPARED
    ab.clock.advance(FAST.inquire_after_s + 1)
    b.engine.tick()
    rec = b.engine.get(tid)
    assert rec.state == T.ABORTED and "presumed abort" in rec.reason
    assert ab.active("b", b.account) == []
    ab.assert_conserved()


def test_status_is_only_told_to_the_other_party(abc):
    a = abc["a"]
    _, rec = a.engine.send(a.bundles[0], to=abc.to("b"), request_id="t")
    ask = fed.TransferStatus(transfer_id=rec.id).SerializeToString()
    assert _status(a.engine.on_status(_env(abc["b"].node_id, ask, T.PT_STATUS))).state == \
        fed.TRANSFER_STATE_COMMITTED
    with pytest.raises(PermissionDenied):
        a.engine.on_status(_env(abc["c"].node_id, ask, T.PT_STATUS))
    unknown = fed.TransferStatus(transfer_id=f"{a.node_id}/nope").SerializeToString()
    assert _status(a.engine.on_status(_env(abc["b"].node_id, unknown, T.PT_STATUS))).state == \
        fed.TRANSFER_STATE_UNKNOWN


# -- what the destination refuses ------------------------------------------------------------------


def _prepare_from(fedn, src_key, bundle_id, *, tid="x-1", mutate=None, to_key="b", origin=None):
    src, dst = fedn[src_key], fedn[to_key]
    wire, proof = fedn.wire(src_key, bundle_id)
    msg = fed.TransferPrepare(transfer_id=f"{src.node_id}/{tid}", bundle=wire,
                              to_account=dst.account,
                              expires_at_ms=int(fedn.clock() * 1000) + 60_000, proof=proof)
    if mutate:
        mutate(msg)
    reply = dst.engine.on_prepare(_env(origin or src.node_id, msg.SerializeToString(),
                                       T.PT_PREPARE))
    return _status(reply)


@pytest.mark.parametrize("mutate, why", [
    (lambda m: setattr(m.bundle.attributes, "zone", "nowhere"), "zone"),
    (lambda m: setattr(m.bundle.attributes, "renewable_ppm", 2_000_000), "renewable"),
    (lambda m: setattr(m.bundle.attributes.interval, "end_unix",
                       m.bundle.attributes.interval.start_unix + 7200), "interval"),
    (lambda m: setattr(m.bundle, "id", "medellin.example/0-5"), "id must be"),
    (lambda m: setattr(m.bundle, "lineage_hash", "zz"), "lineage"),
    (lambda m: setattr(m.bundle, "held_by", "amsterdam.example"), "held by"),
    (lambda m: setattr(m, "expires_at_ms", 1), "expiry"),
    (lambda m: setattr(m, "to_account", "acct_" + "b" * 26), "no account"),
])
def test_destination_refuses_bad_prepares_and_records_why(ab, mutate, why):
    reply = _prepare_from(ab, "a", ab["a"].bundles[0], mutate=mutate)
    assert reply.state == fed.TRANSFER_STATE_ABORTED and why in reply.reason
    assert ab.active("b", ab["b"].account) == []
    rec = ab["b"].engine.get(reply.transfer_id)
    assert rec.state == T.ABORTED and why in rec.reason


def test_destination_refuses_a_range_it_already_holds(ab):
    a, b = ab["a"], ab["b"]
    a.engine.send(a.bundles[0], to=ab.to("b"), request_id="t")
    again = _prepare_from(ab, "a", a.bundles[0], tid="again")  # A (wrongly) offers it again
    assert again.state == fed.TRANSFER_STATE_ABORTED and "already" in again.reason
    # a range being imported (prepared, undecided) is reserved as well
    first = a.engine.start(a.bundles[1], to=ab.to("b"), request_id="t2")
    b.engine.on_prepare(_env(a.node_id, _outbox_prepare(a, first.transfer.id), T.PT_PREPARE))
    clash = _prepare_from(ab, "a", a.bundles[1], tid="clash")
    assert clash.state == fed.TRANSFER_STATE_ABORTED and "being imported" in clash.reason
    a.engine.pump(first.transfer.id)
    ab.assert_conserved()


def test_destination_refuses_its_own_serials_unless_it_exported_them(ab):
    b = ab["b"]
    from eap.node.api import convert

    own = ab.bundle("b", b.bundles[0])

    _, proof = ab.wire("b", b.bundles[0])

    def offer(tid, start, end):
        wire = convert.bundle(own)
        wire.serial_start, wire.serial_end = start, end
        wire.id = f"{b.node_id}/{start}-{end}"
        wire.held_by, wire.owner = ab["a"].node_id, ""
        msg = fed.TransferPrepare(transfer_id=f"{ab['a'].node_id}/{tid}", bundle=wire,
                                  to_account=b.account, proof=proof,
                                  expires_at_ms=int(ab.clock() * 1000) + 60_000)
        return _status(b.engine.on_prepare(_env(ab["a"].node_id, msg.SerializeToString(),
                                                T.PT_PREPARE)))

    held = offer("held", own.serial_start, own.serial_end)  # B holds these itself
    assert held.state == fed.TRANSFER_STATE_ABORTED and "not held by" in held.reason
    minted = offer("mint", 90_000, 90_010)  # B never issued (so never exported) these
    assert minted.state == fed.TRANSFER_STATE_ABORTED and "provenance" in minted.reason
    ab.assert_conserved()


def test_transfer_ids_belong_to_their_source(ab):
    a, b = ab["a"], ab["b"]
    first = a.engine.start(a.bundles[0], to=ab.to("b"), request_id="t")
    payload = _outbox_prepare(a, first.transfer.id)
    with pytest.raises(PermissionDenied):
        b.engine.on_prepare(_env("amsterdam.example", payload, T.PT_PREPARE))
    with pytest.raises(InvalidArgument):
        b.engine.on_prepare(_env(a.node_id, b"\xff\xff", T.PT_PREPARE))
    bad = fed.TransferPrepare(transfer_id="no slash").SerializeToString()
    with pytest.raises(InvalidArgument):
        b.engine.on_prepare(_env(a.node_id, bad, T.PT_PREPARE))
    assert b.engine.list() == []


# -- many transfers under message loss and duplication -------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lossy_duplicating_network_conserves_everything(tmp_path, seed):
    import random

    f = Federation(tmp_path, "abc", faults=Faults(drop_request=0.2, drop_reply=0.2,
                                                  duplicate=0.2, seed=seed), hours=4)
    try:
        rng = random.Random(seed)
        keys = "abc"
        for i in range(12):
            src = rng.choice(keys)
            dst = rng.choice([k for k in keys if k != src])
            mine = f.active(src)
            if not mine:
                continue
            b = rng.choice(mine)
            wh = rng.choice([0, max(1, b.wh // 3)]) if b.wh > 1 else 0
            f[src].engine.send(b.id, to=f.to(dst), wh=wh, request_id=f"r{i}")
            f.clock.advance(rng.random())
            f.tick()
        f.net.faults = Faults()
        f.clock.advance(60)
        f.settle()
        f.assert_conserved()
        f.assert_agree()
    finally:
        f.close()


def test_settings_from_config(ab):
    cfg = ab["a"].node.config
    cfg.extra["transfers"] = {"ttl_s": 5, "batch": 3}
    s = T.TransferSettings.from_config(cfg)
    assert (s.ttl_s, s.batch) == (5.0, 3)
    cfg.extra["transfers"] = {"nope": 1}
    from eap.node.errors import ConfigError

    with pytest.raises(ConfigError):
        T.TransferSettings.from_config(cfg)
