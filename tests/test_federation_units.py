"""Federation building blocks in one process: descriptors, trust list, limits, retries, bulk path.

The transport pieces run over real gRPC mutual TLS on 127.0.0.1 (an in-process server), the
rest without a network.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import grpc
import numpy as np
import pytest
from fednet import FedNet

from eap.node.crypto import KeyRing
from eap.node.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from eap.node.federation.auth import RateLimiter, describe_caller
from eap.node.federation.client import PeerClient, backoff_delays
from eap.node.federation.descriptor import (
    DESCRIPTOR_DOMAIN,
    NodeDescriptor,
    canonical_json,
    describe,
)
from eap.node.federation.peers import ACTIVE, PENDING, TRUSTED, TrustList
from eap.node.federation.server import _log_refusal, build_server, negotiate
from eap.node.federation.settings import FederationSettings
from eap.node.federation.testing import craft_columns, descriptor_for
from eap.node.store import peer_repos
from eap.node.store import schema as t


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two node homes (a, b) that trust each other; no processes."""
    net = FedNet(tmp_path_factory.mktemp("pair"), [("a.example", "CO-ANT"), ("b.example", "ES")])
    net.connect_all()
    yield net
    net.stop_all()


# -- descriptors ---------------------------------------------------------------------------------


def test_descriptor_round_trip_and_canonical_bytes(pair):
    a = pair["a.example"].node
    desc = describe(a)
    again = NodeDescriptor.from_json(desc.to_json())
    assert again == desc
    assert desc.endpoint == pair["a.example"].endpoint
    assert desc.protocol_versions == ("eap.v1",) and "batches.v1" in desc.capabilities
    assert desc.tls_ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert desc.signer_fingerprint() == a.keys.fingerprint()
    # The signed bytes: domain tag + sorted, compact, ASCII JSON of everything but the signature.
    body = json.loads(desc.to_json())
    del body["signature"]
    assert desc.signing_input() == DESCRIPTOR_DOMAIN + canonical_json(body)
    assert b'": ' not in canonical_json(body) and b', "' not in canonical_json(body)


@pytest.mark.parametrize("field,value", [
    ("endpoint", "evil.example:1"), ("node_id", "c.example"), ("max_batch_records", 7),
    ("capabilities", ["batches.v1", "admin.v1"]),
])
def test_descriptor_tampering_breaks_the_signature(pair, field, value):
    doc = json.loads(describe(pair["a.example"].node).to_json())
    doc[field] = value
    with pytest.raises(Unauthenticated):
        NodeDescriptor.from_json(json.dumps(doc))


def test_descriptor_must_be_signed_by_its_active_key(pair, tmp_path):
    ring = KeyRing.create(tmp_path / "k")
    desc = descriptor_for("x.example", ring, "127.0.0.1:9")
    doc = json.loads(desc.to_json())
    ring.rotate()  # the old key is now retired in the ring, but signed the document above
    rotated = descriptor_for("x.example", ring, "127.0.0.1:9")
    doc["public_keys"] = json.loads(rotated.to_json())["public_keys"]
    with pytest.raises(Unauthenticated, match="not by its active key"):
        NodeDescriptor.from_json(json.dumps(doc))
    with pytest.raises(InvalidArgument):
        NodeDescriptor.from_json("[1, 2]")
    with pytest.raises(Unauthenticated, match="not signed"):
        NodeDescriptor.from_json(json.dumps({**doc, "signature": None}))


# -- trust list ----------------------------------------------------------------------------------


