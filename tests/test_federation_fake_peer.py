"""A scripted fake peer (Complement-style, in this process) serves crafted batches to one real
node; every bad batch is refused with a clear reason and changes nothing, and sync resumes.

The real node's side runs as ``eap-node sync`` processes (exit code and message) and, for the
many cases, through the same :class:`~eap.node.federation.sync.Syncer` in-process.
"""

from __future__ import annotations

import numpy as np
import pytest
from fednet import FedNet
from sqlalchemy import func, select

from eap.node import batches
from eap.node.crypto import KeyRing, issue_node_cert
from eap.node.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from eap.node.federation.client import PeerClient
from eap.node.federation.peers import TrustList
from eap.node.federation.sync import Syncer
from eap.node.federation.testing import HOUR, FakePeer, craft_columns, sign_batch
from eap.node.store import schema as t
from eap.v1 import types_pb2

FAKE = "fake.example"
REAL = "real.example"


@pytest.fixture
def world(tmp_path, db_url):
    """The real node (on SQLite, and on PostgreSQL: the COPY path) and a fake peer it trusts."""
    net = FedNet(tmp_path, [(REAL, "ES")], db_urls={REAL: db_url})
    real = net[REAL]
    issue_node_cert(net.ca_dir, FAKE, tmp_path / "fake-tls")
    fake = FakePeer(FAKE, KeyRing.create(tmp_path / "fake-keys"), tmp_path / "fake-tls")
    fake.trusted.set_peer(REAL, real.node.keys.public_keys())
    fake.start()
    desc = fake.descriptor()
    TrustList(real.node.store, REAL).add_descriptor(desc, fingerprint=desc.signer_fingerprint())
    yield real, fake
    fake.stop()
    net.stop_all()


def _state(node) -> tuple:
    with node.store.read() as conn:
        records = conn.execute(select(func.count()).select_from(t.peer_records)).scalar_one()
        heads = conn.execute(select(func.count()).select_from(t.peer_batches)).scalar_one()
        cursor = conn.execute(select(t.peers.c.cursor).where(t.peers.c.node_id == FAKE)
                              ).scalar_one()
    return records, heads, cursor


def _sync(node):
    with PeerClient(node) as client:
        return Syncer(node, client).sync_peer(FAKE)


def _good(fake: FakePeer, seq: int, serial: int = 1, n: int = 100) -> types_pb2.RecordBatch:
    cols = craft_columns(n, serial_start=serial, devices=10, t0=1_767_225_600 + seq * 100 * HOUR)
    return sign_batch(fake.keyring, FAKE, seq, cols)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def test_tampered_column_is_refused_by_the_real_node_process(world):
    real, fake = world
    msg = _good(fake, 1)
    msg.serial_end = _flip(msg.serial_end, 8 * 50)  # one record's Wh changed in transit
    fake.batches = [msg.SerializeToString()]
    proc = real.cli("sync", "--peer", FAKE, ok=False)
    assert proc.returncode == Unauthenticated.exit_code
    assert "Merkle root" in proc.stdout + proc.stderr
    assert _state(real.node) == (0, 0, 0)
    listed = {p["node_id"]: p for p in real.js("peer", "list")}
    assert "Merkle root" in listed[FAKE]["last_error"]
    fake.batches = [_good(fake, 1).SerializeToString()]  # the genuine batch: accepted
    out = real.js("sync", "--peer", FAKE)
    assert out[0]["batches"] == 1 and out[0]["records"] == 100
    assert _state(real.node) == (100, 1, 1)


