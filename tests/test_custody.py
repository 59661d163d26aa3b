"""The issuer is the authority of record for its own serials (docs/custody.md).

Real nodes in one process (their own databases), transfers over the in-process network.
"""

from __future__ import annotations

import pytest
from test_transfers_support import Federation

from eap.node.domain import provenance
from eap.node.federation import transfers as T
from eap.node.records.enums import Status
from eap.node.records.models import Principal
from eap.node.store import custody_repos as cr
from eap.node.store import transfer_repos as tr
from eap.v1 import types_pb2 as pb


@pytest.fixture
def abc(tmp_path):
    f = Federation(tmp_path, "abc")
    yield f
    f.close()


def _custody(city) -> list[tuple[int, int, str, bool]]:
    with city.node.store.read() as conn:
        return [(r.serial_start, r.serial_end, r.holder, bool(r.retired))
                for r in cr.all_ranges(conn)]


def _holder(city, start: int, end: int):
    with city.node.store.read() as conn:
        return cr.holder_of(conn, start, end)


def test_issuance_takes_custody_of_every_serial(abc):
    a = abc["a"]
    assert _custody(a) == [(0, a.node.status().wh_issued, a.node_id, False)]


def test_issuer_as_source_moves_custody_in_its_decision(abc):
    a, b = abc["a"], abc["b"]
    x = abc.bundle("a", a.bundles[1])
    _, rec = a.engine.send(x.id, to=abc.to("b"), wh=500, request_id="t")
    assert rec.state == T.COMMITTED
    assert _holder(a, x.serial_start, x.serial_start + 500) == (b.node_id, False)
    assert _holder(a, x.serial_start + 500, x.serial_end) == (a.node_id, False)
    # B keeps the proof and the issuer's signed custody record with the bundle
    moved = f"{a.node_id}/{x.serial_start}-{x.serial_start + 500}"
    with b.node.store.read() as conn:
        row = cr.get_provenance(conn, moved)
    signed = pb.Signed.FromString(bytes(row.custody))
    record = provenance.custody_record(signed, b.engine.signatures(), issuer=a.node_id)
    assert (record.from_node, record.to_node, record.transfer_id) == (a.node_id, b.node_id,
                                                                      rec.id)
    assert record.cell == x.cell == abc.bundle("b", moved).cell
    abc.assert_conserved()


def test_third_party_serials_move_only_through_their_issuer(abc):
    a, b, c = abc["a"], abc["b"], abc["c"]
    x = abc.bundle("a", a.bundles[2])
    a.engine.send(x.id, to=abc.to("b"), request_id="ab")
    _, rec = b.engine.send(x.id, to=abc.to("c"), wh=700, principal=Principal.operator(),
                           request_id="bc")
    assert rec.state == T.COMMITTED
    assert _holder(a, x.serial_start, x.serial_start + 700) == (c.node_id, False)
    assert _holder(a, x.serial_start + 700, x.serial_end) == (b.node_id, False)
    with b.node.store.read() as conn:
        row = tr.get_transfer(conn, rec.id)
    assert row.custody_state == "moved" and row.custody is not None
    # C's import activated with A's record of the move, and proves back to A's batch
    child = abc.bundle("c", f"{a.node_id}/{x.serial_start}-{x.serial_start + 700}")
    assert child.status == Status.ACTIVE and child.cell == x.cell
    abc.assert_conserved()
    abc.assert_agree()


def test_issuer_refuses_a_second_move_of_what_already_left(abc):
    a, b, c = abc["a"], abc["b"], abc["c"]
    x = abc.bundle("a", a.bundles[0])
    a.engine.send(x.id, to=abc.to("b"), request_id="ab")
    b.engine.send(x.id, to=abc.to("c"), request_id="bc")
    # B's custody request replayed under another transfer id: A says B no longer holds it
    from eap.node.crypto import VerifiedEnvelope
    from eap.v1 import federation_pb2 as fed

    again = fed.CustodyRequest(transfer_id=f"{b.node_id}/again", issuer=a.node_id,
                               serial_start=x.serial_start, serial_end=x.serial_end,
                               to_node=c.node_id, expires_at_ms=int(abc.clock() * 1000) + 9000)
    env = VerifiedEnvelope(payload=again.SerializeToString(), payload_type="x",
                           origin=b.node_id, key_id="k", nonce=b"0" * 16, expires_at_ms=0)
    answer = fed.CustodyAnswer.FromString(a.engine.on_move_custody(env)[1])
    assert answer.outcome == fed.CUSTODY_OUTCOME_REFUSED and "not held by" in answer.reason
    assert _holder(a, x.serial_start, x.serial_end) == (c.node_id, False)


