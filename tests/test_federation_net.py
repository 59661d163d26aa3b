"""Three nodes in separate ``eap-node serve`` processes, over real sockets with mutual TLS.

Handshake, sync and resume, the background sync worker, and every way an inbound call is
refused (unknown peer, removed peer, wrong destination, expired envelope, bad signature,
replay, origin not the TLS peer) — each refusal with its status code and no change at all.
"""

from __future__ import annotations

import dataclasses
import time

import grpc
import pytest
from fednet import FedNet, write_settings
from sqlalchemy import func, select

from eap.node.crypto import (
    KeyRing,
    issue_node_cert,
    load_tls_material,
    peer_channel_options,
    seal,
)
from eap.node.federation.descriptor import describe
from eap.node.store import repos
from eap.node.store import schema as t
from eap.v1 import federation_pb2 as fed
from eap.v1 import types_pb2

A, B, C = "a.example", "b.example", "c.example"
HELLO = fed.HelloRequest.DESCRIPTOR.full_name


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    net = FedNet(tmp_path_factory.mktemp("fed"), [(A, "CO-ANT"), (B, "ES"), (C, "NL")])
    net.connect_all()
    write_settings(net[C].home, "federation", sync_interval_s=0.5)  # c syncs by itself
    net.start_all()
    yield net
    net.stop_all()


def _channel(tls_dir, target: str, endpoint: str) -> grpc.Channel:
    tls = load_tls_material(tls_dir)
    return grpc.secure_channel(endpoint, tls.channel_credentials(),
                               options=peer_channel_options(target))


def _hello(channel: grpc.Channel, env) -> types_pb2.SignedEnvelope:
    call = channel.unary_unary("/eap.v1.Federation/Hello",
                               request_serializer=types_pb2.SignedEnvelope.SerializeToString,
                               response_deserializer=types_pb2.SignedEnvelope.FromString)
    return call(types_pb2.SignedEnvelope(**env.as_dict()), timeout=10)


def _pull(channel: grpc.Channel, node_id: str, cursor: int = 0) -> list[bytes]:
    call = channel.unary_stream("/eap.v1.Federation/PullBatches",
                                request_serializer=fed.PullBatchesRequest.SerializeToString,
                                response_deserializer=None)
    return list(call(fed.PullBatchesRequest(node_id=node_id, cursor=cursor), timeout=10))


def _hello_payload(keys: KeyRing, origin: str) -> bytes:
    return fed.HelloRequest(node_id=origin, protocol_versions=["eap.v1"],
                            capabilities=["batches.v1"]).SerializeToString()


def _peer_row(node, peer_id: str):
    with node.store.read() as conn:
        return conn.execute(select(t.peers).where(t.peers.c.node_id == peer_id)).first()


def _count(node, issuer: str | None = None) -> int:
    q = select(func.count()).select_from(t.peer_records)
    if issuer:
        q = q.where(t.peer_records.c.issuer == issuer)
    with node.store.read() as conn:
        return conn.execute(q).scalar_one()


def test_handshake_negotiates_and_both_sides_record_it(net):
    b = net[B]
    out = b.js("peer", "hello", A)
    assert out["status"] == "active" and out["protocol_version"] == "eap.v1"
    assert "batches.v1" in out["capabilities"]
    seen_by_a = {p["node_id"]: p for p in net[A].js("peer", "list")}
    assert seen_by_a[B]["status"] == "active" and seen_by_a[B]["last_hello_ms"]
    assert seen_by_a[B]["protocol_version"] == "eap.v1"


def test_sync_then_resume_after_more_issuance(net):
    a, b = net[A], net[B]
    first = a.issue_hours(24)
    assert first["bundles"] == 24
    out = b.js("sync", "--peer", A)
    assert out == [{"peer": A, "batches": 1, "records": 24, "wh": first["wh"], "cursor": 1,
                    "error": None}]
    assert b.js("sync", "--peer", A)[0]["batches"] == 0  # nothing new: nothing pulled
    second = a.issue_hours(10, start="2026-01-02 00:00:00")
    again = b.js("sync", "--peer", A)[0]
    assert (again["batches"], again["records"], again["cursor"]) == (1, 10, 2)
    assert _count(b.node, A) == 34
    # What b holds is exactly what a issued: same serial ranges, same attributes.
    with a.node.store.read() as conn:
        issued = [(x.serial_start, x.serial_end, x.device_id, x.zone)
                  for x in repos.all_bundles(conn)]
    with b.node.store.read() as conn:
        held = conn.execute(select(t.peer_records.c.serial_start, t.peer_records.c.serial_end,
                                   t.peer_records.c.device_id, t.peer_records.c.zone)
                            .order_by(t.peer_records.c.serial_start)).all()
    assert [tuple(r) for r in held] == [tuple(r) for r in issued]
    listed = {p["node_id"]: p for p in b.js("peer", "list")}
    assert listed[A]["cursor"] == 2 and listed[A]["records"] == 34
    assert listed[A]["wh"] == first["wh"] + second["wh"]


