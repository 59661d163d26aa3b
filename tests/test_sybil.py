"""Duplicate devices across nodes (Sybil): the meter OPRF, and two and three real nodes in this
process talking real gRPC with mutual TLS (tests/inproc_fed.py), every message captured."""

from __future__ import annotations

import json
import os
import secrets

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inproc_fed import InProcFed
from nacl import bindings as nb
from sqlalchemy import func, select

from eap.node.crypto import meter_oprf as oprf
from eap.node.crypto import seal
from eap.node.domain import sybil
from eap.node.errors import AlreadyExists, InvalidArgument, ResourceExhausted
from eap.node.federation import device_check as dc
from eap.node.store import schema as t
from eap.v1 import federation_pb2 as fed

A, B, C = "a.example", "b.example", "c.example"
METER = "MTR-7731-0042"


# -- the OPRF ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40).filter(
        lambda s: any(ch.isalnum() for ch in s)
    )
)
def test_blinded_evaluation_equals_direct_evaluation(meter):
    key = oprf.derive_key(secrets.token_bytes(32))
    r, blinded = oprf.blind(meter)
    assert blinded != oprf.hash_to_group(meter)  # the point sent is not H(m)
    assert oprf.unblind(r, oprf.evaluate(key, blinded)) == oprf.element(key, meter)


def test_blinding_is_fresh_and_keys_separate_nodes():
    k1, k2 = (oprf.derive_key(os.urandom(32)) for _ in range(2))
    assert oprf.blind(METER)[1] != oprf.blind(METER)[1]
    assert oprf.element(k1, METER) != oprf.element(k2, METER)
    assert oprf.element(k1, "mtr 7731.0042") == oprf.element(k1, METER)  # normalised
    assert oprf.element(k1, "MTR-7731-0043") != oprf.element(k1, METER)


@pytest.mark.parametrize("bad", [bytes(32), b"\x01" + bytes(31), b"\xff" * 32, b"short"])
def test_evaluate_refuses_points_outside_the_subgroup(bad):
    with pytest.raises(InvalidArgument):
        oprf.evaluate(oprf.derive_key(os.urandom(32)), bad)


def test_empty_meter_id_is_refused():
    with pytest.raises(InvalidArgument):
        oprf.normalise_meter_id(" -_. ")


# -- two and three nodes ----------------------------------------------------------------------


@pytest.fixture
def fed2(tmp_path, monkeypatch):
    f = InProcFed(tmp_path, [A, B], monkeypatch=monkeypatch)
    yield f
    f.close()


def _devices(m) -> int:
    with m.node.store.read() as conn:
        return conn.execute(select(func.count()).select_from(t.devices)).scalar_one()


def _no_meter_in(wire, *meters):
    for rpc, direction, data in wire:
        for meter in meters:
            for form in {meter, oprf.normalise_meter_id(meter), meter.lower()}:
                assert form.encode() not in data, (rpc, direction)


def test_duplicate_is_refused_at_the_second_registration(fed2):
    a, b = fed2[A], fed2[B]
    a.device(a.account(), METER, "roof-a")
    owner = b.account()
    before = _devices(b)
    with pytest.raises(AlreadyExists) as err:
        b.device(owner, "mtr 7731 0042", "roof-b")  # written differently: same meter
    assert A in str(err.value) and err.value.violations[0].field == "device.meter_id"
    assert _devices(b) == before  # nothing registered
    alerts = sybil.list_duplicates(b.node)
    assert [(x["peer"], x["action"], x["local_ref"], x["device_id"]) for x in alerts] == [
        (A, "refused", "roof-b", "")
    ]
    # Different meters pass, and nothing is flagged for them.
    b.device(owner, "MTR-7731-0043", "roof-b2")
    assert len(sybil.list_duplicates(b.node)) == 1 and sybil.list_duplicates(a.node) == []
    assert {rpc for rpc, _, _ in fed2.wire} >= {"CheckDevices"}
    _no_meter_in(fed2.wire, METER, "mtr 7731 0042", "MTR-7731-0043")


