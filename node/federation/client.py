"""Outbound federation transport: :class:`PeerClient`, one mutual-TLS channel per peer.

``PeerClient.call`` is the one way to send a signed request to a peer: it seals the payload
in an envelope bound to that peer, calls the RPC, and opens the answer, which must be an
envelope from that peer to this node (origin = the TLS peer = the peer called).  Calls that
fail with ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` are retried, with a freshly sealed
envelope, after an exponential backoff with full jitter (``sleep = uniform(0, min(cap,
base * 2**attempt))``), a bounded number of times; every other failure is raised at once as
the matching node error (``PermissionDenied``, ``FailedPrecondition`` …).  A
``DEADLINE_EXCEEDED`` that outlives the retries is raised as ``Unavailable`` with
``in_doubt = True``: the peer may have acted on the request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import propagate

from eap.node import telemetry
from eap.node.crypto import (
    PeerKeys,
    ReplayGuard,
    SignedEnvelope,
    load_tls_material,
    open_envelope,
    peer_channel_options,
    seal,
)
from eap.node.errors import (
    Aborted,
    AlreadyExists,
    EapError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from eap.node.federation.descriptor import PROTOCOL_VERSIONS
from eap.node.federation.peers import PENDING, Peer, TrustList
from eap.node.federation.settings import FederationSettings, local_capabilities
from eap.node.telemetry.grpc import instrument_channel
from eap.v1 import federation_pb2 as fed
from eap.v1 import types_pb2

log = logging.getLogger(__name__)

SERVICE_PATH = "/eap.v1.Federation/"
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: A restarted peer is reached again within ~2 s (gRPC's default backoff grows to 120 s).
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100),
                     ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 2000)]

_ERRORS: dict[grpc.StatusCode, type[EapError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.UNIMPLEMENTED: FailedPrecondition,
}


def error_from_rpc(peer_id: str, rpc: str, error: grpc.RpcError) -> EapError:
    """The node error for a failed call, with the peer's field violations and retry delay.

    The result carries ``grpc_code`` (the status the peer returned) and ``in_doubt`` (True
    for a deadline: the peer may have executed the call).
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or str(code)
    cls = _ERRORS.get(code, EapError)
    violations, retry_after = [], None
    try:
        status = rpc_status.from_call(error)
    except (ValueError, AttributeError):
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after = _seconds(info.retry_delay)
    exc = cls(f"{peer_id} {rpc}: {code.name}: {details}", violations)
    if retry_after is not None and isinstance(exc, ResourceExhausted):
        exc.retry_after = retry_after
    exc.grpc_code = code  # type: ignore[attr-defined]
    exc.in_doubt = code == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    return exc


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def backoff_delays(attempts: int, base: float, cap: float,
                   rng: random.Random | None = None) -> Iterator[float]:
    """Full-jitter exponential backoff: ``attempts - 1`` sleeps before the retries."""
    rng = rng or random.Random()
    for attempt in range(attempts - 1):
        yield rng.uniform(0, min(cap, base * 2**attempt))


