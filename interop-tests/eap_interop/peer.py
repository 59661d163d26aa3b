"""The suite's fake peer: the client as a whole federation node, issuer and transfer source.

A destination pulls the batches of an issuer it has not synced before it judges a prepare
(docs/custody.md §1), so the transfer and holdings cases run, for their length, a small
``eap.v1.Federation`` server in the client's own process (in the manner of Matrix's
Complement): mutual TLS with the identity kit's certificate, serving ``PullBatches`` of the
batches the client published, ``Hello`` and ``GetTransferStatus``.  It also holds what a
source needs to talk to the node under test: record batches signed with the identity's key,
record proofs, prepares, decisions and the issuer's custody records.

Like the rest of the suite it is written from the documents alone (``types.proto``,
``docs/core.md``, ``docs/protocol.md``, ``docs/transfers.md``, ``docs/custody.md``) with
``hashlib`` and ``cryptography``; nothing here imports ``eap.node``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from eap.v1 import federation_pb2 as fed
from eap.v1 import types_pb2 as pb
from eap_interop import protocol

if TYPE_CHECKING:
    from eap_interop.context import Federation

T0 = 1_740_787_200  # 2025-03-01T00:00:00Z
HOUR = 3600
CUSTODY_DOMAIN = b"EAP-CUSTODY-v1\x00"
HOLDINGS_DOMAIN = b"EAP-HOLDINGS-v1\x00"
CAPABILITIES = ("batches.v1", "transfer.v1")
#: The cursor probe names a batch under this seq: no node has synced that far.
PROBE_SEQ = 2**62
#: How long the probe keeps trying when no pull arrives: a node that failed to reach the peer
#: a moment ago (before the fake peer listened) may still be in its reconnect backoff.
PROBE_WAIT_S = 6.0
PROBE_INTERVAL_S = 0.75
CELL = "N41E002"
ZONE = "ZZ"
PT_PREPARE = fed.TransferPrepare.DESCRIPTOR.full_name
PT_DECISION = fed.TransferDecision.DESCRIPTOR.full_name
PT_STATUS = fed.TransferStatus.DESCRIPTOR.full_name
PT_HOLDINGS = fed.HoldingsRequest.DESCRIPTOR.full_name
PT_SIGNED = pb.Signed.DESCRIPTOR.full_name

_serial_lock = threading.Lock()
_last_serial = [0]


def fresh_serials(wh: int) -> tuple[int, int]:
    """A serial range of ``wh`` never used before by this identity: serials start at
    ``now_ms * 1000`` (above any earlier run's) and only grow within the process."""
    with _serial_lock:
        start = max(protocol.now_ms() * 1000, _last_serial[0])
        _last_serial[0] = start + wh
    return start, start + wh


def _pseudonym(prefix: str, seed: str) -> str:
    raw = base64.b32encode(hashlib.sha256(seed.encode()).digest()).decode().lower()
    return prefix + raw[:26]


@dataclass(frozen=True)
class Record:
    """One issued record (every field of its Merkle leaf)."""

    serial_start: int
    serial_end: int
    interval_start: int
    interval_end: int
    device: str
    owner: str
    zone: str = ZONE
    source: int = pb.ENERGY_SOURCE_SOLAR
    technology: int = pb.TECHNOLOGY_PHOTOVOLTAIC
    renewable_ppm: int = 1_000_000
    carbon_mg: int = 12_000

    @property
    def wh(self) -> int:
        return self.serial_end - self.serial_start

    def leaf(self) -> bytes:
        return protocol.leaf_hash(
            serial_start=self.serial_start, serial_end=self.serial_end,
            interval_start=self.interval_start, interval_end=self.interval_end,
            source=self.source, technology=self.technology,
            renewable_ppm=self.renewable_ppm, carbon_mg=self.carbon_mg,
            device=self.device, zone=self.zone, owner=self.owner,
        )

    def issued(self) -> pb.IssuedRecord:
        return pb.IssuedRecord(
            serial_start=self.serial_start, serial_end=self.serial_end,
            interval=pb.Interval(start_unix=self.interval_start, end_unix=self.interval_end),
            source=self.source, technology=self.technology, renewable_ppm=self.renewable_ppm,
            carbon_mg_per_kwh=self.carbon_mg, device_id=self.device, zone=self.zone,
            owner=self.owner,
        )

    def attributes(self, cell: str = "") -> pb.RecordAttributes:
        return pb.RecordAttributes(
            source=self.source, technology=self.technology, renewable_ppm=self.renewable_ppm,
            carbon_mg_per_kwh=self.carbon_mg, zone=self.zone, cell=cell,
            interval=pb.Interval(start_unix=self.interval_start, end_unix=self.interval_end),
            device_id=self.device,
        )


@dataclass
class Published:
    """A signed batch of the identity and its records."""

    batch: pb.RecordBatch
    records: list[Record]
    leaves: list[bytes]

    def header(self) -> pb.BatchHeader:
        b = self.batch
        return pb.BatchHeader(issuer=b.issuer, seq=b.seq, count=b.count,
                              merkle_root=b.merkle_root, created_at_ms=b.created_at_ms,
                              key_id=b.key_id, signature=b.signature)

    def proof(self, index: int, lineage: Sequence[str]) -> pb.RecordProof:
        return pb.RecordProof(batch=self.header(), index=index,
                              record=self.records[index].issued(),
                              path=protocol.inclusion_path(self.leaves, index),
                              lineage=list(lineage))


@dataclass
class Offer:
    """What a source sends for one range: the bundle, its proof, the parent's lineage."""

    bundle: pb.RecordBundle
    proof: pb.RecordProof
    parent_lineage_hash: str = ""

    @property
    def wh(self) -> int:
        return self.bundle.serial_end - self.bundle.serial_start


@dataclass
class FakePeer:
    """The client's federation server and its issuer/source side (see the module docstring)."""

    federation: Federation
    listen: str
    #: Batches served by PullBatches, by seq.
    served: dict[int, pb.RecordBatch] = field(default_factory=dict)
    #: Cursors of the PullBatches calls received from the node, in order.
    pulls: list[int] = field(default_factory=list)
    #: This source's decisions, answered to GetTransferStatus.
    decisions: dict[str, fed.TransferStatus] = field(default_factory=dict)
    #: Seq of the next batch to publish (known after :meth:`probe`).
    next_seq: int | None = None
    refusals: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.me = self.federation.me
        self.node_id = self.federation.node_id
        self.keys = self.federation.node_keys()
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        tag = uuid.uuid4().hex
        self.device = _pseudonym("dev_", f"interop-device-{tag}")
        self.owner = _pseudonym("acct_", f"interop-owner-{tag}")
        self._hours = itertools.count()

    # -- the server -------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on ``listen`` with mutual TLS (the kit's certificate; clients from its CA).

        Raises:
            RuntimeError: the address cannot be bound.
        """
        me = self.me
        creds = grpc.ssl_server_credentials(
            [(me.tls_key, me.tls_cert)], root_certificates=me.tls_ca, require_client_auth=True
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        envelope = {"request_deserializer": pb.SignedEnvelope.FromString,
                    "response_serializer": pb.SignedEnvelope.SerializeToString}
        handlers = {
            "PullBatches": grpc.unary_stream_rpc_method_handler(
                self._pull_batches,
                request_deserializer=fed.PullBatchesRequest.FromString,
                response_serializer=pb.RecordBatch.SerializeToString,
            ),
            "Hello": grpc.unary_unary_rpc_method_handler(self._hello, **envelope),
            "GetTransferStatus": grpc.unary_unary_rpc_method_handler(self._status, **envelope),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("eap.v1.Federation", handlers),)
        )
        try:
            port = server.add_secure_port(self.listen, creds)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot listen on {self.listen}: {exc}") from exc
        if not port:
            raise RuntimeError(f"cannot listen on {self.listen}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    def _caller_is_node(self, context: grpc.ServicerContext) -> None:
        auth = context.auth_context()
        cns = [c.decode() for c in auth.get("x509_common_name", [])]
        if cns != [self.node_id]:
            self.refusals.append(f"caller {cns}")
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"the fake peer serves only {self.node_id}, not {cns}")

    def _pull_batches(self, request: fed.PullBatchesRequest,
                      context: grpc.ServicerContext) -> Iterator[pb.RecordBatch]:
        self._caller_is_node(context)
        if request.node_id not in ("", self.node_id):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "node_id is not the caller")
        with self._lock:
            self.pulls.append(int(request.cursor))
            seqs = sorted(s for s in self.served if s > request.cursor)
            batches = [self.served[s] for s in seqs[: request.max_batches or 64]]
        yield from batches

    def _open(self, env: pb.SignedEnvelope, payload_type: str,
              context: grpc.ServicerContext) -> None:
        try:
            protocol.check_envelope(env, keys=self.keys, origin=self.node_id,
                                    destination=self.me.node_id, payload_type=payload_type)
        except protocol.ProtocolViolation as exc:
            self.refusals.append(str(exc))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

    def _seal(self, payload: bytes, payload_type: str) -> pb.SignedEnvelope:
        return protocol.seal(self.me.signing_key, payload, payload_type, self.me.node_id,
                             self.node_id)

    def _hello(self, env: pb.SignedEnvelope, context: grpc.ServicerContext) -> pb.SignedEnvelope:
        self._caller_is_node(context)
        self._open(env, fed.HelloRequest.DESCRIPTOR.full_name, context)
        req = fed.HelloRequest.FromString(env.payload)
        if "eap.v1" not in req.protocol_versions:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no common protocol version")
        resp = fed.HelloResponse(
            node_id=self.me.node_id, protocol_version="eap.v1",
            capabilities=sorted(set(CAPABILITIES) & set(req.capabilities)),
            public_keys={self.me.key_id: self.me.public_key}, max_batch_records=100_000,
            descriptor=self.me.descriptor,
        )
        return self._seal(resp.SerializeToString(), fed.HelloResponse.DESCRIPTOR.full_name)

    def _status(self, env: pb.SignedEnvelope, context: grpc.ServicerContext) -> pb.SignedEnvelope:
        self._caller_is_node(context)
        self._open(env, PT_STATUS, context)
        tid = fed.TransferStatus.FromString(env.payload).transfer_id
        answer = self.decisions.get(tid) or fed.TransferStatus(
            transfer_id=tid, state=fed.TRANSFER_STATE_UNKNOWN,
            reason=f"{self.me.node_id} has no record of this transfer")
        return self._seal(answer.SerializeToString(), PT_STATUS)

    # -- the issuer -------------------------------------------------------------------------------

    def records(self, whs: Sequence[int]) -> list[Record]:
        """Fresh records of this peer's device: new serials, the next hours from T0."""
        out = []
        for wh in whs:
            s, e = fresh_serials(wh)
            h = next(self._hours)
            out.append(Record(s, e, T0 + h * HOUR, T0 + (h + 1) * HOUR, self.device,
                              self.owner))
        return out

    def sign_batch(self, records: Sequence[Record], seq: int) -> Published:
        """A batch of ``records`` under ``seq``, signed with the identity's key (not served)."""
        devices: list[str] = []
        zones: list[str] = []
        owners: list[str] = []

        def index(table: list[str], value: str) -> int:
            if value not in table:
                table.append(value)
            return table.index(value)

        cols = {
            "serial_start": [r.serial_start for r in records],
            "serial_end": [r.serial_end for r in records],
            "interval_start": [r.interval_start for r in records],
            "interval_end": [r.interval_end for r in records],
            "device": [index(devices, r.device) for r in records],
            "source": [r.source for r in records],
            "technology": [r.technology for r in records],
            "renewable_ppm": [r.renewable_ppm for r in records],
            "carbon_mg": [r.carbon_mg for r in records],
            "zone": [index(zones, r.zone) for r in records],
            "owner": [index(owners, r.owner) for r in records],
        }
        leaves = [r.leaf() for r in records]
        root = protocol.merkle_root(leaves)
        issuer = self.me.node_id
        batch = pb.RecordBatch(
            issuer=issuer, seq=seq, count=len(records), devices=devices, zones=zones,
            owners=owners, merkle_root=root, created_at_ms=protocol.now_ms(),
            key_id=self.me.key_id,
            signature=self.me.signing_key.sign(
                protocol.batch_header(issuer, seq, len(records), root)),
            **protocol.pack_columns(cols),
        )
        return Published(batch, list(records), leaves)

    def publish(self, whs: Sequence[int]) -> Published:
        """Sign fresh records as the next batch and serve it."""
        assert self.next_seq is not None, "publish before the cursor probe"
        with self._lock:
            pub = self.sign_batch(self.records(whs), self.next_seq)
            self.served[self.next_seq] = pub.batch
            self.next_seq += 1
        return pub

    def offer(self, pub: Published, index: int = 0,
              span: tuple[int, int] | None = None) -> Offer:
        """Record ``index`` of ``pub`` whole, or its split child ``span`` (one split)."""
        r, leaf = pub.records[index], pub.leaves[index]
        me = self.me.node_id
        rid = f"{me}/{r.serial_start}-{r.serial_end}"
        lin0 = protocol.lineage(leaf, rid)
        ids, lin, parent, parent_lin = [rid], lin0, "", ""
        s, e = r.serial_start, r.serial_end
        if span is not None:
            s, e = span
            ids.append(f"{me}/{s}-{e}")
            parent, parent_lin = rid, lin0
            lin = protocol.lineage(bytes.fromhex(lin0), ids[-1])
        bundle = pb.RecordBundle(
            id=ids[-1], issuer=me, serial_start=s, serial_end=e, attributes=r.attributes(),
            status=pb.BUNDLE_STATUS_EXPORT_PENDING, parent_id=parent, lineage_hash=lin,
            issued_at_ms=pub.batch.created_at_ms, held_by=me,
        )
        return Offer(bundle, pub.proof(index, ids), parent_lin)

    def custody(self, transfer_id: str, start: int, end: int, *,
                to_node: str | None = None) -> pb.Signed:
        """The issuer's signed custody record of a move from this peer to the node."""
        body = pb.CustodyRecord(
            issuer=self.me.node_id, serial_start=start, serial_end=end,
            transfer_id=transfer_id, from_node=self.me.node_id,
            to_node=to_node or self.node_id, cell=CELL, moved_at_ms=protocol.now_ms(),
        ).SerializeToString()
        return pb.Signed(body=body, signer=self.me.node_id, key_id=self.me.key_id,
                         signature=self.me.signing_key.sign(CUSTODY_DOMAIN + body))

    # -- the source -------------------------------------------------------------------------------

    def transfer_id(self) -> str:
        return f"{self.me.node_id}/{uuid.uuid4()}"

    def prepare_message(self, offer: Offer, to_account: str, *, proof: bool = True,
                        transfer_id: str | None = None) -> fed.TransferPrepare:
        msg = fed.TransferPrepare(
            transfer_id=transfer_id or self.transfer_id(), bundle=offer.bundle,
            to_account=to_account, expires_at_ms=protocol.now_ms() + 120_000,
            parent_lineage_hash=offer.parent_lineage_hash,
        )
        if proof:
            msg.proof.CopyFrom(offer.proof)
        return msg

    def _call(self, rpc: str, payload: bytes, payload_type: str,
              answer_type: str = PT_STATUS) -> pb.SignedEnvelope:
        answer = self.federation.call(rpc, self.federation.seal(payload, payload_type))
        protocol.check_envelope(answer, keys=self.keys, origin=self.node_id,
                                destination=self.me.node_id, payload_type=answer_type)
        return answer

    def _status_of(self, answer: pb.SignedEnvelope, tid: str, rpc: str) -> fed.TransferStatus:
        status = fed.TransferStatus.FromString(answer.payload)
        assert status.transfer_id == tid, (
            f"{rpc} answered for transfer {status.transfer_id!r}, not {tid!r}"
        )
        return status

    def send_prepare(self, msg: fed.TransferPrepare) -> fed.TransferStatus:
        """PrepareTransfer in a fresh envelope; the node's verified TransferStatus."""
        answer = self._call("PrepareTransfer", msg.SerializeToString(), PT_PREPARE)
        return self._status_of(answer, msg.transfer_id, "PrepareTransfer")

    def send_decision(self, msg: fed.TransferDecision) -> fed.TransferStatus:
        """DecideTransfer in a fresh envelope (the decision is recorded for
        GetTransferStatus first, as a source makes it durable before announcing it)."""
        self.decisions[msg.transfer_id] = fed.TransferStatus(
            transfer_id=msg.transfer_id, state=msg.decision,
            custody=msg.custody if msg.HasField("custody") else None)
        answer = self._call("DecideTransfer", msg.SerializeToString(), PT_DECISION)
        return self._status_of(answer, msg.transfer_id, "DecideTransfer")

    def commit(self, msg: fed.TransferPrepare, *, custody: bool = True) -> fed.TransferStatus:
        b = msg.bundle
        decision = fed.TransferDecision(transfer_id=msg.transfer_id,
                                        decision=fed.TRANSFER_STATE_COMMITTED)
        if custody:
            decision.custody.CopyFrom(self.custody(msg.transfer_id, b.serial_start,
                                                   b.serial_end))
        return self.send_decision(decision)

    def abort(self, msg: fed.TransferPrepare) -> fed.TransferStatus:
        return self.send_decision(fed.TransferDecision(transfer_id=msg.transfer_id,
                                                       decision=fed.TRANSFER_STATE_ABORTED))

    def holdings(self, nonce: bytes) -> tuple[pb.SignedEnvelope, pb.Signed]:
        answer = self._call("GetHoldings", fed.HoldingsRequest(nonce=nonce).SerializeToString(),
                            PT_HOLDINGS, PT_SIGNED)
        return answer, pb.Signed.FromString(answer.payload)

    # -- the cursor probe -------------------------------------------------------------------------

    def probe(self, to_account: str) -> int:
        """Learn the node's sync cursor for this issuer (SPEC.md, "Peer set-up").

        Returns:
            The cursor; batches published afterwards continue from it.

        Raises:
            NoPull: the node never called PullBatches on this fake peer.
        """
        pub = self.sign_batch(self.records([10]), PROBE_SEQ)
        deadline = time.monotonic() + PROBE_WAIT_S
        while True:
            before = len(self.pulls)
            answer = self.send_prepare(self.prepare_message(self.offer(pub), to_account))
            with self._lock:
                cursors = self.pulls[before:]
            if cursors:
                break
            if time.monotonic() + PROBE_INTERVAL_S > deadline:
                raise NoPull(answer)
            time.sleep(PROBE_INTERVAL_S)
        assert answer.state == fed.TRANSFER_STATE_ABORTED, (
            f"a prepare naming batch #{PROBE_SEQ}, never served, was answered "
            f"{fed.TransferState.Name(answer.state)}"
        )
        self.next_seq = max(cursors) + 1
        return max(cursors)


class NoPull(Exception):
    """The node answered a prepare without pulling from the fake peer."""

    def __init__(self, answer: Any) -> None:
        super().__init__(answer)
        self.answer = answer