def test_trust_list_add_by_descriptor_checks_the_fingerprint(tmp_path):
    net = FedNet(tmp_path, [("a.example", "CO-ANT"), ("b.example", "ES")])
    try:
        a, b = net["a.example"].node, net["b.example"].node
        trust = TrustList(a.store, a.node_id, cache_s=0)
        desc = describe(b)
        wrong = KeyRing.create(tmp_path / "other").fingerprint()
        with pytest.raises(Unauthenticated, match="fingerprint"):
            trust.add_descriptor(desc, fingerprint=wrong)
        assert trust.all() == []
        peer = trust.add_descriptor(desc, fingerprint=b.keys.fingerprint())
        assert peer.status == TRUSTED and set(peer.keys) == {b.keys.active_key_id}
        assert trust.peer_keys.knows("b.example")
        with pytest.raises(AlreadyExists):
            trust.add_descriptor(desc)
        with pytest.raises(InvalidArgument):
            trust.add_descriptor(describe(a))  # itself
        updated = trust.add_descriptor(desc, update=True, endpoint="127.0.0.1:4444")
        assert updated.endpoint == "127.0.0.1:4444" and updated.cursor == 0
        trust.remove("b.example")
        assert not trust.peer_keys.knows("b.example")
        with pytest.raises(NotFound):
            trust.remove("b.example")
        with pytest.raises(InvalidArgument):
            trust.add_pinned("b.example", "127.0.0.1:1", "SHA256:short")
        pinned = trust.add_pinned("b.example", "127.0.0.1:1", b.keys.fingerprint())
        assert pinned.status == PENDING and not pinned.keys
        assert not trust.peer_keys.knows("b.example")  # pending: no key to verify with yet
    finally:
        net.stop_all()


def test_key_update_rule(tmp_path):
    """A Hello's descriptor replaces the keys only when signed by a key already trusted."""
    net = FedNet(tmp_path, [("a.example", "CO-ANT")])
    try:
        a = net["a.example"].node
        trust = TrustList(a.store, a.node_id, cache_s=0)
        ring = KeyRing.create(tmp_path / "x")
        first = descriptor_for("x.example", ring, "127.0.0.1:9")
        peer = trust.add_descriptor(first)
        moved = descriptor_for("x.example", ring, "127.0.0.1:10")  # same (trusted) key
        peer = trust.record_hello(peer, version="eap.v1", capabilities=("batches.v1",),
                                  descriptor=moved.to_json().encode())
        assert peer.status == ACTIVE and peer.protocol_version == "eap.v1"
        assert json.loads(peer.descriptor)["endpoint"] == "127.0.0.1:10"
        assert peer.endpoint == "127.0.0.1:9"  # where to reach a peer is the operator's call
        old_key = ring.active_key_id
        ring.rotate()  # new key: its descriptor is signed by a key we never trusted
        rotated = descriptor_for("x.example", ring, "127.0.0.1:11")
        peer = trust.record_hello(peer, version="eap.v1", capabilities=("batches.v1",),
                                  descriptor=rotated.to_json().encode())
        assert set(peer.keys) == {old_key}
        assert "untrusted key" in peer.last_error
        # The operator re-adds the new descriptor: now it is trusted.
        peer = trust.add_descriptor(rotated, update=True)
        assert ring.active_key_id in peer.keys and peer.status == ACTIVE
    finally:
        net.stop_all()


# -- limits, negotiation, retries ---------------------------------------------------------------


def test_rate_limiter_token_bucket():
    now = [100.0]
    rl = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        rl.take("b")
    with pytest.raises(ResourceExhausted) as err:
        rl.take("b")
    assert err.value.retry_after == pytest.approx(0.5)
    rl.take("c")  # buckets are per peer
    now[0] += 0.5
    rl.take("b")


def test_negotiation_picks_the_highest_common_version():
    assert negotiate(["eap.v1", "eap.v9"]) == "eap.v1"
    with pytest.raises(FailedPrecondition, match="no common protocol version"):
        negotiate(["eap.v2"])


def test_backoff_is_bounded_full_jitter():
    import random

    delays = list(backoff_delays(6, 0.1, 1.0, random.Random(7)))
    assert len(delays) == 5
    assert all(0 <= d <= min(1.0, 0.1 * 2**i) for i, d in enumerate(delays))


# -- transport over real mutual TLS, in process ---------------------------------------------------


class FlakyTransfers:
    """A transfer handler stand-in: UNAVAILABLE ``fail`` times, then echoes the payload."""

    payload_types = {"on_prepare": "eap.v1.TransferPrepare"}

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.seen: list = []

    def on_prepare(self, env):
        self.seen.append(env)
        if self.fail:
            self.fail -= 1
            raise Unavailable("busy")
        return "eap.v1.TransferStatus", b"ok:" + env.payload

    on_decision = on_status = on_prepare