class PeerClient:
    """Calls peers over mutual TLS; thread-safe; one cached channel per peer endpoint."""

    def __init__(self, node: Any, *, trust: TrustList | None = None,
                 settings: FederationSettings | None = None, attempts: int = 4,
                 backoff_base_s: float = 0.1, backoff_cap_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.node = node
        self.me = node.node_id
        self.settings = settings or FederationSettings.load(node.config)
        self.trust = trust or TrustList(node.store, self.me, cache_s=self.settings.trust_cache_s)
        self.attempts = max(1, attempts)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._sleep = sleep
        self._tls = None
        self._lock = threading.Lock()
        self._channels: dict[tuple[str, str], tuple[grpc.Channel, grpc.Channel]] = {}
        self._guard = ReplayGuard()

    # -- channels ---------------------------------------------------------------------------------

    def channel(self, peer: Peer | str) -> grpc.Channel:
        """The mutual-TLS channel to a peer; the server must prove it is that node id.

        Unary calls on it are ``CLIENT`` spans that send the trace context
        (:func:`~eap.node.telemetry.grpc.instrument_channel`).
        """
        return self._channel_pair(peer)[1]

    def _channel_pair(self, peer: Peer | str) -> tuple[grpc.Channel, grpc.Channel]:
        """``(plain, instrumented)`` channels to a peer: one connection, two call paths."""
        if isinstance(peer, str):
            peer = self.trust.require(peer)
        key = (peer.node_id, peer.endpoint)
        with self._lock:
            chan = self._channels.get(key)
            if chan is None:
                if self._tls is None:
                    self._tls = load_tls_material(self.settings.tls_dir,
                                                  expected_node_id=self.me)
                limit = self.settings.max_message_bytes
                chan = grpc.secure_channel(
                    peer.endpoint, self._tls.channel_credentials(),
                    options=[*peer_channel_options(peer.node_id),
                             ("grpc.max_receive_message_length", limit),
                             ("grpc.max_send_message_length", limit),
                             *RECONNECT_OPTIONS])
                # CLIENT spans; the peer continues this trace if it trusts this node.
                chan = (chan, instrument_channel(chan, telemetry.of(self.node)))
                for old in [k for k in self._channels if k[0] == peer.node_id]:
                    self._channels.pop(old)[0].close()
                self._channels[key] = chan
            return chan

    def close(self) -> None:
        with self._lock:
            for chan, _ in self._channels.values():
                chan.close()
            self._channels.clear()

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- signed calls ------------------------------------------------------------------------------

    def call(self, peer_id: str, rpc_name: str, payload_type: str, payload_bytes: bytes, *,
             timeout: float | None = None, attempts: int | None = None,
             response_keys: Callable[[types_pb2.SignedEnvelope], PeerKeys] | None = None,
             ) -> tuple[str, bytes]:
        """Send ``payload_bytes`` to ``peer_id``'s ``rpc_name`` in a signed envelope.

        Args:
            peer_id: a peer on the trust list.
            rpc_name: a Federation method name (``PrepareTransfer``, ``Hello``, …).
            payload_type: full protobuf name of the payload.
            payload_bytes: the serialised payload.
            timeout: deadline of each attempt in seconds (default ``call_timeout_s``).
            attempts: total attempts on UNAVAILABLE / DEADLINE_EXCEEDED (default 4).
            response_keys: keys to verify the answer with (default: the trust list's).

        Returns:
            ``(payload_type, payload_bytes)`` of the verified answer.

        Raises:
            NotFound / PermissionDenied: ``peer_id`` is not a peer.
            Unavailable: still unreachable after the retries (``in_doubt`` on a deadline).
            EapError: the peer's refusal, as the matching node error; or ``Unauthenticated`` /
                ``PermissionDenied`` if its answer does not verify.
        """
        peer = self.trust.require(peer_id)
        timeout = timeout if timeout is not None else self.settings.call_timeout_s
        method = self.channel(peer).unary_unary(
            SERVICE_PATH + rpc_name,
            request_serializer=types_pb2.SignedEnvelope.SerializeToString,
            response_deserializer=types_pb2.SignedEnvelope.FromString)
        delays = backoff_delays(attempts or self.attempts, self.backoff_base_s,
                                self.backoff_cap_s)
        while True:
            env = seal(self.node.keys, payload_bytes, payload_type, self.me, peer_id)
            try:
                answer = method(types_pb2.SignedEnvelope(**env.as_dict()), timeout=timeout)
                break
            except grpc.RpcError as error:
                exc = error_from_rpc(peer_id, rpc_name, error)
                delay = next(delays, None) if error.code() in RETRYABLE else None
                if delay is None:
                    raise exc from None
                log.info("%s; retrying in %.2f s", exc.message, delay)
                self._sleep(delay)
        keys = response_keys(answer) if response_keys else self.trust.peer_keys
        verified = open_envelope(SignedEnvelope.from_message(answer), me=self.me, peers=keys,
                                 replay_guard=self._guard, tls_peer=peer_id,
                                 max_payload=self.settings.max_message_bytes)
        return verified.payload_type, verified.payload

    # -- handshake ---------------------------------------------------------------------------------

    def hello(self, peer_id: str, *, timeout: float | None = None) -> Peer:
        """Handshake with ``peer_id``: negotiate version and capabilities, refresh its keys.

        Raises:
            FailedPrecondition: no common protocol version.
            EapError: as :meth:`call`.
        """
        from eap.node.federation.descriptor import describe

        peer = self.trust.require(peer_id)
        desc = describe(self.node, endpoint=self.settings.endpoint,
                        tls_dir=self.settings.tls_dir)
        req = fed.HelloRequest(
            node_id=self.me, protocol_versions=list(PROTOCOL_VERSIONS),
            capabilities=list(local_capabilities()),
            public_keys={k: v.public_key for k, v in self.node.keys.public_keys().items()},
            max_batch_records=int(self.node.config.max_batch_records),
            descriptor=desc.to_json().encode())

        def keys_for(answer: types_pb2.SignedEnvelope) -> PeerKeys:
            if peer.status != PENDING:
                return self.trust.peer_keys
            peek = fed.HelloResponse.FromString(answer.payload)
            return self.trust.keys_for_handshake(peer, peek.descriptor)

        try:
            ptype, payload = self.call(peer_id, "Hello", fed.HelloRequest.DESCRIPTOR.full_name,
                                       req.SerializeToString(), timeout=timeout,
                                       response_keys=keys_for)
        except EapError as exc:
            self.trust.record_error(peer_id, str(exc))
            raise
        if ptype != fed.HelloResponse.DESCRIPTOR.full_name:
            raise InvalidArgument(f"{peer_id} answered Hello with {ptype}")
        resp = fed.HelloResponse.FromString(payload)
        if resp.protocol_version not in PROTOCOL_VERSIONS:
            raise FailedPrecondition(f"{peer_id} chose protocol {resp.protocol_version!r}, "
                                     f"which this node does not speak")
        caps = tuple(sorted(set(resp.capabilities) & set(local_capabilities())))
        return self.trust.record_hello(peer, version=resp.protocol_version, capabilities=caps,
                                       descriptor=resp.descriptor)

    # -- batches -----------------------------------------------------------------------------------

    def pull_batches(self, peer_id: str, cursor: int, *, max_batches: int = 0,
                     timeout: float | None = None) -> BatchStream:
        """Stream ``peer_id``'s signed batches after ``cursor``, as raw ``RecordBatch`` bytes.

        Not retried here: the caller resumes from its cursor.  Iterating the result raises
        the peer's refusal or a broken stream as a node error (``Unavailable`` …).
        """
        peer = self.trust.require(peer_id)
        # The plain channel keeps the call cancellable; the trace context goes as metadata.
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        method = self._channel_pair(peer)[0].unary_stream(
            SERVICE_PATH + "PullBatches",
            request_serializer=fed.PullBatchesRequest.SerializeToString,
            response_deserializer=None)
        call = method(fed.PullBatchesRequest(node_id=self.me, cursor=cursor,
                                             max_batches=max_batches),
                      metadata=tuple(carrier.items()),
                      timeout=timeout if timeout is not None else 10 * self.settings.call_timeout_s)
        return BatchStream(peer_id, call)


class BatchStream:
    """The raw batches of one ``PullBatches`` call; iterate once, ``cancel()`` from any thread."""

    def __init__(self, peer_id: str, call: Any) -> None:
        self.peer_id = peer_id
        self._call = call

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._call
        except grpc.RpcError as error:
            raise error_from_rpc(self.peer_id, "PullBatches", error) from None

    def cancel(self) -> None:
        self._call.cancel()
