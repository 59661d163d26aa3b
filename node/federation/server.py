"""Inbound federation transport: the ``eap.v1.Federation`` servicer and its gRPC server.

Endpoints are thin and declared in one table (:data:`ENDPOINTS`): what they carry, what they
cost against the caller's rate limit, whether a peer that has not completed a handshake may
call them.  Every call is authenticated by the one :class:`~eap.node.federation.auth.Authenticator`
before an endpoint runs; node errors become gRPC status (with ``google.rpc`` details) only in
:func:`eap.node.api.status.abort_with`.

``PullBatches`` streams the stored batch bytes as they were signed, without parsing them:
its response serializer is the identity.

The two-phase transfer RPCs are dispatched to a handler installed by the transfer engine
(``FederationServicer(..., transfers=handler)`` or :meth:`FederationServicer.set_transfers`)
with methods ``on_prepare``, ``on_decision`` and ``on_status``, each taking the
:class:`~eap.node.crypto.VerifiedEnvelope` and returning ``(payload_type, payload_bytes)``
of the answer, which is sealed back to the caller.  Without a handler they are UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eap.node import telemetry
from eap.node.api.guard import MalformedRequestGuard, ThrottledLog
from eap.node.api.status import abort_with
from eap.node.crypto import VerifiedEnvelope, load_tls_material, seal
from eap.node.errors import (
    EapError,
    FailedPrecondition,
    PermissionDenied,
    Unavailable,
    invalid,
)
from eap.node.federation.auth import Authenticator, Caller, RateLimiter, describe_caller
from eap.node.federation.descriptor import PROTOCOL_VERSIONS, describe, version_rank
from eap.node.federation.peers import PENDING, TrustList
from eap.node.federation.settings import FederationSettings, local_capabilities
from eap.node.store import repos
from eap.node.telemetry.grpc import TracingInterceptor, trusted_peer
from eap.v1 import federation_pb2 as fed
from eap.v1 import types_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = fed.DESCRIPTOR.services_by_name["Federation"].full_name
HELLO_REQUEST = fed.HelloRequest.DESCRIPTOR.full_name
HELLO_RESPONSE = fed.HelloResponse.DESCRIPTOR.full_name
#: Batches read from the database per transaction while streaming.
PULL_CHUNK = 8


class TransferHandler(Protocol):
    """What the transfer engine plugs into the servicer."""

    def on_prepare(self, envelope: VerifiedEnvelope) -> tuple[str, bytes]: ...
    def on_decision(self, envelope: VerifiedEnvelope) -> tuple[str, bytes]: ...
    def on_status(self, envelope: VerifiedEnvelope) -> tuple[str, bytes]: ...


@dataclass(frozen=True)
class Endpoint:
    """Declaration of one federation RPC."""

    #: ``envelope`` (SignedEnvelope in, SignedEnvelope out) or ``pull`` (server stream).
    kind: str
    #: Tokens of the caller's rate-limit bucket one call spends.
    cost: float = 1.0
    #: Whether a ``pending`` peer (keys not known yet) may call it.
    allow_pending: bool = False
    #: Transfer handler method, for transfer RPCs.
    handler: str = ""


ENDPOINTS: dict[str, Endpoint] = {
    "Hello": Endpoint("envelope", allow_pending=True),
    "PullBatches": Endpoint("pull", cost=1.0),
    "PrepareTransfer": Endpoint("envelope", handler="on_prepare"),
    "DecideTransfer": Endpoint("envelope", handler="on_decision"),
    "GetTransferStatus": Endpoint("envelope", handler="on_status"),
    "MoveCustody": Endpoint("envelope", handler="on_move_custody"),
    "ReportRetirement": Endpoint("envelope", handler="on_report_retirement"),
    # A whole statement of the node's holdings: costlier than one transfer message.
    "GetHoldings": Endpoint("envelope", cost=5.0, handler="on_get_holdings"),
    # Settlement rounds (docs/settlement.md): a view or a proposal carries many obligations.
    "GetSettlementView": Endpoint("envelope", cost=5.0, handler="on_get_settlement_view"),
    "SignSettlement": Endpoint("envelope", cost=5.0, handler="on_sign_settlement"),
    "FinalizeSettlement": Endpoint("envelope", handler="on_finalize_settlement"),
    # Duplicate-device check; each blinded point also spends the device-check budget.
    "CheckDevices": Endpoint("envelope", handler="on_check_devices"),
}


def negotiate(offered: list[str] | tuple[str, ...]) -> str:
    """The highest protocol version both sides speak.

    Raises:
        FailedPrecondition: no version in common.
    """
    common = set(offered) & set(PROTOCOL_VERSIONS)
    if not common:
        raise FailedPrecondition(
            f"no common protocol version: peer offers {sorted(offered)}, this node speaks "
            f"{list(PROTOCOL_VERSIONS)}")
    return max(common, key=version_rank)


class FederationServicer:
    """The Federation service of one node (see the module docstring)."""

    def __init__(self, node: Any, *, trust: TrustList, settings: FederationSettings,
                 auth: Authenticator | None = None, transfers: TransferHandler | None = None):
        self.node = node
        self.me = node.node_id
        self.trust = trust
        self.settings = settings
        self.auth = auth or Authenticator(
            self.me, trust, limiter=RateLimiter(settings.rate_per_s, settings.burst),
            max_payload=settings.max_message_bytes)
        self.transfers = transfers
        #: Handlers installed by other extensions: handler name -> (payload type, function).
        self.handlers: dict[str, tuple[str, Any]] = {}
        self._desc_lock = threading.Lock()
        self._desc: tuple[str, bytes] | None = None

    def set_transfers(self, handler: TransferHandler | None) -> None:
        """Install (or remove) the handler of the transfer RPCs."""
        self.transfers = handler

    def add_handler(self, name: str, payload_type: str, fn: Any) -> None:
        """Serve the endpoint whose ``handler`` is ``name`` with ``fn(envelope)``, the request
        payload being of ``payload_type`` (used by extensions other than transfers)."""
        self.handlers[name] = (payload_type, fn)

    # -- plumbing ---------------------------------------------------------------------------------

    def descriptor_bytes(self) -> bytes:
        """This node's signed descriptor, re-signed when the active key changed."""
        active = self.node.keys.active_key_id
        with self._desc_lock:
            if self._desc is None or self._desc[0] != active:
                desc = describe(self.node, endpoint=self.settings.endpoint,
                                tls_dir=self.settings.tls_dir)
                self._desc = (active, desc.to_json().encode())
            return self._desc[1]

    def _seal(self, to: str, payload_type: str, payload: bytes) -> types_pb2.SignedEnvelope:
        env = seal(self.node.keys, payload, payload_type, self.me, to)
        return types_pb2.SignedEnvelope(**env.as_dict())

    def _envelope_rpc(self, name: str):
        spec = ENDPOINTS[name]

        def handle(request: types_pb2.SignedEnvelope, context: grpc.ServicerContext):
            try:
                caller = self.auth.caller(context, cost=spec.cost,
                                          allow_pending=spec.allow_pending)
                if name == "Hello":
                    payload_type, payload = self._hello(caller, request)
                else:
                    payload_type, payload = self._transfer(caller, spec, request)
                return self._seal(caller.node_id, payload_type, payload)
            except EapError as exc:
                _log_refusal(name, context, exc)
                abort_with(context, exc)
            except Exception:
                log.exception("internal error in Federation/%s", name)
                context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")

        return handle

    # -- Hello ------------------------------------------------------------------------------------

    def _hello(self, caller: Caller, request: types_pb2.SignedEnvelope) -> tuple[str, bytes]:
        keys = None
        if caller.peer.status == PENDING:
            # Keys are not known yet: the (still unverified) payload's descriptor must be
            # signed by the pinned key; its keys then verify the envelope itself.
            try:
                peek = fed.HelloRequest.FromString(request.payload)
            except DecodeError as exc:
                raise invalid("payload", "not a HelloRequest") from exc
            keys = self.trust.keys_for_handshake(caller.peer, peek.descriptor)
        env = self.auth.open(caller, request, expected_type=HELLO_REQUEST, keys=keys)
        try:
            hello = fed.HelloRequest.FromString(env.payload)
        except DecodeError as exc:
            raise invalid("payload", "not a HelloRequest") from exc
        if hello.node_id and hello.node_id != caller.node_id:
            raise PermissionDenied(f"Hello names {hello.node_id!r}, caller is {caller.node_id!r}")
        try:
            version = negotiate(list(hello.protocol_versions))
        except FailedPrecondition as exc:
            self.trust.record_error(caller.node_id, exc.message)
            raise
        caps = tuple(sorted(set(local_capabilities()) & set(hello.capabilities)))
        self.trust.record_hello(caller.peer, version=version, capabilities=caps,
                                descriptor=hello.descriptor)
        log.info("Hello from %s: %s, capabilities %s", caller.node_id, version, list(caps))
        resp = fed.HelloResponse(
            node_id=self.me, protocol_version=version, capabilities=caps,
            public_keys={k: v.public_key for k, v in self.node.keys.public_keys().items()},
            max_batch_records=self.settings.max_batch_records,
            descriptor=self.descriptor_bytes())
        return HELLO_RESPONSE, resp.SerializeToString()

    # -- transfers ---------------------------------------------------------------------------------

    def _transfer(self, caller: Caller, spec: Endpoint,
                  request: types_pb2.SignedEnvelope) -> tuple[str, bytes]:
        own = self.handlers.get(spec.handler)
        if own is not None:
            return own[1](self.auth.open(caller, request, expected_type=own[0]))
        handler = self.transfers
        if handler is None:
            raise _Unimplemented("this node does not take cross-node transfers (yet)")
        types = getattr(handler, "payload_types", None) or {}
        env = self.auth.open(caller, request, expected_type=types.get(spec.handler))
        return getattr(handler, spec.handler)(env)

    # -- PullBatches -------------------------------------------------------------------------------

    def pull_batches(self, request: fed.PullBatchesRequest, context: grpc.ServicerContext):
        try:
            caller = self.auth.caller(context, cost=ENDPOINTS["PullBatches"].cost)
            if request.node_id and request.node_id != caller.node_id:
                raise PermissionDenied(
                    f"request names {request.node_id!r}, caller is {caller.node_id!r}")
            if request.cursor >= 2**63:
                raise invalid("cursor", "must be a batch seq below 2^63")
            limit = min(request.max_batches or self.settings.max_batches_per_pull,
                        self.settings.max_batches_per_pull)
            cursor, sent = int(request.cursor), 0
            while sent < limit and context.is_active():
                with self.node.store.read() as conn:
                    rows = repos.batches_after(conn, cursor, min(PULL_CHUNK, limit - sent))
                if not rows:
                    break
                for row in rows:
                    yield bytes(row.payload)
                    cursor = int(row.seq)
                    sent += 1
            log.debug("PullBatches %s: %d batch(es) after %d", caller.node_id, sent,
                      request.cursor)
        except EapError as exc:
            _log_refusal("PullBatches", context, exc)
            abort_with(context, exc)
        except Exception:
            log.exception("internal error in Federation/PullBatches")
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")

    # -- registration ------------------------------------------------------------------------------

    def generic_handler(self) -> grpc.GenericRpcHandler:
        env_in = types_pb2.SignedEnvelope.FromString
        env_out = types_pb2.SignedEnvelope.SerializeToString
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._envelope_rpc(name), request_deserializer=env_in,
                response_serializer=env_out)
            for name, spec in ENDPOINTS.items() if spec.kind == "envelope"
        }
        handlers["PullBatches"] = grpc.unary_stream_rpc_method_handler(
            self.pull_batches, request_deserializer=fed.PullBatchesRequest.FromString,
            response_serializer=_identity)
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


