"""``eap.v1.NodeApi`` servicer: authenticate, call the domain, convert. Nothing more."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from typing import Any

import grpc

from eap.node.api import convert
from eap.node.api.status import abort_with
from eap.node.domain import holder_auth
from eap.node.domain.node import Node
from eap.node.errors import (
    EapError,
    FailedPrecondition,
    FieldViolation,
    PermissionDenied,
    Unauthenticated,
    invalid,
)
from eap.node.records.enums import Purpose
from eap.node.records.models import Principal
from eap.v1 import federation_pb2 as fed
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc

log = logging.getLogger(__name__)

#: Source-side transfer states (``eap.node.federation.transfers``) on the wire.
_TRANSFER_STATES = {
    "preparing": fed.TRANSFER_STATE_PREPARING,
    "prepared": fed.TRANSFER_STATE_PREPARED,
    "committed": fed.TRANSFER_STATE_COMMITTED,
    "aborted": fed.TRANSFER_STATE_ABORTED,
}


#: Per RPC: field names the domain reports -> the request's own (proto) field names.
_WIRE_NAMES: dict[str, dict[str, str]] = {
    "ImportReadings": {"path": "content", "file": "content"},
    "IssueRecords": {"since": "since_unix"},
    "GetBundle": {"bundle_id": "id"},
    "TransferBundle": {"to": "to_account", "to.node": "to_account", "to.account": "to_account"},
    "GetAggregates": {"from": "from_unix", "to": "to_unix"},
}
#: Per RPC carrying a file: violations located inside it are named under this request field.
_INNER_FIELD = {"ImportReadings": "content"}


def _wire_name(rpc: str, request, name: str) -> str:
    """``name`` as a path into ``request``: renamed per :data:`_WIRE_NAMES`, or put under the
    file field for a location inside an uploaded file (``content.readings[m@t].wh``)."""
    renames = _WIRE_NAMES.get(rpc, {})
    if name in renames:
        return renames[name]
    root, rest = re.match(r"([^.\[]*)(.*)", name).groups()
    if root in renames:
        return renames[root] + rest
    inner = _INNER_FIELD.get(rpc)
    if inner and root not in request.DESCRIPTOR.fields_by_name:
        return f"{inner}.{name}"
    return name


def _on_the_wire(rpc: str, request, exc: EapError) -> EapError:
    """``exc`` with every field violation named after the request's own fields."""
    exc.violations = [
        FieldViolation(_wire_name(rpc, request, v.field), v.description) for v in exc.violations
    ]
    return exc


def _purpose(value: int) -> Purpose:
    """A read purpose off the wire; an unknown number is INVALID_ARGUMENT, not INTERNAL."""
    try:
        return Purpose(value)
    except ValueError:
        raise invalid("purpose", f"unknown read purpose {value}") from None


def _rpc(method):
    """Authenticate the caller, run the method, map node errors to status at the edge."""

    @functools.wraps(method)
    def wrapper(self: NodeApiServicer, request, context: grpc.ServicerContext):
        try:
            principal = self.authenticate(context)
            return method(self, request, context, principal)
        except EapError as exc:
            abort_with(context, _on_the_wire(method.__name__, request, exc))
        except Exception:
            log.exception("internal error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")

    return wrapper


def _stream_rpc(method):
    """:func:`_rpc` for server-streaming methods: errors raised while streaming (not only
    before the first message) are mapped to a status too."""

    @functools.wraps(method)
    def wrapper(self: NodeApiServicer, request, context: grpc.ServicerContext):
        try:
            principal = self.authenticate(context)
            yield from method(self, request, context, principal)
        except EapError as exc:
            abort_with(context, _on_the_wire(method.__name__, request, exc))
        except Exception:
            log.exception("internal error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the node's log")

    return wrapper


