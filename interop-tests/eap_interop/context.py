"""What a case gets: connections to the node under test and set-up through its own API.

A :class:`Context` is built from :class:`Settings` (the runner's flags, or a pytest fixture)
and is all a case function sees.  Data a case needs (accounts, devices, readings, issued
bundles) is made through ``eap.v1.NodeApi`` like any client would, with request ids and names
unique to the run, so that the same node can be tested again and again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from eap.v1 import federation_pb2 as fed
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb
from eap_interop import protocol
from eap_interop.identity import DEFAULT_ENDPOINT, Identity, Kit
from eap_interop.peer import CAPABILITIES, FakePeer, NoPull

#: 2025-03-01T00:00:00Z: where the readings of the suite's devices start.
T0 = 1_740_787_200
HOUR = 3600
OPERATIONS = api.READ_PURPOSE_OPERATIONS
HELLO_REQUEST = fed.HelloRequest.DESCRIPTOR.full_name
HELLO_RESPONSE = fed.HelloResponse.DESCRIPTOR.full_name
CSV_HEADER = (
    "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator"
)
_OPERATOR = object()


class Skip(Exception):
    """The case cannot run against this target (feature or material missing)."""


@dataclass
class Settings:
    """How to reach the node under test (the runner's flags)."""

    server_host: str = "127.0.0.1"
    server_port: int = 7443
    #: Operator bearer token of the local API.
    token: str | None = None
    #: TLS on the local API (verified with ``ca``; ``cert``/``key`` presented when given).
    use_tls: bool = False
    server_host_override: str | None = None
    #: PEM: CA that signs the node's certificates; client certificate and key.  Used for the
    #: local API with ``use_tls`` and for the federation port (else taken from the kit).
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    federation_host: str | None = None
    federation_port: int | None = None
    #: The identity kit (``run.py identity``) enrolled on the node's trust list.
    kit: Kit | None = None
    #: ``host:port`` where the fake peer listens (the kit's descriptor endpoint must lead
    #: there); without it the transfer and holdings cases are skipped.
    peer_listen: str | None = None
    timeout: float = 15.0
    attestation_scheme: str = "operator-signed"
    attestation_evidence: str = "eap interop conformance suite"


@dataclass
class Production:
    """An owner account, a device, its imported readings and the bundles issued from them."""

    owner: pb.Account
    owner_token: str
    device: pb.Device
    meter_id: str
    whs: list[int]
    imported: api.ImportReadingsResponse
    issued: api.IssueRecordsResponse
    #: Issued bundles, by serial start.
    bundles: list[pb.RecordBundle] = field(default_factory=list)


def violations(error: grpc.RpcError) -> dict[str, str]:
    """``google.rpc.BadRequest`` field violations of a failed call: field -> description."""
    out: dict[str, str] = {}
    for detail in status_details(error):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for v in bad.field_violations:
                out.setdefault(v.field, v.description)
    return out


def status_details(error: grpc.RpcError) -> list[Any]:
    """The ``Any`` details of the ``grpc-status-details-bin`` trailer (empty if none)."""
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            return list(status_pb2.Status.FromString(value).details)
    return []


def describe_error(error: grpc.RpcError) -> str:
    return f"{error.code().name}: {error.details()}"  # type: ignore[attr-defined]


def utc(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class Context:
    """Connections and helpers for cases (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_id = secrets.token_hex(4)
        self._seq = itertools.count(1)
        self._federation: Federation | None = None

    # -- naming -----------------------------------------------------------------------------------

    def rid(self, label: str) -> str:
        """A request id (and name) unique to this run."""
        return f"interop-{self.run_id}-{label}-{next(self._seq)}"

    # -- local API --------------------------------------------------------------------------------

    @cached_property
    def channel(self) -> grpc.Channel:
        s = self.settings
        target = f"{s.server_host}:{s.server_port}"
        if not s.use_tls:
            return grpc.insecure_channel(target)
        creds = grpc.ssl_channel_credentials(
            root_certificates=s.ca, private_key=s.key, certificate_chain=s.cert
        )
        options = (
            [("grpc.ssl_target_name_override", s.server_host_override)]
            if s.server_host_override
            else []
        )
        return grpc.secure_channel(target, creds, options=options)

    @cached_property
    def stub(self) -> node_api_pb2_grpc.NodeApiStub:
        return node_api_pb2_grpc.NodeApiStub(self.channel)

    def call(self, method: str, request: Any, *, token: Any = _OPERATOR) -> Any:
        """Call ``NodeApi/method``; ``token`` defaults to the operator's, ``None`` sends none."""
        if token is _OPERATOR:
            token = self.settings.token
            if not token:
                raise Skip("no operator token (--token / --token_file)")
        metadata = () if token is None else (("authorization", f"Bearer {token}"),)
        return getattr(self.stub, method)(request, metadata=metadata, timeout=self.settings.timeout)

    def fails(
        self,
        code: grpc.StatusCode,
        method: str,
        request: Any,
        *,
        token: Any = _OPERATOR,
        what: str = "",
    ) -> grpc.RpcError:
        """Assert that the call fails with ``code``; returns the error."""
        try:
            self.call(method, request, token=token)
        except grpc.RpcError as error:
            got = error.code()  # type: ignore[attr-defined]
            assert got == code, f"{method}{what}: expected {code.name}, got {describe_error(error)}"
            return error
        raise AssertionError(f"{method}{what}: succeeded, expected {code.name}")

    def status(self) -> api.NodeStatus:
        return self.call("GetStatus", api.GetStatusRequest())

    @cached_property
    def node(self) -> api.NodeStatus:
        """The node's status when first asked (node id, zone, active key id)."""
        return self.status()

    @property
    def node_id(self) -> str:
        return self.node.node_id

    # -- set-up through the NodeApi ---------------------------------------------------------------

    def new_account(self, label: str = "acct") -> tuple[pb.Account, str]:
        res = self.call(
            "CreateAccount",
            api.CreateAccountRequest(
                request_id=self.rid(f"acct-{label}"), label=f"interop {label}"
            ),
        )
        assert res.account.id and res.token, "CreateAccount returned no id or token"
        return res.account, res.token

    def device_message(self, owner: str, *, capacity_w: int = 5_000) -> pb.Device:
        ref = self.rid("dev")
        return pb.Device(
            local_ref=ref,
            capacity_w=capacity_w,
            source=pb.ENERGY_SOURCE_SOLAR,
            technology=pb.TECHNOLOGY_PHOTOVOLTAIC,
            commissioned_on="2020-05-01",
            latitude=41.39,
            longitude=2.17,
            zone=self.node.zone,
            owner=owner,
            meter_id=f"meter-{ref}",
        )

    def attestation(self) -> pb.Attestation:
        return pb.Attestation(
            scheme=self.settings.attestation_scheme, evidence=self.settings.attestation_evidence
        )

    def new_device(self, owner: str, *, capacity_w: int = 5_000) -> pb.Device:
        msg = self.device_message(owner, capacity_w=capacity_w)
        dev = self.call(
            "RegisterDevice",
            api.RegisterDeviceRequest(
                request_id=self.rid("register"), device=msg, attestation=self.attestation()
            ),
        )
        assert dev.id, "RegisterDevice returned no device id"
        # The reply carries private fields only to OPERATIONS readers; keep what we sent.
        out = pb.Device()
        out.CopyFrom(dev)
        out.meter_id = msg.meter_id
        return out

    @staticmethod
    def readings_csv(meter_id: str, whs: Sequence[int], start: int = T0) -> bytes:
        """Hourly readings in the registry CSV layout (docs/meter-data.md), UTC."""
        rows = [CSV_HEADER] + [
            f"{utc(start + i * HOUR)},{utc(start + (i + 1) * HOUR)},{meter_id},{wh},NET"
            for i, wh in enumerate(whs)
        ]
        return ("\n".join(rows) + "\n").encode()

    def import_readings(self, meter_id: str, whs: Sequence[int]) -> api.ImportReadingsResponse:
        return self.call(
            "ImportReadings",
            api.ImportReadingsRequest(
                request_id=self.rid("import"),
                format="csv",
                content=self.readings_csv(meter_id, whs),
                filename="interop.csv",
            ),
        )

    def issue(self, device_id: str) -> api.IssueRecordsResponse:
        return self.call(
            "IssueRecords", api.IssueRecordsRequest(request_id=self.rid("issue"), device=device_id)
        )

    def list_bundles(self, **filters: Any) -> list[pb.RecordBundle]:
        """Every bundle matching ``filters`` (all pages), read for OPERATIONS."""
        out, token = [], ""
        while True:
            page = self.call(
                "ListBundles",
                api.ListBundlesRequest(
                    purpose=OPERATIONS, page_size=500, page_token=token, **filters
                ),
            )
            out += list(page.bundles)
            token = page.next_page_token
            if not token:
                return out

    def get_bundle(self, bundle_id: str) -> pb.RecordBundle:
        return self.call("GetBundle", api.GetBundleRequest(id=bundle_id, purpose=OPERATIONS))

    def production(self, whs: Sequence[int] = (900, 950, 1000)) -> Production:
        """A fresh owner and device, ``len(whs)`` hourly readings imported and issued."""
        owner, token = self.new_account("owner")
        device = self.new_device(owner.id)
        imported = self.import_readings(device.meter_id, whs)
        assert imported.readings == len(whs), (
            f"ImportReadings imported {imported.readings} readings of {len(whs)}"
        )
        issued = self.issue(device.id)
        assert issued.bundles == len(whs) and issued.wh == sum(whs), (
            f"IssueRecords issued {issued.bundles} bundles / {issued.wh} Wh, expected "
            f"{len(whs)} / {sum(whs)}"
        )
        bundles = sorted(self.list_bundles(device=device.id), key=lambda b: b.serial_start)
        return Production(
            owner, token, device, device.meter_id, list(whs), imported, issued, bundles
        )

    # -- federation -------------------------------------------------------------------------------

    def federation(self) -> Federation:
        """The federation client, or :class:`Skip` when the target has none configured."""
        if self._federation is None:
            s = self.settings
            if not s.federation_port:
                raise Skip("no federation port (--federation_port)")
            if s.kit is None:
                raise Skip("no client identity kit (--identity; see `run.py identity`)")
            ident = s.kit.client.with_tls(cert=s.cert, key=s.key, ca=s.ca)
            if not (ident.tls_cert and ident.tls_key and ident.tls_ca):
                raise Skip(
                    "the identity has no TLS client certificate, key and CA "
                    "(--cert/--key/--ca, or a kit minted with the federation CA)"
                )
            self._federation = Federation(self, ident)
        return self._federation

    @contextlib.contextmanager
    def fake_peer(self) -> Iterator[FakePeer]:
        """The suite's fake peer, listening for the length of a case (SPEC.md, "Peer
        set-up"): Hello with ``batches.v1``/``transfer.v1``, the cursor probe; at the end a
        Hello offering nothing, and the server stops."""
        f = self.federation()
        listen = self.settings.peer_listen
        if not listen:
            raise Skip("no --peer_listen: the node has no fake peer to pull the suite's batches "
                       "from")
        endpoint = protocol.parse_descriptor(f.me.descriptor).doc["endpoint"]
        if endpoint == DEFAULT_ENDPOINT:
            raise Skip(f"the kit's descriptor advertises {endpoint}, which serves nothing: make "
                       "the kit with `run.py identity --endpoint HOST:PORT` leading to "
                       "--peer_listen")
        f.hello(capabilities=CAPABILITIES)
        peer = FakePeer(f, listen)
        try:
            peer.start()
        except RuntimeError as exc:
            raise Skip(str(exc)) from None
        try:
            account, _ = self.new_account("probe")
            try:
                peer.probe(account.id)
            except NoPull as np:
                raise Skip(
                    f"the node did not pull from the fake peer ({listen}, advertised as "
                    f"{endpoint}) before answering a prepare "
                    f"({fed.TransferState.Name(np.answer.state)}: {np.answer.reason[:200]}); "
                    "is that endpoint reachable from the node?"
                ) from None
            yield peer
        finally:
            with contextlib.suppress(grpc.RpcError):
                f.hello(capabilities=())
            peer.stop()

    def close(self) -> None:
        if self._federation is not None:
            self._federation.close()
        if "channel" in self.__dict__:
            self.channel.close()


class Federation:
    """Calls to the node's ``eap.v1.Federation`` service as the suite's enrolled identity."""

    def __init__(self, ctx: Context, me: Identity) -> None:
        self.ctx = ctx
        self.me = me
        self._channels: dict[str, grpc.Channel] = {}
        self._keys: dict[str, bytes] | None = None

    @property
    def node_id(self) -> str:
        return self.ctx.node_id

    def channel(self, ident: Identity | None = None) -> grpc.Channel:
        """A mutual-TLS channel as ``ident``; the server certificate must name the node id."""
        ident = ident or self.me
        chan = self._channels.get(ident.node_id)
        if chan is None:
            s = self.ctx.settings
            creds = grpc.ssl_channel_credentials(
                root_certificates=ident.tls_ca or self.me.tls_ca,
                private_key=ident.tls_key,
                certificate_chain=ident.tls_cert,
            )
            target = f"{s.federation_host or s.server_host}:{s.federation_port}"
            chan = grpc.secure_channel(
                target, creds, options=[("grpc.ssl_target_name_override", self.node_id)]
            )
            self._channels[ident.node_id] = chan
        return chan

    def close(self) -> None:
        for chan in self._channels.values():
            chan.close()
        self._channels.clear()

    # -- envelopes --------------------------------------------------------------------------------

    def hello_payload(
        self,
        *,
        versions: Sequence[str] = ("eap.v1",),
        capabilities: Sequence[str] = (),
        ident: Identity | None = None,
    ) -> bytes:
        ident = ident or self.me
        return fed.HelloRequest(
            node_id=ident.node_id,
            protocol_versions=list(versions),
            capabilities=list(capabilities),
            public_keys={ident.key_id: ident.public_key},
            max_batch_records=100_000,
            descriptor=ident.descriptor,
        ).SerializeToString()

    def seal(
        self,
        payload: bytes,
        payload_type: str = HELLO_REQUEST,
        *,
        ident: Identity | None = None,
        **overrides: Any,
    ) -> pb.SignedEnvelope:
        """An envelope from ``ident`` (default the enrolled identity) to the node;
        ``overrides``: ``destination``, ``origin``, ``expires_at_ms``, ``ttl_s``, ``key``,
        ``key_id``."""
        ident = ident or self.me
        key = overrides.pop("key", ident.signing_key)
        origin = overrides.pop("origin", ident.node_id)
        destination = overrides.pop("destination", self.node_id)
        return protocol.seal(key, payload, payload_type, origin, destination, **overrides)

    def envelope_rpc(
        self, rpc: str, ident: Identity | None = None
    ) -> Callable[..., pb.SignedEnvelope]:
        return self.channel(ident).unary_unary(
            f"/eap.v1.Federation/{rpc}",
            request_serializer=pb.SignedEnvelope.SerializeToString,
            response_deserializer=pb.SignedEnvelope.FromString,
        )

    def call(
        self, rpc: str, envelope: pb.SignedEnvelope, *, ident: Identity | None = None
    ) -> pb.SignedEnvelope:
        return self.envelope_rpc(rpc, ident)(envelope, timeout=self.ctx.settings.timeout)

    def fails(
        self,
        code: grpc.StatusCode,
        rpc: str,
        envelope: pb.SignedEnvelope,
        *,
        ident: Identity | None = None,
        what: str = "",
    ) -> grpc.RpcError:
        try:
            self.call(rpc, envelope, ident=ident)
        except grpc.RpcError as error:
            got = error.code()  # type: ignore[attr-defined]
            assert got == code, f"{rpc}{what}: expected {code.name}, got {describe_error(error)}"
            return error
        raise AssertionError(f"{rpc}{what}: accepted, expected {code.name}")

    def hello(
        self, *, versions: Sequence[str] = ("eap.v1",), capabilities: Sequence[str] = ()
    ) -> tuple[pb.SignedEnvelope, fed.HelloResponse]:
        """A valid Hello; returns the answer envelope (checked to be a sealed HelloResponse
        from the node, signed by a key the response itself lists) and its payload."""
        answer = self.call(
            "Hello", self.seal(self.hello_payload(versions=versions, capabilities=capabilities))
        )
        try:
            resp = fed.HelloResponse.FromString(answer.payload)
        except Exception as exc:
            raise AssertionError(f"Hello answer payload is not a HelloResponse: {exc}") from exc
        keys = dict(resp.public_keys)
        for kid, raw in keys.items():
            assert protocol.key_id_for(raw) == kid, (
                f"HelloResponse key id {kid} does not match its key"
            )
        protocol.check_envelope(
            answer,
            keys=keys,
            origin=self.node_id,
            destination=self.me.node_id,
            payload_type=HELLO_RESPONSE,
        )
        self._keys = keys
        return answer, resp

    def node_keys(self) -> dict[str, bytes]:
        """The node's public signing keys (from a Hello), by key id."""
        if self._keys is None:
            self.hello()
        assert self._keys is not None
        return self._keys

    # -- batches ----------------------------------------------------------------------------------

    def pull(
        self,
        cursor: int,
        max_batches: int = 0,
        *,
        node_id: str | None = None,
        ident: Identity | None = None,
    ) -> Iterator[pb.RecordBatch]:
        """``PullBatches`` from ``cursor``; yields the batches as sent."""
        ident = ident or self.me
        method = self.channel(ident).unary_stream(
            "/eap.v1.Federation/PullBatches",
            request_serializer=fed.PullBatchesRequest.SerializeToString,
            response_deserializer=pb.RecordBatch.FromString,
        )
        yield from method(
            fed.PullBatchesRequest(
                node_id=ident.node_id if node_id is None else node_id,
                cursor=cursor,
                max_batches=max_batches,
            ),
            timeout=self.ctx.settings.timeout,
        )

    def pull_fails(self, code: grpc.StatusCode, *, what: str = "", **kw: Any) -> grpc.RpcError:
        try:
            list(self.pull(0, 1, **kw))
        except grpc.RpcError as error:
            got = error.code()  # type: ignore[attr-defined]
            assert got == code, (
                f"PullBatches{what}: expected {code.name}, got {describe_error(error)}"
            )
            return error
        raise AssertionError(f"PullBatches{what}: accepted, expected {code.name}")