class _Unimplemented(EapError):
    status = grpc.StatusCode.UNIMPLEMENTED


def _identity(data: bytes) -> bytes:
    return data


def _log_refusal(rpc: str, context: grpc.ServicerContext, exc: EapError) -> None:
    """``refused Federation/<rpc> from node <id> (<address>): <CODE> <message>``; the caller is
    named by the node id of its client certificate, or by its address when it has none."""
    level = logging.INFO if isinstance(exc, Unavailable) else logging.WARNING
    log.log(level, "refused Federation/%s from %s: %s %s", rpc, describe_caller(context),
            exc.status.name, exc)


def build_server(node: Any, *, settings: FederationSettings | None = None,
                 trust: TrustList | None = None, listen: str | None = None,
                 transfers: TransferHandler | None = None,
                 workers: int = 8) -> tuple[grpc.Server, int, FederationServicer]:
    """Create (not start) the mutual-TLS federation server.

    Returns:
        ``(server, bound port, servicer)``; ``listen`` may use port 0.

    Raises:
        ConfigError: TLS files missing or invalid.
    """
    settings = settings or FederationSettings.load(node.config)
    trust = trust or TrustList(node.store, node.node_id, cache_s=settings.trust_cache_s)
    tls = load_tls_material(settings.tls_dir, expected_node_id=node.node_id)
    servicer = FederationServicer(node, trust=trust, settings=settings, transfers=transfers)
    limit = settings.max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eap-fed"),
        options=[("grpc.max_receive_message_length", limit),
                 ("grpc.max_send_message_length", limit)],
        interceptors=(TracingInterceptor(telemetry.of(node), trusted_peer(trust)),
                      MalformedRequestGuard(ThrottledLog(log))),
    )
    server.add_generic_rpc_handlers((servicer.generic_handler(),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = listen or settings.listen
    port = server.add_secure_port(address, tls.server_credentials(require_client_auth=True))
    if port == 0:
        raise OSError(f"could not bind {address}")
    return server, port, servicer