#: ``device import`` column -> its path in a DeviceRegistration (RegisterDevices violations).
_REGISTRATION_FIELDS = {
    "ref": "device.local_ref",
    "capacity_w": "device.capacity_w",
    "source": "device.source",
    "technology": "device.technology",
    "commissioned": "device.commissioned_on",
    "lat": "device.latitude",
    "lon": "device.longitude",
    "zone": "device.zone",
    "owner": "device.owner",
    "meter_id": "device.meter_id",
    "renewable_ppm": "device.renewable_ppm",
    "carbon": "device.carbon_mg_per_kwh",
    "attestation": "attestation.evidence",
    "attestation_scheme": "attestation.scheme",
}
#: Field violations carried by one RegisterDevices refusal (status details travel in
#: trailing metadata, which has a size limit).
_MAX_WIRE_VIOLATIONS = 100


def _registration_row(reg) -> dict:
    d, a = reg.device, reg.attestation
    row = {
        "ref": d.local_ref,
        "capacity_w": d.capacity_w,
        "source": d.source,
        "technology": d.technology,
        "commissioned": d.commissioned_on,
        "lat": d.latitude,
        "lon": d.longitude,
        "zone": d.zone,
        "owner": d.owner,
        "meter_id": d.meter_id,
        "carbon": d.carbon_mg_per_kwh,
        "attestation": a.evidence,
        "attestation_scheme": a.scheme,
    }
    if d.renewable_ppm:
        row["renewable_ppm"] = d.renewable_ppm
    return row


def _registration_violations(exc: EapError) -> EapError:
    out = []
    for v in exc.violations[:_MAX_WIRE_VIOLATIONS]:
        m = re.match(r"^(devices\[\d+\])(?:\.(.*))?$", v.field)
        if m and m.group(2):
            out.append(
                FieldViolation(
                    f"{m.group(1)}.{_REGISTRATION_FIELDS.get(m.group(2), m.group(2))}",
                    v.description,
                )
            )
        else:
            out.append(v)
    exc.violations = out
    return exc