def test_cli_lists_duplicates(fed2):
    a, b = fed2[A], fed2[B]
    a.device(a.account(), METER, "roof-a")
    with pytest.raises(AlreadyExists):
        b.device(b.account(), METER, "roof-b")
    from click.testing import CliRunner

    from eap.node.cli import main

    out = CliRunner().invoke(main, ["devices", "duplicates", "--home", str(b.home), "--json"])
    assert out.exit_code == 0, out.output
    assert [(x["peer"], x["action"]) for x in json.loads(out.output)] == [(A, "refused")]
    text = CliRunner().invoke(main, ["devices", "duplicates", "--home", str(b.home)])
    assert "roof-b" in text.output and A in text.output


def test_three_nodes_flag_a_duplicate_registered_offline_at_both_ends(tmp_path, monkeypatch):
    f = InProcFed(tmp_path, [A, B, C], monkeypatch=monkeypatch)
    try:
        a, b, c = f[A], f[B], f[C]
        a.device(a.account(), METER, "roof-a")
        b.device(b.account(), "MTR-0000-0001", "roof-b")
        c.node.meter_guard = None  # registered where no peer was reachable
        dup = c.device(c.account(), METER, "roof-c")
        c.node.meter_guard = c.runtime.device_checker
        events = []
        monkeypatch.setattr(
            a.node, "record_event", lambda kind, rid, **kw: events.append((kind, kw))
        )
        for m in (c, a, b):
            m.runtime.device_checker.sweep()
        for m in (c, a, b):  # a second round: tags published meanwhile are seen
            m.runtime.device_checker.sweep()
        flagged_c = sybil.list_duplicates(c.node)
        assert [(x["peer"], x["action"], x["device_id"]) for x in flagged_c] == [
            (A, "flagged", dup.id)
        ]
        assert [(x["peer"], x["action"]) for x in sybil.list_duplicates(a.node)] == [(C, "flagged")]
        assert sybil.list_duplicates(b.node) == []  # different meters are not flagged
        assert [k for k, _ in events] == ["device_duplicate"] and events[0][1]["peer"] == C
        # Sweeping again adds no alert (durable, not repeated).
        a.runtime.device_checker.sweep()
        assert len(sybil.list_duplicates(a.node)) == 1
        _no_meter_in(f.wire, METER, "MTR-0000-0001")
        # Every CheckDevices request carries only 32-byte subgroup points.
        for rpc, direction, data in f.wire:
            if rpc == "CheckDevices" and direction == "request":
                from eap.v1 import types_pb2

                env = types_pb2.SignedEnvelope.FromString(data)
                req = fed.DeviceCheckRequest.FromString(env.payload)
                assert all(nb.crypto_core_ed25519_is_valid_point(p) for p in req.blinded)
    finally:
        f.close()


# -- a lying or probing peer --------------------------------------------------------------------


def _raw_check(member_from, to: str, points: list[bytes]):
    """A CheckDevices call crafted by hand with ``member_from``'s certificate and keys."""
    client = member_from.runtime.client
    env = seal(
        member_from.node.keys,
        fed.DeviceCheckRequest(blinded=points).SerializeToString(),
        dc.PT_REQUEST,
        member_from.node_id,
        to,
    )
    from eap.v1 import types_pb2

    method = client.channel(to).unary_unary(
        "/eap.v1.Federation/CheckDevices",
        request_serializer=types_pb2.SignedEnvelope.SerializeToString,
        response_deserializer=types_pb2.SignedEnvelope.FromString,
    )
    return method(types_pb2.SignedEnvelope(**env.as_dict()), timeout=10)