@pytest.fixture
def served(pair):
    a, b = pair["a.example"].node, pair["b.example"].node
    settings = FederationSettings.load(a.config)
    server, port, servicer = build_server(a, settings=settings, listen="127.0.0.1:0")
    server.start()
    trust = TrustList(b.store, b.node_id, cache_s=0)
    peer = trust.lookup("a.example")
    trust.add_descriptor(NodeDescriptor.from_json(peer.descriptor), update=True,
                         endpoint=f"127.0.0.1:{port}")
    sleeps: list[float] = []
    client = PeerClient(b, trust=trust, sleep=sleeps.append)
    yield servicer, client, sleeps
    client.close()
    server.stop(0).wait()


def test_call_retries_unavailable_with_backoff_then_verifies_the_answer(served):
    servicer, client, sleeps = served
    servicer.set_transfers(FlakyTransfers(fail=2))
    ptype, payload = client.call("a.example", "PrepareTransfer", "eap.v1.TransferPrepare",
                                 b"xfer-1", timeout=5)
    assert (ptype, payload) == ("eap.v1.TransferStatus", b"ok:xfer-1")
    assert len(sleeps) == 2 and all(0 <= s <= 2.0 for s in sleeps)
    seen = servicer.transfers.seen
    assert [e.origin for e in seen] == ["b.example"] * 3
    assert len({e.nonce for e in seen}) == 3  # every attempt is a freshly sealed envelope
    servicer.set_transfers(FlakyTransfers(fail=10))
    with pytest.raises(Unavailable):
        client.call("a.example", "PrepareTransfer", "eap.v1.TransferPrepare", b"x",
                    timeout=5, attempts=3)
    with pytest.raises(InvalidArgument, match="payload_type"):
        client.call("a.example", "PrepareTransfer", "eap.v1.Other", b"x", timeout=5)


def test_transfer_rpcs_unimplemented_without_a_handler(served):
    servicer, client, _ = served
    servicer.set_transfers(None)
    with pytest.raises(FailedPrecondition) as err:
        client.call("a.example", "DecideTransfer", "eap.v1.TransferDecision", b"x", timeout=5)
    assert err.value.grpc_code == grpc.StatusCode.UNIMPLEMENTED


def test_refusals_are_logged_with_the_callers_node_id(served, caplog):
    servicer, client, _ = served
    servicer.set_transfers(None)
    caplog.set_level(logging.INFO, logger="eap.node.federation.server")
    with pytest.raises(FailedPrecondition):
        client.call("a.example", "DecideTransfer", "eap.v1.TransferDecision", b"x", timeout=5)
    refusals = [r.getMessage() for r in caplog.records if "refused Federation/" in r.getMessage()]
    assert refusals, caplog.text
    assert refusals[-1].startswith("refused Federation/DecideTransfer from node b.example (")
    assert "127.0.0.1" in refusals[-1] and "UNIMPLEMENTED" in refusals[-1]


class _Context:
    """A servicer context stand-in: a socket address and a TLS auth context."""

    def __init__(self, auth: dict) -> None:
        self._auth = auth

    def peer(self) -> str:
        return "ipv4:10.0.0.9:51234"

    def auth_context(self) -> dict:
        return self._auth


def test_refusal_log_names_an_untrusted_node_or_says_the_id_is_unknown(caplog):
    caplog.set_level(logging.INFO, logger="eap.node.federation.server")
    # A certificate from the federation CA naming a node not on the trust list: named.
    cert = _Context({"transport_security_type": [b"ssl"], "x509_common_name": [b"x.example"],
                     "x509_subject_alternative_name": [b"x.example"]})
    assert describe_caller(cert) == "node x.example (ipv4:10.0.0.9:51234)"
    _log_refusal("Hello", cert, PermissionDenied("x.example is not a trusted peer"))
    # No client certificate: only the address is known, and the log says so.
    for auth in ({}, {"transport_security_type": [b"ssl"]}):
        who = describe_caller(_Context(auth))
        assert who.startswith("unauthenticated ipv4:10.0.0.9:51234 (node id unknown: ")
        _log_refusal("PullBatches", _Context(auth), Unauthenticated("no client certificate"))
    assert describe_caller(object()).startswith("unauthenticated unknown address (node id")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("refused Federation/Hello from node x.example (ipv4:10.0.0.9:51234): "
                        "PERMISSION_DENIED x.example is not a trusted peer")
    assert all(line.startswith("refused Federation/PullBatches from unauthenticated "
                               "ipv4:10.0.0.9:51234 (node id unknown: ") for line in lines[1:])
    assert "UNAUTHENTICATED" in lines[1]