def test_background_worker_syncs_every_peer(net):
    a, b, c = net[A], net[B], net[C]
    a.issue_hours(3, start="2026-02-01 00:00:00")
    b.issue_hours(6)
    want = {A: a.node.status().wh_issued, B: b.node.status().wh_issued}

    def held() -> dict[str, int]:
        with c.node.store.read() as conn:
            rows = conn.execute(select(t.peer_batches.c.issuer, func.sum(t.peer_batches.c.wh))
                                .group_by(t.peer_batches.c.issuer)).all()
        return {issuer: int(wh) for issuer, wh in rows}

    deadline = time.monotonic() + 30
    while held() != want and time.monotonic() < deadline:
        time.sleep(0.2)
    assert held() == want  # c never ran `sync`: its serve process did
    assert _count(c.node, B) == 6


def test_unknown_peer_is_refused_and_changes_nothing(net, tmp_path):
    a = net[A]
    # A certificate from the federation's own CA, but d is on nobody's trust list.
    issue_node_cert(net.ca_dir, "d.example", tmp_path / "d-tls")
    d_keys = KeyRing.create(tmp_path / "d-keys")
    chan = _channel(tmp_path / "d-tls", A, a.endpoint)
    before = a.js("peer", "list")
    with pytest.raises(grpc.RpcError) as err:
        _pull(chan, "d.example")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    env = seal(d_keys, _hello_payload(d_keys, "d.example"), HELLO, "d.example", A)
    with pytest.raises(grpc.RpcError) as err:
        _hello(chan, env)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not on the trust list" in err.value.details()
    assert a.js("peer", "list") == before
    chan.close()


def test_envelope_attacks_are_refused_and_change_nothing(net):
    a, b, c = net[A], net[B], net[C]
    chan = _channel(b.tls_dir, A, a.endpoint)
    keys = b.node.keys
    payload = _hello_payload(keys, B)
    before = _peer_row(a.node, B)

    def refused(env) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as err:
            _hello(chan, env)
        return err.value.code()

    wrong_dest = seal(keys, payload, HELLO, B, C)
    assert refused(wrong_dest) == grpc.StatusCode.PERMISSION_DENIED
    expired = seal(keys, payload, HELLO, B, A, ttl_s=10, now=time.time() - 3600)
    assert refused(expired) == grpc.StatusCode.UNAUTHENTICATED
    good = seal(keys, payload, HELLO, B, A)
    forged = dataclasses.replace(good, signature=bytes([good.signature[0] ^ 1])
                                 + good.signature[1:])
    assert refused(forged) == grpc.StatusCode.UNAUTHENTICATED
    other_payload = dataclasses.replace(good, payload=payload + b"\x00")
    assert refused(other_payload) == grpc.StatusCode.UNAUTHENTICATED
    # c's genuine envelope, replayed over b's TLS connection: origin is not the TLS peer.
    from_c = seal(c.node.keys, _hello_payload(c.node.keys, C), HELLO, C, A)
    assert refused(from_c) == grpc.StatusCode.PERMISSION_DENIED
    assert _peer_row(a.node, B) == before  # nothing recorded for any refused call
    # The genuine envelope works once; the same bytes again are a replay.
    answer = _hello(chan, good)
    assert answer.origin == A and answer.destination == B
    assert refused(good) == grpc.StatusCode.UNAUTHENTICATED
    # PullBatches in someone else's name.
    with pytest.raises(grpc.RpcError) as err:
        _pull(chan, C)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    chan.close()
    assert "refused Federation/Hello" in a.log()


def test_removed_peer_is_refused_then_readded_by_fingerprint(net):
    a, c = net[A], net[C]
    a.cli("peer", "remove", C)
    time.sleep(1.2)  # the server re-reads the trust list at most every trust_cache_s
    proc = c.cli("peer", "hello", A, ok=False)
    assert proc.returncode == 8 and "PERMISSION_DENIED" in proc.stderr  # PermissionDenied
    # Re-add c by endpoint and key fingerprint only: pending until c proves that key.
    fpr = describe(c.node).signer_fingerprint()
    pending = a.js("peer", "add", "--node-id", C, "--endpoint", c.endpoint, "--fingerprint", fpr)
    assert pending["status"] == "pending" and pending["key_ids"] == []
    time.sleep(1.2)
    assert c.js("peer", "hello", A)["status"] == "active"
    row = {p["node_id"]: p for p in a.js("peer", "list")}[C]
    assert row["status"] == "active" and row["key_ids"] == [c.node.keys.active_key_id]