def test_serials_come_home_into_the_issuers_custody(abc):
    a, b, c = abc["a"], abc["b"], abc["c"]
    x = abc.bundle("a", a.bundles[1])
    a.engine.send(x.id, to=abc.to("b"), request_id="ab")
    b.engine.send(x.id, to=abc.to("c"), wh=300, request_id="bc")
    part = f"{a.node_id}/{x.serial_start}-{x.serial_start + 300}"
    _, rec = c.engine.send(part, to=abc.to("a"), request_id="ca")
    assert rec.state == T.COMMITTED
    assert _holder(a, x.serial_start, x.serial_start + 300) == (a.node_id, False)
    assert abc.bundle("a", part).status == Status.ACTIVE
    abc.assert_conserved()


def test_retirement_elsewhere_is_reported_to_the_issuer(abc):
    a, b = abc["a"], abc["b"]
    x = abc.bundle("a", a.bundles[0])
    a.engine.send(x.id, to=abc.to("b"), request_id="ab")
    receipt = b.node.retire(x.id, beneficiary="city hall", purpose="scope2", wh=400,
                            request_id="claim")
    assert _holder(a, x.serial_start, x.serial_start + 400) == (b.node_id, False)
    abc.tick()  # the outbox delivers the report
    assert _holder(a, x.serial_start, x.serial_start + 400) == (b.node_id, True)
    assert _holder(a, x.serial_start + 400, x.serial_end) == (b.node_id, False)
    # replayed: same answer, nothing changes
    with b.node.store.read() as conn:
        assert not [m for m in tr.outbox_unacked(conn, receipt.id)]
    # retired serials never move again, the issuer refuses their custody too
    assert _custody(a).count((x.serial_start, x.serial_start + 400, b.node_id, True)) == 1


def test_issuer_down_during_the_custody_step_waits_then_aborts(abc):
    a, b = abc["a"], abc["b"]
    x = abc.bundle("a", a.bundles[2])
    a.engine.send(x.id, to=abc.to("b"), request_id="ab")
    abc.down("a")
    _, rec = b.engine.send(x.id, to=abc.to("c"), request_id="bc")
    assert rec.state == T.PREPARING  # C prepared; only A's answer decides now
    abc.clock.advance(abc.settings.ttl_s + 5)
    abc.tick()
    assert abc.states(rec.id) == {"b": "preparing", "c": "prepared"}  # no abort while asked
    abc.net.attach(a.engine)  # A is back: the request arrived after the expiry
    abc.settle()
    assert abc.states(rec.id) == {"b": "aborted", "c": "aborted"}
    assert abc.bundle("b", x.id).status == Status.ACTIVE
    assert _holder(a, x.serial_start, x.serial_end) == (b.node_id, False)
    abc.assert_conserved()


def test_issuer_back_in_time_commits(abc):
    a, b, c = abc["a"], abc["b"], abc["c"]
    x = abc.bundle("a", a.bundles[2])
    a.engine.send(x.id, to=abc.to("b"), request_id="ab")
    abc.down("a")
    _, rec = b.engine.send(x.id, to=abc.to("c"), request_id="bc")
    abc.net.attach(a.engine)
    abc.settle()
    assert abc.states(rec.id) == {"b": "committed", "c": "committed"}
    assert _holder(a, x.serial_start, x.serial_end) == (c.node_id, False)
    abc.assert_conserved()


def test_exports_and_imports_are_told_to_record_event_plugins_after_the_commit(abc):
    from eap.plugins import hookimpl

    class Events:
        def __init__(self) -> None:
            self.seen: list[dict] = []

        @hookimpl
        def eap_record_event(self, event):
            self.seen.append(event)

    a, b = abc["a"], abc["b"]
    ea, eb = Events(), Events()
    a.node.plugins.register(ea)
    b.node.plugins.register(eb)
    x = abc.bundle("a", a.bundles[0])
    _, rec = a.engine.send(x.id, to=abc.to("b"), wh=100, request_id="t")
    assert rec.state == T.COMMITTED
    exported = [e for e in ea.seen if e["type"] == "exported"]
    imported = [e for e in eb.seen if e["type"] == "imported"]
    assert len(exported) == 1 and len(imported) == 1
    assert exported[0]["transfer"] == imported[0]["transfer"] == rec.id
    assert exported[0]["wh"] == imported[0]["wh"] == 100
    assert exported[0]["to"] == abc.to("b")
    abc.settle()  # replays and acknowledgements tell nothing again
    assert len([e for e in ea.seen if e["type"] == "exported"]) == 1
    assert len([e for e in eb.seen if e["type"] == "imported"]) == 1