def _bad_batches(fake: FakePeer) -> dict[str, tuple[bytes, type, str]]:
    root_flipped = _good(fake, 1)
    root_flipped.merkle_root = _flip(root_flipped.merkle_root, 0)
    sig_flipped = _good(fake, 1)
    sig_flipped.signature = _flip(sig_flipped.signature, 3)

    long_hour = craft_columns(100, devices=10)
    long_hour.arrays["interval_end"][7] += HOUR  # a record of two hours, properly signed
    overlap = craft_columns(100, devices=10)
    overlap.arrays["serial_start"][5] = overlap.arrays["serial_start"][4]
    too_many_ppm = craft_columns(100, devices=10)
    too_many_ppm.arrays["renewable_ppm"][0] = 1_000_001

    other_issuer = _good(fake, 1)
    other_issuer.issuer = "a.example"
    _, sig = fake.keyring.sign(batches.header_bytes("a.example", 1, 100,
                                                         other_issuer.merkle_root))
    other_issuer.signature = sig
    bad_zone = craft_columns(100, devices=10, zone="nowhere")
    return {
        "merkle root flipped": (root_flipped.SerializeToString(), Unauthenticated, "signature"),
        "signature flipped": (sig_flipped.SerializeToString(), Unauthenticated, "signature"),
        "record > 1 h": (sign_batch(fake.keyring, FAKE, 1, long_hour).SerializeToString(),
                         InvalidArgument, "INTERVAL_TOO_LONG"),
        "overlapping serials": (sign_batch(fake.keyring, FAKE, 1, overlap).SerializeToString(),
                                InvalidArgument, "SERIAL_OVERLAP"),
        "renewable share > 1": (sign_batch(fake.keyring, FAKE, 1, too_many_ppm)
                                .SerializeToString(), InvalidArgument, "RENEWABLE"),
        "another node's batch": (other_issuer.SerializeToString(), PermissionDenied,
                                 "served by"),
        "sequence gap": (_good(fake, 2).SerializeToString(), FailedPrecondition, "expected seq"),
        "bad zone string": (sign_batch(fake.keyring, FAKE, 1, bad_zone).SerializeToString(),
                            InvalidArgument, "grid zone"),
        "not a batch": (b"\xff\xff\xff", InvalidArgument, "RecordBatch"),
    }


def test_every_bad_batch_is_refused_and_changes_nothing(world):
    real, fake = world
    for name, (raw, error, words) in _bad_batches(fake).items():
        fake.batches = [raw]
        result = _sync(real.node)
        assert isinstance(result.error, error), (name, result.error)
        assert words in str(result.error), (name, str(result.error))
        assert result.batches == 0, name
        assert _state(real.node) == (0, 0, 0), name


def test_sync_stops_at_a_bad_batch_and_resumes_there(world):
    real, fake = world
    one = _good(fake, 1, serial=1)
    end1 = int(np.frombuffer(one.serial_end, "<i8").max())
    two = _good(fake, 2, serial=end1)
    broken_two = types_pb2.RecordBatch()
    broken_two.CopyFrom(two)
    broken_two.carbon_mg = _flip(broken_two.carbon_mg, 0)
    three = _good(fake, 3, serial=int(np.frombuffer(two.serial_end, "<i8").max()))
    fake.batches = [one.SerializeToString(), broken_two.SerializeToString(),
                    three.SerializeToString()]
    result = _sync(real.node)
    assert (result.batches, result.cursor) == (1, 1)
    assert isinstance(result.error, Unauthenticated)
    assert _state(real.node) == (100, 1, 1)
    fake.batches[1] = two.SerializeToString()
    result = _sync(real.node)
    assert result.ok and (result.batches, result.cursor) == (2, 3)
    assert _state(real.node) == (300, 3, 3)
    # A later batch reusing serials of an earlier one is refused (a serial is issued once).
    again = _good(fake, 4, serial=end1 - 10)
    fake.batches.append(again.SerializeToString())
    result = _sync(real.node)
    assert isinstance(result.error, InvalidArgument) and "overlap batch" in str(result.error)
    assert _state(real.node) == (300, 3, 3)


def test_a_peer_with_no_common_version_is_refused(world):
    real, fake = world
    fake.versions = ("eap.v7",)
    proc = real.cli("peer", "hello", FAKE, ok=False)
    assert proc.returncode == FailedPrecondition.exit_code
    assert "FAILED_PRECONDITION" in proc.stderr


def test_sync_killed_mid_stream_resumes_without_loss_or_duplicates(world):
    """SIGKILL the importing process between batches: each batch is one transaction, so the
    next sync starts at the last committed batch and ends with every record exactly once."""
    import subprocess
    import sys
    import time

    real, fake = world
    serial, raws = 1, []
    for seq in range(1, 7):
        msg = _good(fake, seq, serial=serial)
        serial = int(np.frombuffer(msg.serial_end, "<i8").max())
        raws.append(msg.SerializeToString())
    fake.batches, fake.delay_s = raws, 0.4
    proc = subprocess.Popen([sys.executable, "-m", "eap.node", "sync", "--peer", FAKE,
                             "--home", str(real.home)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while _state(real.node)[2] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    records, heads, cursor = _state(real.node)
    assert 2 <= cursor < 6 and (records, heads) == (100 * cursor, cursor)
    fake.delay_s = 0
    out = real.js("sync", "--peer", FAKE)
    assert out[0]["batches"] == 6 - cursor and out[0]["cursor"] == 6
    assert _state(real.node) == (600, 6, 6)
    with real.node.store.read() as conn:
        distinct = conn.execute(select(func.count(func.distinct(t.peer_records.c.serial_start)))
                                ).scalar_one()
    assert distinct == 600