def test_hello_to_a_pinned_peer_learns_and_checks_its_keys(served, tmp_path):
    servicer, client, _ = served
    trust = client.trust
    a_fpr = servicer.node.keys.fingerprint()
    endpoint = trust.lookup("a.example").endpoint
    trust.remove("a.example")
    trust.add_pinned("a.example", endpoint, KeyRing.create(tmp_path / "k").fingerprint())
    with pytest.raises(Unauthenticated, match="pinned"):
        client.hello("a.example")  # a's descriptor is signed by another key than the pin
    assert trust.lookup("a.example").status == PENDING
    trust.remove("a.example")
    trust.add_pinned("a.example", endpoint, a_fpr)
    peer = client.hello("a.example")
    assert peer.status == ACTIVE and set(peer.keys) == {servicer.node.keys.active_key_id}
    assert peer.fingerprint == a_fpr


def test_rate_limit_over_the_wire_carries_retry_info(served):
    servicer, client, _ = served
    servicer.auth.limiter = RateLimiter(rate=0.5, burst=2)
    client.hello("a.example")
    client.hello("a.example")
    with pytest.raises(ResourceExhausted) as err:
        client.hello("a.example")
    assert err.value.retry_after and 0 < err.value.retry_after <= 2


# -- the bulk path ---------------------------------------------------------------------------------


def _prepared(n: int):
    cols = craft_columns(n, devices=7, serial_start=10)
    a = cols.arrays
    numbers = {k: a[k] for k in ("serial_start", "serial_end", "interval_start", "interval_end",
                                 "source", "technology", "renewable_ppm", "carbon_mg")}
    numbers["batch_seq"] = np.full(n, 3, np.int64)
    devices = [f"dev_{'x' * k}" for k in range(7)]  # rows of several lengths
    strings = {"issuer": (np.zeros(n, np.int32), ["x.example"]),
               "device_id": (a["device"], devices), "zone": (a["zone"], ["ES-ÑÖ"]),
               "owner": (a["owner"], cols.owners)}
    return numbers, strings


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_bulk_path_writes_exactly_the_columns(db, request, tmp_path: Path):
    from eap.node.store import open_store

    url = f"sqlite:///{tmp_path / 'x.db'}" if db == "sqlite" else request.getfixturevalue("pg_url")
    store = open_store(url)
    numbers, strings = _prepared(1000)
    with store.transaction() as conn:
        assert peer_repos.insert_peer_records(conn, 1000, numbers, strings) == 1000
    with store.read() as conn:
        rows = conn.execute(t.peer_records.select().order_by(t.peer_records.c.serial_start)).all()
    store.dispose()
    assert len(rows) == 1000
    first = rows[0]._mapping
    assert first["issuer"] == "x.example" and first["zone"] == "ES-ÑÖ"
    assert first["serial_start"] == 10 and first["batch_seq"] == 3
    assert [r.serial_end for r in rows] == numbers["serial_end"].tolist()
    assert [r.device_id for r in rows] == [strings["device_id"][1][i]
                                           for i in strings["device_id"][0]]
    assert {r.renewable_ppm for r in rows} == {1_000_000}


def test_pgcopy_layout():
    numbers, strings = _prepared(2)
    data = peer_repos.pgcopy_binary(2, numbers, strings)
    assert data.startswith(b"PGCOPY\n\xff\r\n\x00") and data.endswith(b"\xff\xff")
    row = data[19:]
    assert row[:2] == (13).to_bytes(2, "big")
    assert [name for name, _ in peer_repos.COPY_ORDER][:2] == ["serial_start", "serial_end"]
    assert base64.b16encode(row[2:14]) == b"00000008000000000000000A"  # serial_start = 10
    fixed = 2 + 9 * 4 + 5 * 8 + 2 * 2 + 2 * 4  # then the text columns, issuer first
    assert row[fixed:fixed + 4] == (9).to_bytes(4, "big") and row[fixed + 4:fixed + 13] == \
        b"x.example"
