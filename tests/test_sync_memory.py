"""Peer sync holds a few batches, never the peer's history.

One source node serves its signed batches from its own ``FederationRuntime`` on a real loopback
socket (mutual TLS from the demo CA, homes and trust exactly as :class:`fednet.FedNet` builds
them); fresh nodes sync its history from cursor 0 with ``Syncer.sync_peer``, as ``eap-node
sync`` does, once for a history of N records and once for 8N.  Both sides run in this process
under ``tracemalloc``, so the peak covers the syncing node (stream, verify, lay out, write) and
the serving one (page of ``batches`` rows, gRPC send): if either held the whole history, the
peak for 8N would be about eight times the history's bytes larger.

The source's history is crafted (``eap.node.federation.testing.craft_batches``), signed by the
source's own key ring and stored in its ``batches`` table: the bytes a node stores at issuance
and serves unparsed.
"""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import Iterator

import pytest
from fednet import FedNet

from eap.node.batches import from_proto
from eap.node.federation.client import PeerClient
from eap.node.federation.runtime import FederationRuntime
from eap.node.federation.sync import Syncer
from eap.node.federation.testing import craft_batches
from eap.node.store import peer_repos, repos
from eap.v1 import types_pb2

SRC, SMALL, LARGE = "src.example", "small.example", "large.example"
#: Bytes the peak may grow by beyond doubling: allocator and cache noise, not history.
SLACK = 512 * 1024


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sync_dbs(request) -> Iterator[dict[str, str]]:
    """Databases of the two syncing nodes (the source stays on SQLite)."""
    if request.param == "sqlite":
        yield {}
        return
    import psycopg

    admin = request.getfixturevalue("pg_server")
    names = [f"eap_test_{uuid.uuid4().hex[:12]}" for _ in (SMALL, LARGE)]
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    yield {SMALL: f"{base}/{names[0]}", LARGE: f"{base}/{names[1]}"}
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Federation:
    """The source node serving from its own ``FederationRuntime``, and two fresh nodes that
    sync from it (the first a small history, the second a large one)."""

    def __init__(self, root, db_urls: dict[str, str]) -> None:
        self.net = FedNet(root, [(SRC, "ES"), (SMALL, "NL"), (LARGE, "NL")], db_urls=db_urls)
        for peer in (SMALL, LARGE):
            self.net.connect(SRC, peer)
        self.source = self.net[SRC].node
        self.runtime = FederationRuntime(self.source, listen=self.net[SRC].endpoint)
        self.runtime.start()
        self.stored = 0  # batches in the source's history
        self.next_serial = 1
        self.records = 0
        self.history_bytes = 0

    def grow(self, batches: int, per_batch: int) -> None:
        """Append ``batches`` signed batches of ``per_batch`` records to the source's history."""
        raws = craft_batches(self.source.keys, SRC, batches, per_batch,
                             first_seq=self.stored + 1, first_serial=self.next_serial,
                             devices=50)
        last = from_proto(types_pb2.RecordBatch.FromString(raws[-1]))
        self.next_serial = int(last.arrays["serial_end"].max())
        with self.source.store.transaction() as conn:
            for raw in raws:
                m = types_pb2.RecordBatch.FromString(raw)
                repos.insert_batch(conn, seq=m.seq, count=m.count, wh=0,
                                   merkle_root=m.merkle_root, key_id=m.key_id, payload=raw,
                                   created_at_ms=m.created_at_ms)
        self.stored += batches
        self.records += batches * per_batch
        self.history_bytes += sum(map(len, raws))

    def synced_peak(self, node_id: str) -> tuple[int, int]:
        """Sync the whole history into ``node_id`` from cursor 0: (records held, peak traced
        bytes while syncing all but the first batch)."""
        node = self.net[node_id].node
        with PeerClient(node) as client:
            client.hello(SRC)  # channel and handshake before measuring
            syncer = Syncer(node, client)
            # First-use costs (compiled statements, the driver's type caches) before measuring.
            assert syncer.sync_peer(SRC, max_batches=1).batches == 1
            tracemalloc.start()
            try:
                result = syncer.sync_peer(SRC)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert result.ok, result.error
        assert result.batches == self.stored - 1
        with node.store.read() as conn:
            records = peer_repos.count_peer_records(conn, SRC)
        assert records == self.records
        return records, peak

    def close(self) -> None:
        self.runtime.stop(grace=0.5)
        self.net.stop_all()


@pytest.fixture
def federation(tmp_path, sync_dbs):
    fed = Federation(tmp_path, sync_dbs)
    yield fed
    fed.close()


def _assert_flat(fed: Federation, per_batch: int, batches: int, factor: int) -> None:
    fed.grow(batches, per_batch)
    n1, peak1 = fed.synced_peak(SMALL)
    fed.grow(batches * (factor - 1), per_batch)
    n8, peak8 = fed.synced_peak(LARGE)
    assert (n1, n8) == (batches * per_batch, factor * batches * per_batch)
    # ``factor`` times the records, about the same peak: a few batches are held, never the history.
    assert peak8 < 2 * peak1 + SLACK, (peak1, peak8, fed.history_bytes)
    # And the bound is meaningful: the large history (its wire bytes alone) exceeds it.
    assert fed.history_bytes > 2 * peak1 + SLACK, (fed.history_bytes, peak1)


def test_sync_memory_does_not_grow_with_the_peers_history(federation):
    _assert_flat(federation, per_batch=250, batches=32, factor=8)


@pytest.mark.slow
def test_sync_memory_flat_over_a_million_records(federation):
    """16 times the history, larger batches: 1,024,000 records pulled over 8 pulls of 64."""
    _assert_flat(federation, per_batch=2000, batches=32, factor=16)
