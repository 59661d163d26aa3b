"""Test and benchmark helpers: crafted record batches and an in-process fake peer.

In the spirit of Matrix Complement, :class:`FakePeer` is a minimal federation server run
inside the test process, speaking the real protocol over mutual TLS, so that a test can drive
one real node with exactly the (good or deliberately broken) messages it wants: batches with a
flipped byte, a forged root, records breaking the rules, out-of-order sequence numbers.

Nothing in the node imports this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from eap.node import batches
from eap.node.crypto import (
    KeyRing,
    PeerKeys,
    ReplayGuard,
    SignedEnvelope,
    load_tls_material,
    open_envelope,
    peer_node_id_from_auth_context,
    seal,
)
from eap.node.crypto.keys import now_ms
from eap.node.federation.descriptor import (
    PROTOCOL_VERSIONS,
    NodeDescriptor,
    ca_fingerprint,
)
from eap.node.federation.server import SERVICE_NAME
from eap.v1 import federation_pb2 as fed
from eap.v1 import types_pb2

HOUR = 3600
#: 2026-01-01T00:00:00Z, a round hour.
T0 = 1_767_225_600


def craft_columns(n: int, *, serial_start: int = 1, devices: int = 50, t0: int = T0,
                  wh: int = 1000, zone: str = "ES", owner_count: int = 20,
                  device_prefix: str = "dev_") -> batches.Columns:
    """``n`` valid hourly records: ``devices`` devices, one record per device-hour, contiguous
    serial numbers from ``serial_start``; NumPy only, no per-record Python objects."""
    i = np.arange(n, dtype=np.int64)
    dev = (i % devices).astype(np.int32)
    hour = i // devices
    amount = np.full(n, wh, dtype=np.int64) + (i % 7)
    ends = serial_start + np.cumsum(amount)
    arrays = {
        "serial_start": ends - amount,
        "serial_end": ends,
        "interval_start": t0 + hour * HOUR,
        "interval_end": t0 + (hour + 1) * HOUR,
        "device": dev,
        "source": np.ones(n, dtype=np.uint8),
        "technology": np.ones(n, dtype=np.uint8),
        "renewable_ppm": np.full(n, 1_000_000, dtype=np.uint32),
        "carbon_mg": np.full(n, 20_000, dtype=np.uint32),
        "zone": np.zeros(n, dtype=np.int32),
        "owner": (dev % owner_count).astype(np.int32),
    }
    names = [f"{device_prefix}{k:026d}" for k in range(devices)]
    owners = [f"acct_{chr(97 + k % 26) * 26}" for k in range(owner_count)]
    return batches.Columns(arrays, names[: max(1, min(devices, n))], [zone],
                           owners[: max(1, min(owner_count, devices, n))])


def sign_batch(keyring: KeyRing, issuer: str, seq: int, cols: batches.Columns, *,
               root: bytes | None = None, created_at_ms: int | None = None
               ) -> types_pb2.RecordBatch:
    """The signed ``RecordBatch`` of ``cols`` (``root`` overrides the computed Merkle root)."""
    from eap.node import kernels

    if root is None:
        root = bytes(kernels.merkle_root(cols.leaf_hashes()))
    key_id, sig = keyring.sign(batches.header_bytes(issuer, seq, len(cols), root))
    return batches.to_proto(cols, issuer=issuer, seq=seq, root=root,
                            created_at_ms=created_at_ms or now_ms(), key_id=key_id,
                            signature=sig)


def craft_batches(keyring: KeyRing, issuer: str, count: int, per_batch: int, *,
                  first_seq: int = 1, first_serial: int = 1, devices: int = 500
                  ) -> list[bytes]:
    """``count`` consecutive valid signed batches of ``per_batch`` records, serialised."""
    out, serial = [], first_serial
    for k in range(count):
        cols = craft_columns(per_batch, serial_start=serial, devices=devices,
                             t0=T0 + k * HOUR * (per_batch // devices + 1))
        serial = int(cols.arrays["serial_end"][-1])
        out.append(sign_batch(keyring, issuer, first_seq + k, cols).SerializeToString())
    return out


def descriptor_for(node_id: str, keyring: KeyRing, endpoint: str, *, tls_dir: Path | None = None,
                   zone: str = "ES", capabilities: tuple[str, ...] = ("batches.v1",),
                   versions: tuple[str, ...] = PROTOCOL_VERSIONS) -> NodeDescriptor:
    """A signed descriptor for a node that has a key ring but no home (a fake peer)."""
    pem = (tls_dir / "ca.crt").read_bytes() if tls_dir else b""
    desc = NodeDescriptor(
        node_id=node_id, zone=zone, endpoint=endpoint, protocol_versions=versions,
        capabilities=capabilities, max_batch_records=100_000,
        public_keys=keyring.public_keys(), tls_ca_fingerprint=ca_fingerprint(pem) if pem else "",
        tls_ca_pem=pem.decode() if pem else "", issued_at_ms=now_ms())
    return desc.signed_with(keyring)


@dataclass
class FakePeer:
    """A scripted federation peer (see the module docstring).

    ``batches`` are served by ``PullBatches`` after the requested cursor (index ``seq - 1``);
    ``Hello`` is answered like a real node would; every call is recorded in ``calls``.
    ``trusted`` are the keys of the nodes it accepts envelopes from.
    """

    node_id: str
    keyring: KeyRing
    tls_dir: Path
    trusted: PeerKeys = field(default_factory=PeerKeys)
    batches: list[bytes] = field(default_factory=list)
    versions: tuple[str, ...] = PROTOCOL_VERSIONS
    capabilities: tuple[str, ...] = ("batches.v1",)
    calls: list[tuple[str, str]] = field(default_factory=list)
    on_hello: Callable[[fed.HelloRequest], None] | None = None
    #: Pause before each streamed batch (to catch an importer mid-stream).
    delay_s: float = 0.0
    port: int = 0

    def __post_init__(self) -> None:
        self._server: grpc.Server | None = None
        self._guard = ReplayGuard()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def descriptor(self) -> NodeDescriptor:
        return descriptor_for(self.node_id, self.keyring, self.endpoint, tls_dir=self.tls_dir,
                              capabilities=self.capabilities, versions=self.versions)

    def start(self) -> FakePeer:
        tls = load_tls_material(self.tls_dir, expected_node_id=self.node_id)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             options=[("grpc.max_send_message_length", 64 << 20),
                                      ("grpc.max_receive_message_length", 64 << 20)])
        handlers = {
            "Hello": grpc.unary_unary_rpc_method_handler(
                self._hello, request_deserializer=types_pb2.SignedEnvelope.FromString,
                response_serializer=types_pb2.SignedEnvelope.SerializeToString),
            "PullBatches": grpc.unary_stream_rpc_method_handler(
                self._pull, request_deserializer=fed.PullBatchesRequest.FromString,
                response_serializer=lambda b: b),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        self.port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    def __enter__(self) -> FakePeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, rpc: str, context) -> str:
        caller = peer_node_id_from_auth_context(context)
        with self._lock:
            self.calls.append((rpc, caller))
        return caller

    def _hello(self, request, context):
        caller = self._record("Hello", context)
        env = open_envelope(SignedEnvelope.from_message(request), me=self.node_id,
                            peers=self.trusted, replay_guard=self._guard, tls_peer=caller)
        hello = fed.HelloRequest.FromString(env.payload)
        if self.on_hello:
            self.on_hello(hello)
        common = [v for v in self.versions if v in hello.protocol_versions]
        if not common:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no common protocol version")
        resp = fed.HelloResponse(
            node_id=self.node_id, protocol_version=common[-1],
            capabilities=[c for c in self.capabilities if c in hello.capabilities],
            public_keys={k: v.public_key for k, v in self.keyring.public_keys().items()},
            max_batch_records=100_000, descriptor=self.descriptor().to_json().encode())
        out = seal(self.keyring, resp.SerializeToString(), fed.HelloResponse.DESCRIPTOR.full_name,
                   self.node_id, caller)
        return types_pb2.SignedEnvelope(**out.as_dict())

    def _pull(self, request, context):
        self._record("PullBatches", context)
        limit = request.max_batches or len(self.batches)
        for raw in self.batches[request.cursor: request.cursor + limit]:
            if self.delay_s:
                time.sleep(self.delay_s)
            yield raw
