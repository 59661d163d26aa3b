"""A dishonest peer with a valid certificate and signing key, sending hand-made messages.

Barcelona (``b``) is the liar: a trusted member of the federation, so every envelope it sends
authenticates.  It tries to make Amsterdam (``c``, the victim) accept Wh that were never
issued, were issued otherwise, or are held elsewhere.  Every attempt must be refused, change
nothing, and leave at most one live copy of every serial in the federation.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from test_transfers_support import Federation

from eap.node import batches, kernels
from eap.node.crypto import KeyRing, VerifiedEnvelope
from eap.node.domain import provenance
from eap.node.errors import FailedPrecondition
from eap.node.federation import transfers as T
from eap.node.records.enums import Status
from eap.node.store import custody_repos as cr
from eap.v1 import federation_pb2 as fed
from eap.v1 import types_pb2 as pb


@pytest.fixture
def fed4(tmp_path):
    f = Federation(tmp_path, "abcd")
    yield f
    f.close()


def _env(origin: str, payload: bytes, ptype: str) -> VerifiedEnvelope:
    return VerifiedEnvelope(payload=payload, payload_type=ptype, origin=origin, key_id="k",
                            nonce=b"0" * 16, expires_at_ms=0)


def _prepare(f, victim: str, liar: str, wire: pb.RecordBundle, proof: pb.RecordProof | None,
             tid: str) -> fed.TransferStatus:
    v = f[victim]
    msg = fed.TransferPrepare(transfer_id=f"{f[liar].node_id}/{tid}", bundle=wire,
                              to_account=v.account,
                              expires_at_ms=int(f.clock() * 1000) + 60_000, proof=proof)
    _, raw = v.engine.on_prepare(_env(f[liar].node_id, msg.SerializeToString(), T.PT_PREPARE))
    return fed.TransferStatus.FromString(raw)


def _commit(f, victim: str, liar: str, tid: str, custody: pb.Signed | None = None):
    msg = fed.TransferDecision(transfer_id=f"{f[liar].node_id}/{tid}",
                               decision=fed.TRANSFER_STATE_COMMITTED, custody=custody)
    return f[victim].engine.on_decision(_env(f[liar].node_id, msg.SerializeToString(),
                                             T.PT_DECISION))


def _wire_for(bundle_id: str, issuer: str, start: int, end: int, like: pb.RecordBundle,
              held_by: str, *, lineage: str | None = None, parent: str = "") -> pb.RecordBundle:
    w = pb.RecordBundle()
    w.CopyFrom(like)
    w.id, w.issuer, w.serial_start, w.serial_end = bundle_id, issuer, start, end
    w.held_by, w.owner, w.parent_id = held_by, "", parent
    if lineage:
        w.lineage_hash = lineage
    return w


def _signed_batch(keys: KeyRing, issuer: str, seq: int, record: pb.IssuedRecord):
    """A batch of one record, signed by ``keys``: what a lying issuer can always make."""
    cols = {"serial_start": np.array([record.serial_start], np.int64),
            "serial_end": np.array([record.serial_end], np.int64),
            "interval_start": np.array([record.interval.start_unix], np.int64),
            "interval_end": np.array([record.interval.end_unix], np.int64),
            "device": np.zeros(1, np.int32), "source": np.array([record.source], np.uint8),
            "technology": np.array([record.technology], np.uint8),
            "renewable_ppm": np.array([record.renewable_ppm], np.uint32),
            "carbon_mg": np.array([record.carbon_mg_per_kwh], np.uint32),
            "zone": np.zeros(1, np.int32), "owner": np.zeros(1, np.int32)}
    leaves = kernels.leaf_hashes(cols, [record.device_id], [record.zone], [record.owner])
    root = kernels.merkle_root(leaves)
    key_id, sig = keys.sign(batches.header_bytes(issuer, seq, 1, root))
    header = pb.BatchHeader(issuer=issuer, seq=seq, count=1, merkle_root=root, key_id=key_id,
                            signature=sig)
    rid = f"{issuer}/{record.serial_start}-{record.serial_end}"
    lineage = hashlib.sha256(b"\x03" + bytes(leaves[0]) + rid.encode()).hexdigest()
    return pb.RecordProof(batch=header, index=0, record=record, path=[], lineage=[rid]), lineage


def _nothing_changed(f, victim: str = "c") -> None:
    v = f[victim]
    assert [b for b in f.active(victim, v.account)] == []
    f.assert_conserved()


# -- 1. serials the source never published ---


def test_unpublished_serials_are_refused(fed4):
    f, b = fed4, fed4["b"]
    real_wire, real_proof = f.wire("b", b.bundles[0])
    # (a) a real batch header, an invented record in it: the inclusion path fails
    fake = pb.IssuedRecord()
    fake.CopyFrom(real_proof.record)
    fake.serial_start, fake.serial_end = 90_000, 90_100
    proof = pb.RecordProof()
    proof.CopyFrom(real_proof)
    proof.record.CopyFrom(fake)
    del proof.lineage[:]
    proof.lineage.append(f"{b.node_id}/90000-90100")
    wire = _wire_for(f"{b.node_id}/90000-90100", b.node_id, 90_000, 90_100, real_wire,
                     b.node_id)
    r = _prepare(f, "c", "b", wire, proof, "unpub-a")
    assert r.state == fed.TRANSFER_STATE_ABORTED and "not included" in r.reason
    # (b) a freshly signed batch reusing a seq the victim synced: equivocation
    proof, lineage = _signed_batch(b.node.keys, b.node_id, 1, fake)
    wire.lineage_hash = lineage
    r = _prepare(f, "c", "b", wire, proof, "unpub-b")
    assert r.state == fed.TRANSFER_STATE_ABORTED and "equivocation" in r.reason
    # (c) a freshly signed batch under a new seq, never served to anyone
    proof, lineage = _signed_batch(b.node.keys, b.node_id, 99, fake)
    r = _prepare(f, "c", "b", wire, proof, "unpub-c")
    assert r.state == fed.TRANSFER_STATE_ABORTED and "not one" in r.reason
    for tid in ("unpub-a", "unpub-b", "unpub-c"):  # and a COMMIT revives none of them
        _, raw = _commit(f, "c", "b", tid)
        assert fed.TransferStatus.FromString(raw).state == fed.TRANSFER_STATE_ABORTED
    _nothing_changed(f)


# -- 2. a range straddling two records, with invented attributes ---


def test_range_across_records_with_invented_attributes_is_refused(fed4):
    f, a, b = fed4, fed4["a"], fed4["b"]
    f["a"].engine.send(a.bundles[0], to=f.to("b"), request_id="x1")
    f["a"].engine.send(a.bundles[1], to=f.to("b"), request_id="x2")
    first, proof = f.wire("b", a.bundles[0])
    second = f.bundle("a", a.bundles[1])
    span = f"{a.node_id}/{first.serial_start}-{second.serial_end}"
    wire = _wire_for(span, a.node_id, first.serial_start, second.serial_end, first, b.node_id)
    wire.attributes.source = 9  # coal
    wire.attributes.device_id = "dev_someoneelse"
    r = _prepare(f, "c", "b", wire, proof, "straddle")
    assert r.state == fed.TRANSFER_STATE_ABORTED and "provenance" in r.reason
    # the honest attributes and either record's proof do not help: one record, one bundle
    wire.attributes.CopyFrom(first.attributes)
    r = _prepare(f, "c", "b", wire, proof, "straddle-2")
    assert r.state == fed.TRANSFER_STATE_ABORTED and "provenance" in r.reason
    # nor invented attributes on a range inside one record
    inside, proof = f.wire("b", a.bundles[0])
    inside.attributes.carbon_mg_per_kwh += 41_000
    r = _prepare(f, "c", "b", inside, proof, "attrs")
    assert r.state == fed.TRANSFER_STATE_ABORTED and "attributes differ" in r.reason
    _nothing_changed(f)


# -- 3. an issuer the destination has never heard of ---


def test_wh_of_an_unknown_issuer_are_refused(fed4, tmp_path):
    f, b = fed4, fed4["b"]
    stranger = KeyRing.create(tmp_path / "stranger-keys")
    real_wire, real_proof = f.wire("b", b.bundles[0])
    rec = pb.IssuedRecord()
    rec.CopyFrom(real_proof.record)
    rec.serial_start, rec.serial_end = 0, 100_000
    proof, lineage = _signed_batch(stranger, "mallory.example", 1, rec)
    wire = _wire_for("mallory.example/0-100000", "mallory.example", 0, 100_000, real_wire,
                     b.node_id, lineage=lineage)
    r = _prepare(f, "c", "b", wire, proof, "stranger")
    assert r.state == fed.TRANSFER_STATE_ABORTED and "not a trusted peer" in r.reason
    _nothing_changed(f)


# -- 4. a copy of a bundle the source still holds ---


def test_a_copy_of_what_the_source_still_holds_never_activates(fed4):
    f, a, b, c = fed4, fed4["a"], fed4["b"], fed4["c"]
    f["a"].engine.send(a.bundles[2], to=f.to("b"), request_id="buy")  # b holds A's Wh legally
    wire, proof = f.wire("b", a.bundles[2])
    r = _prepare(f, "c", "b", wire, proof, "copy")
    assert r.state == fed.TRANSFER_STATE_PREPARED  # the proof is genuine...
    with pytest.raises(FailedPrecondition, match="custody"):  # ...but A never moved custody
        _commit(f, "c", "b", "copy")
    # a custody record b signs itself is not A's
    own = provenance.sign(b.node.keys, b.node_id, provenance.CUSTODY_TAG, pb.CustodyRecord(
        issuer=a.node_id, serial_start=wire.serial_start, serial_end=wire.serial_end,
        transfer_id=f"{b.node_id}/copy", from_node=b.node_id,
        to_node=c.node_id).SerializeToString())
    with pytest.raises(FailedPrecondition):
        _commit(f, "c", "b", "copy", own)
    assert f.bundle("b", a.bundles[2]).status == Status.ACTIVE  # still b's, only there
    assert f.states(f"{b.node_id}/copy") == {"c": "prepared"}
    _nothing_changed(f)


# -- 5. one range sold to two nodes ---


def test_double_export_to_two_nodes_is_refused(fed4):
    f, a, b, c, d = fed4, fed4["a"], fed4["b"], fed4["c"], fed4["d"]
    x = f.bundle("a", a.bundles[1])
    f["a"].engine.send(x.id, to=f.to("b"), request_id="buy")
    wire, proof = f.wire("b", x.id)
    _, honest = b.engine.send(x.id, to=f.to("c"), request_id="sell-1")  # the real sale
    assert honest.state == T.COMMITTED
    with c.node.store.read() as conn:
        record = pb.Signed.FromString(bytes(cr.get_provenance(conn, x.id).custody))
    # the same range to d, replaying the first sale's custody record
    r = _prepare(f, "d", "b", wire, proof, "sell-2")
    assert r.state == fed.TRANSFER_STATE_PREPARED
    with pytest.raises(FailedPrecondition, match="not this transfer"):
        _commit(f, "d", "b", "sell-2", record)
    # and asking the issuer to move it again: refused, custody stays with c
    ask = fed.CustodyRequest(transfer_id=f"{b.node_id}/sell-2", issuer=a.node_id,
                             serial_start=x.serial_start, serial_end=x.serial_end,
                             to_node=d.node_id, expires_at_ms=int(f.clock() * 1000) + 9000)
    answer = fed.CustodyAnswer.FromString(a.engine.on_move_custody(
        _env(b.node_id, ask.SerializeToString(), "x"))[1])
    assert answer.outcome == fed.CUSTODY_OUTCOME_REFUSED
    assert f.active("d", d.account) == []
    assert [z.id for z in f.active("c", c.account)] == [x.id]
    f.assert_conserved()


def test_a_liar_cannot_move_custody_of_what_it_does_not_hold(fed4):
    f, a, b, c = fed4, fed4["a"], fed4["b"], fed4["c"]
    x = f.bundle("a", a.bundles[0])  # still at a
    ask = fed.CustodyRequest(transfer_id=f"{b.node_id}/grab", issuer=a.node_id,
                             serial_start=x.serial_start, serial_end=x.serial_end,
                             to_node=c.node_id, expires_at_ms=int(f.clock() * 1000) + 9000)
    answer = fed.CustodyAnswer.FromString(a.engine.on_move_custody(
        _env(b.node_id, ask.SerializeToString(), "x"))[1])
    assert answer.outcome == fed.CUSTODY_OUTCOME_REFUSED and "not held by" in answer.reason
    with a.node.store.read() as conn:
        assert cr.holder_of(conn, x.serial_start, x.serial_end) == (a.node_id, False)
    f.assert_conserved()