class NodeApiServicer(node_api_pb2_grpc.NodeApiServicer):
    def __init__(self, node: Node, *, transfers: Any = None) -> None:
        self.node = node
        #: The cross-node transfer engine (``eap.node.federation.transfers.Transfers``) of the
        #: running federation; ``eap-node serve`` sets it.  Without it, a ``TransferBundle`` to
        #: ``NODE_ID/ACCOUNT`` fails with FAILED_PRECONDITION.
        self.transfers = transfers

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        meta = dict(context.invocation_metadata() or ())
        auth = meta.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise Unauthenticated("missing `authorization: Bearer <token>` metadata")
        principal = self.node.principal_for_token(auth.removeprefix("Bearer ").strip())
        if principal is None:
            raise Unauthenticated("unknown bearer token")
        return dataclasses.replace(principal, via="grpc")

    @_rpc
    def GetStatus(self, request, context, principal):
        return convert.status(self.node.status())

    @_rpc
    def CreateAccount(self, request, context, principal):
        res = self.node.create_account(
            request_id=request.request_id,
            label=request.label,
            identity=request.identity,
            disclose=request.disclose,
            holder_public_key=request.holder_public_key,
            principal=principal,
        )
        return api.CreateAccountResponse(account=convert.account(res.account), token=res.token)

    @_rpc
    def ListAccounts(self, request, context, principal):
        page = self.node.list_accounts(
            purpose=_purpose(request.purpose),
            principal=principal,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return api.ListAccountsResponse(
            accounts=[convert.account(a) for a in page.items], next_page_token=page.next_token
        )

    @_rpc
    def RegisterDevice(self, request, context, principal):
        d = request.device
        dev = self.node.register_device(
            request_id=request.request_id,
            local_ref=d.local_ref,
            capacity_w=d.capacity_w,
            source=d.source,
            technology=d.technology,
            commissioned_on=d.commissioned_on,
            latitude=d.latitude,
            longitude=d.longitude,
            zone=d.zone,
            owner=d.owner,
            meter_id=d.meter_id,
            renewable_ppm=d.renewable_ppm if d.renewable_ppm else None,
            carbon_mg=d.carbon_mg_per_kwh,
            attestation_scheme=request.attestation.scheme,
            attestation_evidence=request.attestation.evidence,
            principal=principal,
        )
        return convert.device(dev)

    @_rpc
    def ListDevices(self, request, context, principal):
        page = self.node.list_devices(
            purpose=_purpose(request.purpose),
            principal=principal,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return api.ListDevicesResponse(
            devices=[convert.device(d) for d in page.items], next_page_token=page.next_token
        )

    @_rpc
    def ImportReadings(self, request, context, principal):
        res = self.node.import_readings_bytes(
            request.content,
            filename=request.filename,
            request_id=request.request_id,
            fmt=request.format,
            principal=principal,
        )
        return api.ImportReadingsResponse(
            readings=res.readings,
            wh=res.wh,
            unchanged=res.unchanged,
            unknown_meters=res.unknown_meters,
        )

    @_rpc
    def IssueRecords(self, request, context, principal):
        # One bounded batch per call, its own transaction (eap.node.domain.issuance): a client
        # calls again until batch_seq is 0, as `eap-node issue` loops in-process.
        res = self.node.issue(
            request_id=request.request_id,
            device=request.device,
            since=request.since_unix,
            principal=principal,
        )
        return api.IssueRecordsResponse(
            bundles=res.bundles, wh=res.wh, batch_seq=res.batch_seq, merkle_root=res.merkle_root
        )

    @_rpc
    def ListBundles(self, request, context, principal):
        page = self.node.list_bundles(
            purpose=_purpose(request.purpose),
            principal=principal,
            owner=request.owner,
            status=request.status,
            device=request.device,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return api.ListBundlesResponse(
            bundles=[convert.bundle(b) for b in page.items], next_page_token=page.next_token
        )

    @_rpc
    def GetBundle(self, request, context, principal):
        purpose = _purpose(request.purpose)
        from eap.node.domain.policy import require_record_purpose

        require_record_purpose(purpose, principal)
        return convert.bundle(
            self.node.get_bundle(request.id, purpose=purpose, principal=principal)
        )

    @_rpc
    def TransferBundle(self, request, context, principal):
        if "/" in request.to_account:
            return self._transfer_out(request, context, principal)
        res = self.node.transfer(
            request.bundle_id,
            to_account=request.to_account,
            wh=request.wh,
            request_id=request.request_id,
            principal=principal,
            price_minor=request.price_minor,
            currency=request.currency,
            holder=holder_auth.from_wire(request.holder_auth),
        )
        out = api.TransferBundleResponse(transferred=convert.bundle(res.transferred))
        if res.remainder:
            out.remainder.CopyFrom(convert.bundle(res.remainder))
        return out

    def _transfer_out(self, request, context, principal):
        """``to_account`` = ``NODE_ID/ACCOUNT``: an exactly-once transfer to a peer node."""
        if self.transfers is None:
            raise FailedPrecondition(
                "cross-node transfers need the federation of `eap-node serve` "
                "(TLS material in the node home)"
            )
        wait_s = None
        remaining = context.time_remaining()
        if remaining is not None:  # answer before the caller's deadline
            wait_s = max(0.0, min(self.transfers.settings.inline_wait_s, remaining - 0.5))
        first, rec = self.transfers.send(
            request.bundle_id,
            to=request.to_account,
            wh=request.wh,
            request_id=request.request_id,
            principal=principal,
            wait_s=wait_s,
            price_minor=request.price_minor,
            currency=request.currency,
            holder=holder_auth.from_wire(request.holder_auth),
        )
        out = api.TransferBundleResponse(
            transferred=convert.bundle(first.exported),
            transfer=api.CrossNodeTransfer(
                id=rec.id,
                to=f"{rec.peer}/{rec.to_account}",
                wh=rec.wh,
                state=_TRANSFER_STATES[rec.state],
                settled=rec.settled,
                reason=rec.reason or rec.last_error or "",
            ),
        )
        if first.remainder:
            out.remainder.CopyFrom(convert.bundle(first.remainder))
        return out

    @_rpc
    def RetireBundle(self, request, context, principal):
        rec = self.node.retire(
            request.bundle_id,
            beneficiary=request.beneficiary,
            purpose=request.purpose,
            wh=request.wh,
            consumption_start=request.consumption.start_unix,
            consumption_end=request.consumption.end_unix,
            consumption_zone=request.consumption_zone,
            request_id=request.request_id,
            principal=principal,
            holder=holder_auth.from_wire(request.holder_auth),
        )
        return convert.claim(rec)

    @_rpc
    def ListClaims(self, request, context, principal):
        page = self.node.list_claims(
            purpose=_purpose(request.purpose),
            principal=principal,
            beneficiary=request.beneficiary,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return api.ListClaimsResponse(
            claims=[convert.claim(c) for c in page.items], next_page_token=page.next_token
        )

    @_rpc
    def GetIdentity(self, request, context, principal):
        return convert.node_identity(self.node)

    @_rpc
    def GetBundleProof(self, request, context, principal):
        from eap.node.domain import proofs

        return convert.bundle_proof(proofs.bundle_proof(self.node, request.bundle_id))

    @_rpc
    def SetPeerLimits(self, request, context, principal):
        """Credit limit and settlement threshold towards a peer node: operator only."""
        from eap.node.domain import peer_credit

        if principal.kind != "operator":
            raise PermissionDenied("SetPeerLimits is reserved to the node operator")
        return _peer_balance(
            peer_credit.set_limits(
                self.node.store,
                self.node.node_id,
                peer=request.peer,
                currency=request.currency,
                credit_limit_minor=request.credit_limit_minor,
                settle_threshold_minor=request.settle_threshold_minor,
            )
        )

    @_rpc
    def ListPeerBalances(self, request, context, principal):
        """Running balances with every peer node per currency: operator only."""
        from eap.node.domain import peer_credit

        if principal.kind != "operator":
            raise PermissionDenied("ListPeerBalances is reserved to the node operator")
        return api.ListPeerBalancesResponse(
            balances=[
                _peer_balance(b) for b in peer_credit.balances(self.node.store, self.node.node_id)
            ]
        )

    @_rpc
    def RunAudit(self, request, context, principal):
        """Federation-wide reconciliation (``eap.node.federation.audit``): operator only."""
        if principal.kind != "operator":
            raise PermissionDenied("RunAudit is reserved to the node operator")
        if self.transfers is None:
            raise FailedPrecondition(
                "the audit needs the federation of `eap-node serve` (TLS material in the node home)"
            )
        from eap.node.federation.audit import Auditor

        return Auditor.from_engine(self.transfers).run(skip_peers=request.skip_peers)

    @_rpc
    def GetMatchingReport(self, request, context, principal):
        from eap.node.domain import matching

        for i, h in enumerate(request.load):
            if h.wh < 0 or h.hour_unix % 3600:
                raise invalid(f"load[{i}]", "hour_unix must be a whole hour and wh >= 0")
        load = None
        if request.load:
            load = {}
            for h in request.load:
                load[h.hour_unix] = load.get(h.hour_unix, 0) + h.wh
        report = matching.build(
            self.node,
            account=request.account,
            start=request.start_unix,
            end=request.end_unix,
            load=load,
            zone=request.zone,
            principal=principal,
        )
        return convert.matching_report(report)

    @_rpc
    def RunSettlement(self, request, context, principal):
        """A settlement round coordinated by this node (``eap.node.federation.settlement``):
        operator only; needs the federation; idempotent by request id."""
        if principal.kind != "operator":
            raise PermissionDenied("RunSettlement is reserved to the node operator")
        if self.transfers is None:
            raise FailedPrecondition(
                "settlement rounds need the federation of `eap-node serve` "
                "(TLS material in the node home)"
            )
        from eap.node.federation.settlement import Settlement

        return Settlement.from_engine(self.transfers).run(
            request.period, request_id=request.request_id
        )

    def _settlement_reader(self):
        from eap.node.federation.settlement import Settlement

        if self.transfers is not None:
            return Settlement.from_engine(self.transfers)
        return Settlement(self.node)

    @_rpc
    def GetSettlementRound(self, request, context, principal):
        if principal.kind != "operator":
            raise PermissionDenied("settlement rounds are reserved to the node operator")
        return self._settlement_reader().get(request.round_id)

    @_rpc
    def ListSettlementRounds(self, request, context, principal):
        if principal.kind != "operator":
            raise PermissionDenied("settlement rounds are reserved to the node operator")
        return self._settlement_reader().list(
            page_size=request.page_size, page_token=request.page_token
        )

    @_rpc
    def ListAuditEntries(self, request, context, principal):
        """Who read an account's personal data: its holder (own rows) or the operator."""
        token = request.page_token
        if token and not token.isdigit():
            raise invalid("page_token", "not a token this node issued")
        page = self.node.audit_entries(
            account=request.account,
            principal=principal,
            after=int(token or 0),
            limit=request.page_size,
        )
        return api.ListAuditEntriesResponse(
            entries=[api.AuditEntry(**e.as_dict()) for e in page.items],
            next_page_token=page.next_token,
        )

    @_rpc
    def GetAggregates(self, request, context, principal):
        """Regulator aggregates (``eap.node.domain.aggregates``)."""
        report = self.node.aggregates(
            zone=request.zone,
            start=request.from_unix,
            end=request.to_unix,
            k=request.k,
            epsilon=request.epsilon,
            bound_wh=request.bound_wh,
            purpose=_purpose(request.purpose),
            principal=principal,
        )
        totals = report.totals()
        return api.AggregatesReport(
            zone=report.zone,
            from_unix=report.start,
            to_unix=report.end,
            k=report.k,
            epsilon=report.epsilon,
            mechanism=report.mechanism,
            noise_scale=report.noise_scale,
            bound_wh=report.bound_wh,
            cells=[
                api.AggregateCell(
                    metric=c.metric,
                    hour_start_unix=c.hour,
                    source=c.source,
                    wh=c.wh or 0,
                    suppressed=c.suppressed,
                )
                for c in report.cells
            ],
            suppressed_cells=report.suppressed,
            total_issued_wh=totals["issued"],
            total_transferred_wh=totals["transferred"],
            total_claimed_wh=totals["claimed"],
        )

    @_rpc
    def RegisterDevices(self, request, context, principal):
        try:
            res = self.node.register_devices(
                [_registration_row(r) for r in request.devices],
                request_id=request.request_id,
                principal=principal,
            )
        except EapError as exc:
            raise _registration_violations(exc) from None
        return api.RegisterDevicesResponse(
            devices=res.devices, first_id=res.first_id, last_id=res.last_id
        )

    @_stream_rpc
    def StreamBundles(self, request, context, principal):
        for b in self._stream(
            self.node.list_bundles,
            request,
            principal,
            owner=request.owner,
            status=request.status,
            device=request.device,
        ):
            yield convert.bundle(b)

    @_stream_rpc
    def StreamDevices(self, request, context, principal):
        for d in self._stream(self.node.list_devices, request, principal):
            yield convert.device(d)

    @_stream_rpc
    def StreamClaims(self, request, context, principal):
        for c in self._stream(
            self.node.list_claims, request, principal, beneficiary=request.beneficiary
        ):
            yield convert.claim(c)

    @staticmethod
    def _stream(list_page, request, principal, **filters):
        """Keyset pages of ``list_page`` from the request's page token on, one at a time
        (:func:`eap.node.domain.listings.walk`): the node holds one page, never the list."""
        from eap.node.domain.listings import walk

        bound = functools.partial(
            list_page, purpose=_purpose(request.purpose), principal=principal, **filters
        )
        return walk(bound, start=request.page_token)


def _peer_balance(b) -> api.PeerBalance:
    return api.PeerBalance(
        peer=b.peer,
        currency=b.currency,
        credit_limit_minor=b.credit_limit_minor,
        settle_threshold_minor=b.settle_threshold_minor,
        receivable_minor=b.receivable_minor,
        payable_minor=b.payable_minor,
        balance_minor=b.balance_minor,
    )