def test_a_probing_peer_hits_the_device_check_budget(tmp_path, monkeypatch):
    f = InProcFed(
        tmp_path,
        [A, B],
        monkeypatch=monkeypatch,
        federation={"device_check_burst": 5, "device_checks_per_hour": 1},
    )
    try:
        a, b = f[A], f[B]
        a.device(a.account(), METER, "roof-a")
        guesses = [oprf.blind(f"MTR-7731-{i:04d}")[1] for i in range(5)]
        _raw_check(b, A, guesses)  # five guesses: the whole burst
        with pytest.raises(grpc.RpcError) as err:
            _raw_check(b, A, [oprf.blind("MTR-7731-0042")[1]])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Malformed points are refused as such, and a too-large call too.
        for bad in ([bytes(32)], [b"\x01" + bytes(31)], [oprf.blind("x")[1]] * 65):
            with pytest.raises(grpc.RpcError) as err:
                _raw_check(a, B, bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # b's own registrations now find a's check budget spent: the check is skipped, the
        # device registered (not silently: the sweep retries later).
        b.device(b.account(), "MTR-1", "roof-b")
        with pytest.raises(ResourceExhausted):
            b.runtime.device_checker._call(A, [oprf.blind("MTR-2")[1]])
    finally:
        f.close()


class _Liar:
    """A peer answering CheckDevices with a key of its own choosing and tags it invents."""

    def __init__(self, guessed: list[str]) -> None:
        self.key = oprf.derive_key(os.urandom(32))
        self.guessed = guessed

    def __call__(self, envelope):
        req = fed.DeviceCheckRequest.FromString(envelope.payload)
        fake = [oprf.tag(B, oprf.element(self.key, m)) for m in self.guessed]
        fake += [secrets.token_bytes(16) for _ in range(200)]
        resp = fed.DeviceCheckResponse(
            evaluated=[oprf.evaluate(self.key, p) for p in req.blinded],
            tags=[fed.DeviceTag(seq=req.after_seq + i + 1, tag=g) for i, g in enumerate(fake)]
            if req.after_seq == 0
            else [],
        )
        return dc.PT_RESPONSE, resp.SerializeToString()


def test_a_lying_peer_cannot_refuse_a_meter_it_does_not_know(fed2):
    a, b = fed2[A], fed2[B]
    b.runtime.servicer.add_handler("on_check_devices", dc.PT_REQUEST, _Liar(["MTR-GUESSED"]))
    owner = a.account()
    a.device(owner, METER, "roof-a")  # b invented 200 tags: none is a's meter
    assert sybil.list_duplicates(a.node) == []
    # What it can do: publish the tag of a meter id it knows or guesses (as if registered).
    with pytest.raises(AlreadyExists):
        a.device(owner, "mtr-guessed", "roof-a2")
    assert [(x["peer"], x["action"]) for x in sybil.list_duplicates(a.node)] == [(B, "refused")]


def test_a_malformed_answer_is_not_trusted(fed2):
    a, b = fed2[A], fed2[B]

    def short(envelope):
        return dc.PT_RESPONSE, fed.DeviceCheckResponse(evaluated=[]).SerializeToString()

    def bad_point(envelope):
        return dc.PT_RESPONSE, fed.DeviceCheckResponse(evaluated=[bytes(32)]).SerializeToString()

    for handler in (short, bad_point):
        b.runtime.servicer.add_handler("on_check_devices", dc.PT_REQUEST, handler)
        with pytest.raises(InvalidArgument):
            a.runtime.device_checker._tags_of(B, [METER])
    # A registration still goes through (the peer is skipped) and stays checkable later.
    a.device(a.account(), METER, "roof-a")
    with a.node.store.read() as conn:
        assert conn.execute(select(func.count()).select_from(t.device_peer_tags)).scalar_one() == 0


def test_cli_registration_is_checked_against_peers_too(fed2):
    from click.testing import CliRunner

    from eap.node.cli import main

    a, b = fed2[A], fed2[B]
    a.device(a.account(), METER, "roof-a")
    owner = b.account()
    args = [
        "device",
        "register",
        "--ref",
        "roof-cli",
        "--capacity-w",
        "300",
        "--source",
        "solar",
        "--technology",
        "photovoltaic",
        "--commissioned",
        "2021-01-01",
        "--lat",
        "41.1",
        "--lon",
        "2.1",
        "--zone",
        "ES",
        "--owner",
        owner,
        "--attestation",
        "gca-1",
        "--home",
        str(b.home),
    ]
    out = CliRunner().invoke(main, [*args, "--meter-id", "MTR 7731 0042"])
    assert out.exit_code == 4, out.output  # already exists: at peer a
    assert A in out.output
    out = CliRunner().invoke(main, [*args, "--meter-id", "MTR-OTHER-1"])
    assert out.exit_code == 0, out.output


# -- the repositories on every database ---------------------------------------------------------


def test_tags_matches_and_alerts_on_each_database(node):
    owner = node.create_account(request_id="o", label="o").account.id
    devs = [
        node.register_device(
            request_id=f"d{i}",
            local_ref=f"r{i}",
            capacity_w=100,
            source="solar",
            technology="photovoltaic",
            commissioned_on="2020-01-01",
            latitude=1.0,
            longitude=2.0,
            zone="CO-ANT",
            owner=owner,
            meter_id=f"M-{i}",
            attestation_evidence="grid-connection-agreement 2020/117",
        )
        for i in range(3)
    ]
    from eap.node.store import device_check_repos as dr

    with node.store.read() as conn:
        mine = dr.own_tags_after(conn, 0, 10)
    assert [g for _, g in mine] == [sybil.own_tag(node, f"M-{i}") for i in range(3)]
    peer_key = oprf.derive_key(os.urandom(32))
    peer_tag = [oprf.tag(B, oprf.element(peer_key, f"M-{i}")) for i in range(3)]
    with node.store.transaction() as conn:
        assert [d for d, _ in dr.devices_unchecked_for(conn, B, 10)] == [d.id for d in devs]
        dr.add_peer_checks(conn, [(d.id, B, g) for d, g in zip(devs, peer_tag, strict=True)], 1)
        dr.add_peer_checks(conn, [(devs[0].id, B, peer_tag[0])], 2)  # kept, no error
        dr.add_peer_tags(conn, B, [(1, secrets.token_bytes(16)), (2, peer_tag[1])])
        assert dr.devices_unchecked_for(conn, B, 10) == []
        assert dr.peer_cursor(conn, B) == 2
    assert [x["device_id"] for x in sybil.flag_matches(node, B)] == [devs[1].id]
    assert sybil.flag_matches(node, B) == []  # durable, not repeated
    assert [(x["action"], x["local_ref"]) for x in sybil.list_duplicates(node)] == [
        ("flagged", "r1")
    ]


def test_a_malformed_or_oversized_tag_page_is_refused(tmp_path, monkeypatch):
    f = InProcFed(
        tmp_path, [A, B], monkeypatch=monkeypatch, federation={"max_peer_device_tags": 10}
    )
    try:
        a, b = f[A], f[B]

        def pages(tags):
            def handler(envelope):
                req = fed.DeviceCheckRequest.FromString(envelope.payload)
                key = oprf.derive_key(b"k" * 32)
                return dc.PT_RESPONSE, fed.DeviceCheckResponse(
                    evaluated=[oprf.evaluate(key, p) for p in req.blinded],
                    tags=[fed.DeviceTag(seq=s, tag=g) for s, g in tags],
                ).SerializeToString()

            return handler

        t16 = secrets.token_bytes(16)
        cases = [
            ([(2, t16), (1, t16)], InvalidArgument),  # seqs must increase
            ([(1, b"short")], InvalidArgument),  # tags are 16 bytes
            ([(i + 1, secrets.token_bytes(16)) for i in range(11)], ResourceExhausted),
        ]
        for tags, error in cases:
            b.runtime.servicer.add_handler("on_check_devices", dc.PT_REQUEST, pages(tags))
            with pytest.raises(error):
                a.runtime.device_checker._call(B, [])
        with a.node.store.read() as conn:
            assert (
                conn.execute(select(func.count()).select_from(t.peer_device_tags)).scalar_one() == 0
            )
        # The sweep reports the refusal instead of raising, and keeps going next time.
        assert a.runtime.device_checker.sweep_peer(B)["error"]
    finally:
        f.close()
