"""Batch sync: pull each peer's signed record batches by cursor and import them read-only.

For every batch streamed by a peer (``PullBatches``), :class:`BatchImporter` checks, in order:

1. it parses, and ``issuer`` is the peer it came from                   (PermissionDenied)
2. ``seq`` is exactly the peer's cursor + 1                              (FailedPrecondition)
3. ``0 < count <= max_batch_records``, columns and dictionaries well formed (InvalidArgument)
4. the Ed25519 signature over ``batches.header_bytes(issuer, seq, count, root)`` by a current
   key of that peer                                                     (Unauthenticated)
5. the Merkle root recomputed from the columns (``_core`` leaf hashes) equals the signed one
                                                                        (Unauthenticated)
6. the record rules (``kernels.validate``: intervals, enums, bounds, overlaps; capacity is
   unknown for a peer's device, so the physical bound of 1 TW is used; metered Wh unchecked)
   and bounded dictionary strings                                       (InvalidArgument)
7. its serial numbers start at or after the end of the peer's previous batch (a serial range
   is issued once)                                                      (InvalidArgument)

then writes its records into ``peer_records``, its header into ``peer_batches`` and moves the
peer's cursor, in one transaction through the bulk path.  On PostgreSQL that transaction
commits asynchronously (``synchronous_commit = off``): an import lost in an OS crash is lost
together with its cursor move, so the next sync simply pulls it again.

A batch failing any check is logged with the reason, recorded in the peer's ``last_error``
and changes nothing; the sync of that peer stops there and resumes from the same cursor next
time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from eap.node import batches, kernels
from eap.node.crypto import PeerKeys
from eap.node.crypto.keys import now_ms
from eap.node.domain.rules import MAX_CAPACITY_W, ZONE_RE
from eap.node.errors import (
    Aborted,
    EapError,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    invalid,
)
from eap.node.federation.client import PeerClient
from eap.node.federation.peers import ACTIVE, TrustList
from eap.node.store import peer_repos
from eap.node.telemetry.ops import traced
from eap.v1 import types_pb2

log = logging.getLogger(__name__)

MAX_DEVICE_LEN = 64
MAX_OWNER_LEN = 200


@dataclass
class VerifiedBatch:
    """A peer batch that passed every check, ready to persist."""

    issuer: str
    seq: int
    count: int
    wh: int
    serial_lo: int
    serial_hi: int
    root: bytes
    key_id: str
    signature: bytes
    created_at_ms: int
    cols: batches.Columns
    #: The records laid out for the database's bulk path (:meth:`BatchImporter.prepare`).
    prepared: peer_repos.PreparedRows | None = None


@dataclass
class SyncResult:
    """What one sync of one peer did."""

    peer: str
    batches: int = 0
    records: int = 0
    wh: int = 0
    cursor: int = 0
    error: EapError | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "batches": self.batches, "records": self.records,
                "wh": self.wh, "cursor": self.cursor,
                "error": str(self.error) if self.error else None}


class BatchImporter:
    """Verifies and persists peers' batches (see the module docstring)."""

    def __init__(self, node: Any, trust: TrustList, *, max_batch_records: int | None = None):
        self.node = node
        self.trust = trust
        self.max_batch_records = int(max_batch_records or node.config.max_batch_records)

    def verify(self, peer_id: str, raw: bytes, expect_seq: int, *,
               keys: PeerKeys | None = None) -> VerifiedBatch:
        """Checks 1-6 of the module docstring (check 7 needs the database: :meth:`persist`).

        ``keys`` defaults to the trust list's current peer keys.
        """
        try:
            msg = types_pb2.RecordBatch.FromString(raw)
        except DecodeError as exc:
            raise invalid("batch", "not a RecordBatch", "malformed batch") from exc
        where = f"batch {msg.issuer}#{msg.seq}"
        if msg.issuer != peer_id:
            raise PermissionDenied(f"{where}: issued by {msg.issuer!r}, served by {peer_id!r}; "
                                   "a peer serves only its own batches")
        if msg.seq != expect_seq:
            raise FailedPrecondition(f"{where}: expected seq {expect_seq} (cursor + 1)")
        if not 0 < msg.count <= self.max_batch_records:
            raise invalid("batch.count", f"must be 1..{self.max_batch_records}", where)
        header = batches.header_bytes(msg.issuer, msg.seq, msg.count, msg.merkle_root)
        try:
            (keys or self.trust.peer_keys).verify(peer_id, msg.key_id, header, msg.signature)
        except Unauthenticated as exc:
            raise Unauthenticated(f"{where}: {exc.message}") from exc
        try:
            cols = batches.from_proto(msg)
        except ValueError as exc:
            raise invalid("batch.columns", str(exc), where) from exc
        root = kernels.merkle_root(cols.leaf_hashes())
        if bytes(root) != msg.merkle_root:
            raise Unauthenticated(f"{where}: Merkle root of the records does not match the "
                                  "signed root (tampered in transit or at rest)")
        _check_dictionaries(cols, where)
        arrays = cols.arrays
        n = len(cols)
        codes = kernels.validate(arrays, capacity_w=np.full(n, MAX_CAPACITY_W, np.int64),
                                 metered_wh=None)
        kernels.raise_for_codes(codes, f"{where} breaks the record rules", field="records")
        wh = arrays["serial_end"] - arrays["serial_start"]
        return VerifiedBatch(
            issuer=msg.issuer, seq=msg.seq, count=n, wh=int(wh.sum()),
            serial_lo=int(arrays["serial_start"].min()), serial_hi=int(arrays["serial_end"].max()),
            root=bytes(msg.merkle_root), key_id=msg.key_id, signature=bytes(msg.signature),
            created_at_ms=int(msg.created_at_ms), cols=cols)

    def prepare(self, vb: VerifiedBatch) -> VerifiedBatch:
        """Lay the records out for the bulk path (CPU only; may run ahead of :meth:`persist`)."""
        a, n = vb.cols.arrays, vb.count
        vb.prepared = peer_repos.prepare_peer_records(
            self.node.store.dialect, n,
            numbers={"serial_start": a["serial_start"], "serial_end": a["serial_end"],
                     "interval_start": a["interval_start"], "interval_end": a["interval_end"],
                     "source": a["source"], "technology": a["technology"],
                     "renewable_ppm": a["renewable_ppm"], "carbon_mg": a["carbon_mg"],
                     "batch_seq": np.full(n, vb.seq, np.int64)},
            strings={"issuer": (np.zeros(n, np.int32), [vb.issuer]),
                     "device_id": (a["device"], vb.cols.devices),
                     "zone": (a["zone"], vb.cols.zones),
                     "owner": (a["owner"], vb.cols.owners)})
        return vb

    def persist(self, vb: VerifiedBatch) -> None:
        """Check 7, then records + header + cursor in one transaction."""
        if vb.prepared is None:
            self.prepare(vb)
        at = now_ms()
        with self.node.store.transaction() as conn:
            # Re-derivable from the peer: no need to wait for the WAL flush (see the docstring).
            peer_repos.relax_commit_durability(conn)
            if not peer_repos.advance_cursor(conn, vb.issuer, vb.seq - 1, vb.seq, at):
                raise Aborted(f"batch {vb.issuer}#{vb.seq}: cursor of {vb.issuer} moved "
                              "(concurrent sync, or the peer was removed); retry")
            prev = peer_repos.last_peer_batch(conn, vb.issuer)
            if prev is not None and vb.serial_lo < prev.serial_hi:
                raise invalid("batch.serial_start",
                              f"serials from {vb.serial_lo} overlap batch #{prev.seq} "
                              f"(up to {prev.serial_hi})", f"batch {vb.issuer}#{vb.seq}")
            peer_repos.write_peer_records(conn, vb.prepared)
            peer_repos.insert_peer_batch(
                conn, issuer=vb.issuer, seq=vb.seq, count=vb.count, wh=vb.wh,
                serial_lo=vb.serial_lo, serial_hi=vb.serial_hi, merkle_root=vb.root,
                key_id=vb.key_id, signature=vb.signature, created_at_ms=vb.created_at_ms,
                received_at_ms=at)

    def import_batch(self, peer_id: str, raw: bytes, expect_seq: int) -> VerifiedBatch:
        vb = self.verify(peer_id, raw, expect_seq)
        self.persist(vb)
        return vb


def _check_dictionaries(cols: batches.Columns, where: str) -> None:
    """Bounded, well-formed strings: peer data is untrusted input."""
    for name, table, limit in (("devices", cols.devices, MAX_DEVICE_LEN),
                               ("owners", cols.owners, MAX_OWNER_LEN),
                               ("zones", cols.zones, 32)):
        if len(table) > len(cols):
            raise invalid(f"batch.{name}", "more dictionary entries than records", where)
        for value in table:
            if not value or len(value) > limit or not value.isprintable():
                raise invalid(f"batch.{name}", f"{value[:40]!r} is not a printable string of "
                              f"1..{limit} characters", where)
    for zone in cols.zones:
        if not ZONE_RE.match(zone):
            raise invalid("batch.zones", f"{zone!r} is not a grid zone", where)


_DONE = object()


def _prefetch(items: Iterator[Any], cancel: Any, depth: int = 2) -> Iterator[Any]:
    """Run the iterator ``items`` in a helper thread, up to ``depth`` items ahead of the
    consumer; an exception it raises reaches the consumer in order.  ``cancel()`` is called
    when the consumer stops (early or not), to unblock a helper waiting on the network."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_DONE)
        except BaseException as exc:
            offer(exc)

    thread = threading.Thread(target=pump, name="eap-sync-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        cancel()
        thread.join(timeout=5)


class Syncer:
    """Pulls and imports batches from peers (the ``eap-node sync`` command and the worker)."""

    def __init__(self, node: Any, client: PeerClient, *, trust: TrustList | None = None,
                 pull_batches: int = 64) -> None:
        self.node = node
        self.client = client
        self.trust = trust or client.trust
        self.importer = BatchImporter(node, self.trust)
        self.pull_batches = pull_batches

    @traced("eap.sync", lambda r: {
        "peer": r.peer, "batches": r.batches, "records": r.records, "wh": r.wh,
        "cursor": r.cursor, "outcome": "ok" if r.error is None else r.error.status.name},
        lambda m, r, _s: m.synced_batches.add(r.batches, {"peer": r.peer}))
    def sync_peer(self, peer_id: str, *, max_batches: int = 0) -> SyncResult:
        """Import every new batch of ``peer_id`` (at most ``max_batches`` if given).

        Errors do not raise: they are logged, stored as the peer's ``last_error`` and returned
        in :attr:`SyncResult.error`; the cursor stays on the last good batch.
        """
        result = SyncResult(peer_id)
        try:
            peer = self.trust.lookup(peer_id)
            result.cursor = peer.cursor
            if peer.status != ACTIVE:
                peer = self.client.hello(peer_id)
            if "batches.v1" not in peer.capabilities:
                raise FailedPrecondition(f"{peer_id} does not offer batches.v1")
            while True:
                want = self.pull_batches if not max_batches else \
                    min(self.pull_batches, max_batches - result.batches)
                if want <= 0:
                    break
                got = 0
                stream = self.client.pull_batches(peer_id, result.cursor, max_batches=want)
                # Receive + verify + lay out batch k+1 in a helper thread while batch k is
                # written: the Python work overlaps the database's.
                for vb in _prefetch(self._verified(peer_id, stream, result.cursor),
                                    stream.cancel):
                    self.importer.persist(vb)
                    result.cursor = vb.seq
                    result.batches += 1
                    result.records += vb.count
                    result.wh += vb.wh
                    got += 1
                if got < want:
                    break
            self._touch(peer_id)
        except EapError as exc:
            result.error = exc
            log.error("sync from %s stopped at cursor %d: %s", peer_id, result.cursor, exc)
            try:
                self.trust.record_error(peer_id, f"sync at cursor {result.cursor}: {exc}")
            except EapError:  # pragma: no cover - the database itself failed
                log.exception("could not record the sync error of %s", peer_id)
        if result.batches:
            log.info("synced %d batch(es), %d records, %d Wh from %s (cursor %d)",
                     result.batches, result.records, result.wh, peer_id, result.cursor)
        return result

    def _verified(self, peer_id: str, stream: Any, cursor: int) -> Iterator[VerifiedBatch]:
        keys = self.trust.peer_keys  # one snapshot for the whole stream
        for seq, raw in enumerate(stream, start=cursor + 1):
            yield self.importer.prepare(self.importer.verify(peer_id, raw, seq, keys=keys))

    def _touch(self, peer_id: str) -> None:
        with self.node.store.transaction() as conn:
            peer_repos.update_peer(conn, peer_id, last_sync_ms=now_ms(), last_error=None)

    def sync_all(self) -> list[SyncResult]:
        """Sync every peer on the trust list (those without a handshake get one first)."""
        return [self.sync_peer(p.node_id) for p in self.trust.all()]
