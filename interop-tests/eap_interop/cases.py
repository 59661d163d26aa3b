"""The interop cases: one plain function per :class:`Case`, taking a :class:`Context`.

Each function implements the case of the same name in ``interop-tests/SPEC.md`` (Purpose,
Server features, Procedure, Client asserts).  A case passes when it returns, fails on an
``AssertionError`` (or any other exception), and is skipped when it raises
:class:`~eap_interop.context.Skip`.  Cases are independent of one another and of their
order; each makes the data it needs through the node's own API.
"""

from __future__ import annotations

import enum
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from eap.v1 import federation_pb2 as fed
from eap.v1 import node_api_pb2 as api
from eap.v1 import types_pb2 as pb
from eap_interop import peer as fake
from eap_interop import protocol
from eap_interop.context import (
    HOUR,
    OPERATIONS,
    T0,
    Context,
    Skip,
    describe_error,
    violations,
)

Code = grpc.StatusCode
NODE_API = "eap.v1.NodeApi"
ACTIVE, SPLIT, RETIRED = pb.BUNDLE_STATUS_ACTIVE, pb.BUNDLE_STATUS_SPLIT, pb.BUNDLE_STATUS_RETIRED
#: NodeStatus counters a rejected request must leave alone.
COUNTERS = (
    "devices",
    "accounts",
    "readings",
    "bundles_active",
    "wh_metered",
    "wh_issued",
    "wh_active",
    "wh_retired",
    "wh_exported",
    "wh_imported",
)


class Case(enum.Enum):
    """Every interop case; the value is its name on the command line and in SPEC.md."""

    HEALTH_SERVING = "health_serving"
    REFLECTION_LISTS_NODE_API = "reflection_lists_node_api"
    STATUS_IDENTITY = "status_identity"
    UNAUTHENTICATED = "unauthenticated"
    READ_WITHOUT_PURPOSE = "read_without_purpose"
    BAD_DEVICE_FIELD_VIOLATIONS = "bad_device_field_violations"
    UNKNOWN_BUNDLE_NOT_FOUND = "unknown_bundle_not_found"
    IDEMPOTENT_REPLAY = "idempotent_replay"
    ISSUE_AND_CONSERVATION = "issue_and_conservation"
    SPLIT_LINEAGE = "split_lineage"
    RETIRE_THEN_TRANSFER = "retire_then_transfer"
    OVERSPEND_CHANGES_NOTHING = "overspend_changes_nothing"
    IDENTITY_KEYS_VERIFY_BATCHES = "identity_keys_verify_batches"
    BUNDLE_PROOF_OFFLINE = "bundle_proof_offline"
    CLAIM_RECEIPT_SIGNATURE = "claim_receipt_signature"
    FED_HELLO = "fed_hello"
    FED_HELLO_NO_COMMON_VERSION = "fed_hello_no_common_version"
    FED_PULL_BATCHES = "fed_pull_batches"
    FED_PULL_NAMES_CALLER = "fed_pull_names_caller"
    FED_UNKNOWN_PEER = "fed_unknown_peer"
    FED_WRONG_DESTINATION = "fed_wrong_destination"
    FED_EXPIRED_ENVELOPE = "fed_expired_envelope"
    FED_BAD_SIGNATURE = "fed_bad_signature"
    FED_REPLAYED_ENVELOPE = "fed_replayed_envelope"
    FED_WRONG_PAYLOAD_TYPE = "fed_wrong_payload_type"
    FED_TRANSFER_IN_WHOLE = "fed_transfer_in_whole"
    FED_TRANSFER_IN_PARTIAL = "fed_transfer_in_partial"
    FED_TRANSFER_REPLAYED_PREPARE = "fed_transfer_replayed_prepare"
    FED_TRANSFER_FORGERY_REFUSED = "fed_transfer_forgery_refused"
    FED_HOLDINGS_STATEMENT = "fed_holdings_statement"


@dataclass(frozen=True)
class CaseSpec:
    case: Case
    fn: Callable[[Context], None]
    #: ``api`` (local API only) or ``federation`` (needs the federation port and identity).
    area: str

    @property
    def summary(self) -> str:
        return " ".join((self.fn.__doc__ or "").strip().split("\n\n")[0].split())


CASES: dict[Case, CaseSpec] = {}


def case(
    which: Case, area: str = "api"
) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        CASES[which] = CaseSpec(which, fn, area)
        return fn

    return register


def _counters(status: api.NodeStatus) -> dict[str, int]:
    return {name: getattr(status, name) for name in COUNTERS}


def _unchanged(before: api.NodeStatus, after: api.NodeStatus, what: str) -> None:
    a, b = _counters(before), _counters(after)
    diff = {k: (a[k], b[k]) for k in COUNTERS if a[k] != b[k]}
    assert not diff, f"{what} changed GetStatus counters (before, after): {diff}"


def _conserved(status: api.NodeStatus, when: str) -> None:
    left = status.wh_issued + status.wh_imported - status.wh_exported
    right = status.wh_active + status.wh_retired
    assert left == right, (
        f"{when}: issued + imported - exported = {left} Wh but active + retired = {right} Wh"
    )


def _wh(bundle: pb.RecordBundle) -> int:
    return bundle.serial_end - bundle.serial_start


# -- local API ------------------------------------------------------------------------------------


@case(Case.HEALTH_SERVING)
def health_serving(ctx: Context) -> None:
    """grpc.health.v1 reports SERVING for eap.v1.NodeApi and for the server, without a token."""
    stub = health_pb2_grpc.HealthStub(ctx.channel)
    for service in (NODE_API, ""):
        resp = stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=ctx.settings.timeout
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, (
            f"health of {service or 'the server'!r} is "
            f"{health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
        )


def _reflect(
    ctx: Context, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    """One reflection exchange, over ``grpc.reflection.v1`` or else ``v1alpha`` (same wire)."""
    for service in (
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ):
        method = ctx.channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        try:
            return next(iter(method(iter([request]), timeout=ctx.settings.timeout)))
        except grpc.RpcError as error:
            if error.code() != Code.UNIMPLEMENTED:  # type: ignore[attr-defined]
                raise
    raise AssertionError("no server reflection service (neither v1 nor v1alpha)")


@case(Case.REFLECTION_LISTS_NODE_API)
def reflection_lists_node_api(ctx: Context) -> None:
    """Server reflection lists eap.v1.NodeApi and describes it as node_api.proto does."""
    listed = _reflect(ctx, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert NODE_API in names, f"reflection lists {sorted(names)}, not {NODE_API}"
    found = _reflect(ctx, reflection_pb2.ServerReflectionRequest(file_containing_symbol=NODE_API))
    assert not found.HasField("error_response"), (
        f"file_containing_symbol({NODE_API}): {found.error_response.error_message}"
    )
    expected = api.DESCRIPTOR.services_by_name["NodeApi"]
    for raw in found.file_descriptor_response.file_descriptor_proto:
        fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for svc in fdp.service:
            if fdp.package == "eap.v1" and svc.name == "NodeApi":
                methods = {
                    m.name: (m.input_type.lstrip("."), m.output_type.lstrip("."))
                    for m in svc.method
                }
                for m in expected.methods:
                    want = (m.input_type.full_name, m.output_type.full_name)
                    assert methods.get(m.name) == want, (
                        f"reflected NodeApi.{m.name} is {methods.get(m.name)}, expected {want}"
                    )
                return
    raise AssertionError(f"file_containing_symbol({NODE_API}) returned no eap.v1 NodeApi")


@case(Case.STATUS_IDENTITY)
def status_identity(ctx: Context) -> None:
    """GetStatus names the node, its protocol version and active key; counters are sane."""
    st = ctx.status()
    assert protocol.NODE_ID_RE.match(st.node_id), f"node_id {st.node_id!r} is not DNS-like"
    assert st.protocol_version == "eap.v1", f"protocol_version {st.protocol_version!r}"
    assert protocol.KEY_ID_RE.match(st.key_id), f"key_id {st.key_id!r} is not ed25519:<16 hex>"
    assert 1 <= len(st.zone) <= 32, f"zone {st.zone!r}"
    negative = {k: v for k, v in _counters(st).items() if v < 0}
    assert not negative, f"negative counters: {negative}"
    assert st.wh_active <= st.wh_issued + st.wh_imported, "more Wh active than ever held"


@case(Case.UNAUTHENTICATED)
def unauthenticated(ctx: Context) -> None:
    """Calls without a bearer token, or with an unknown one, are UNAUTHENTICATED and change
    nothing."""
    before = ctx.status()
    bogus = f"not-a-token-{ctx.run_id}"
    for token, how in ((None, " without a token"), (bogus, " with an unknown token")):
        ctx.fails(Code.UNAUTHENTICATED, "GetStatus", api.GetStatusRequest(), token=token, what=how)
        ctx.fails(
            Code.UNAUTHENTICATED,
            "ListBundles",
            api.ListBundlesRequest(purpose=api.READ_PURPOSE_TRANSPARENCY),
            token=token,
            what=how,
        )
        ctx.fails(
            Code.UNAUTHENTICATED,
            "CreateAccount",
            api.CreateAccountRequest(request_id=ctx.rid("unauth")),
            token=token,
            what=how,
        )
    _unchanged(before, ctx.status(), "unauthenticated calls")


@case(Case.READ_WITHOUT_PURPOSE)
def read_without_purpose(ctx: Context) -> None:
    """Every read without a purpose is INVALID_ARGUMENT with a violation on `purpose`."""
    bundle = ctx.production([500]).bundles[0]
    reads = [
        ("ListBundles", api.ListBundlesRequest()),
        ("ListDevices", api.ListDevicesRequest()),
        ("ListAccounts", api.ListAccountsRequest()),
        ("ListClaims", api.ListClaimsRequest()),
        ("GetBundle", api.GetBundleRequest(id=bundle.id)),
    ]
    for method, request in reads:
        err = ctx.fails(Code.INVALID_ARGUMENT, method, request, what=" without a purpose")
        fields = violations(err)
        assert "purpose" in fields, (
            f"{method} without a purpose: BadRequest field violations {sorted(fields)} do not "
            "name `purpose`"
        )


@case(Case.BAD_DEVICE_FIELD_VIOLATIONS)
def bad_device_field_violations(ctx: Context) -> None:
    """A device with several bad fields is INVALID_ARGUMENT naming each field, and changes
    nothing."""
    owner, _ = ctx.new_account("owner")
    before = ctx.status()
    good = ctx.device_message(owner.id)
    bad = pb.Device()
    bad.CopyFrom(good)
    bad.capacity_w = -5
    bad.source = pb.ENERGY_SOURCE_UNSPECIFIED
    bad.zone = "nowhere"
    err = ctx.fails(
        Code.INVALID_ARGUMENT,
        "RegisterDevice",
        api.RegisterDeviceRequest(
            request_id=ctx.rid("bad-device"), device=bad, attestation=ctx.attestation()
        ),
    )
    fields = violations(err)
    want = {"device.capacity_w", "device.source", "device.zone"}
    assert want <= set(fields), (
        f"BadRequest field violations {sorted(fields)} do not name all of {sorted(want)}"
    )
    empty = [f for f in want if not fields[f].strip()]
    assert not empty, f"field violations without a description: {empty}"
    _unchanged(before, ctx.status(), "a rejected RegisterDevice")
    # Nothing was kept: the same device, fixed, registers under its reference and meter id.
    dev = ctx.call(
        "RegisterDevice",
        api.RegisterDeviceRequest(
            request_id=ctx.rid("good-device"), device=good, attestation=ctx.attestation()
        ),
    )
    assert dev.id.startswith("dev_"), f"device id {dev.id!r} is not a dev_ pseudonym"


@case(Case.UNKNOWN_BUNDLE_NOT_FOUND)
def unknown_bundle_not_found(ctx: Context) -> None:
    """Reading, transferring or retiring a bundle the node does not hold is NOT_FOUND."""
    buyer, _ = ctx.new_account("buyer")
    before = ctx.status()
    ghost = f"{ctx.node_id}/{2**61}-{2**61 + 7}"
    ctx.fails(Code.NOT_FOUND, "GetBundle", api.GetBundleRequest(id=ghost, purpose=OPERATIONS))
    ctx.fails(
        Code.NOT_FOUND,
        "TransferBundle",
        api.TransferBundleRequest(
            request_id=ctx.rid("ghost-transfer"), bundle_id=ghost, to_account=buyer.id
        ),
    )
    ctx.fails(
        Code.NOT_FOUND,
        "RetireBundle",
        api.RetireBundleRequest(
            request_id=ctx.rid("ghost-retire"),
            bundle_id=ghost,
            beneficiary="interop",
            purpose="scope2-market-based",
        ),
    )
    _unchanged(before, ctx.status(), "requests on an unknown bundle")


@case(Case.IDEMPOTENT_REPLAY)
def idempotent_replay(ctx: Context) -> None:
    """A replayed request id returns the first result and changes nothing; the same id with
    other content is INVALID_ARGUMENT on `request_id`."""
    bundle = ctx.production([800]).bundles[0]
    buyer, _ = ctx.new_account("buyer")
    rid = ctx.rid("transfer")
    request = api.TransferBundleRequest(
        request_id=rid, bundle_id=bundle.id, to_account=buyer.id, wh=100
    )
    first = ctx.call("TransferBundle", request)
    after_first = ctx.status()
    again = ctx.call("TransferBundle", request)
    assert again == first, f"the replay answered\n{again}\nnot the first result\n{first}"
    _unchanged(after_first, ctx.status(), "a replayed TransferBundle")
    held = [b.id for b in ctx.list_bundles(owner=buyer.id)]
    assert held == [first.transferred.id], f"buyer holds {held} after a replay"
    for method, what, other in (
        (
            "TransferBundle",
            " with another amount",
            api.TransferBundleRequest(
                request_id=rid, bundle_id=bundle.id, to_account=buyer.id, wh=200
            ),
        ),
        (
            "RetireBundle",
            " as another operation",
            api.RetireBundleRequest(
                request_id=rid,
                bundle_id=first.remainder.id,
                beneficiary="interop",
                purpose="scope2-market-based",
            ),
        ),
    ):
        err = ctx.fails(Code.INVALID_ARGUMENT, method, other, what=f" reusing a request id{what}")
        assert "request_id" in violations(err), (
            f"reused request id{what}: field violations {sorted(violations(err))} do not name "
            "`request_id`"
        )
    _unchanged(after_first, ctx.status(), "a reused request id")
    # CreateAccount: the replay names the same account and does not return its token again.
    create = api.CreateAccountRequest(request_id=ctx.rid("account"), label="interop replay")
    one = ctx.call("CreateAccount", create)
    two = ctx.call("CreateAccount", create)
    assert one.token and two.account.id == one.account.id, "CreateAccount replay: other account"
    assert not two.token, "CreateAccount replay returned the account token a second time"


@case(Case.ISSUE_AND_CONSERVATION)
def issue_and_conservation(ctx: Context) -> None:
    """Readings imported through the API are issued once, as bundles that add up; GetStatus
    conserves Wh through issuance, a claim and a transfer."""
    s0 = ctx.status()
    _conserved(s0, "before")
    owner, _ = ctx.new_account("owner")
    device = ctx.new_device(owner.id)
    whs = [700, 810, 920, 1030, 640, 555]
    total = sum(whs)
    imp = ctx.import_readings(device.meter_id, whs)
    assert (imp.readings, imp.wh, list(imp.unknown_meters)) == (len(whs), total, []), (
        f"ImportReadings: {imp.readings} readings / {imp.wh} Wh / unknown "
        f"{list(imp.unknown_meters)}, expected {len(whs)} / {total} / []"
    )
    s1 = ctx.status()
    assert s1.readings - s0.readings == len(whs), "GetStatus.readings did not count the import"
    assert s1.wh_metered - s0.wh_metered == total, "GetStatus.wh_metered did not add the import"
    assert s1.wh_issued == s0.wh_issued, "importing readings issued records"
    again = ctx.import_readings(device.meter_id, whs)
    assert (again.readings, again.unchanged) == (0, len(whs)), (
        f"re-importing the same readings: {again.readings} new, {again.unchanged} unchanged"
    )
    issued = ctx.issue(device.id)
    assert (issued.bundles, issued.wh) == (len(whs), total), (
        f"IssueRecords: {issued.bundles} bundles / {issued.wh} Wh, expected {len(whs)} / {total}"
    )
    assert issued.batch_seq >= 1 and len(issued.merkle_root) == 32, (
        f"IssueRecords: batch_seq {issued.batch_seq}, merkle_root {len(issued.merkle_root)} B"
    )
    s2 = ctx.status()
    for name, delta in (
        ("wh_issued", total),
        ("wh_active", total),
        ("bundles_active", len(whs)),
        ("wh_retired", 0),
    ):
        got = getattr(s2, name) - getattr(s1, name)
        assert got == delta, f"GetStatus.{name} moved by {got} on issuance, expected {delta}"
    _conserved(s2, "after issuance")
    bundles = sorted(ctx.list_bundles(device=device.id), key=lambda b: b.serial_start)
    spans = sorted(
        (b.attributes.interval.start_unix, b.attributes.interval.end_unix, _wh(b)) for b in bundles
    )
    want = [(T0 + i * HOUR, T0 + (i + 1) * HOUR, wh) for i, wh in enumerate(whs)]
    assert spans == want, f"bundles (interval, Wh) {spans}, expected {want}"
    for b in bundles:
        assert b.id == f"{ctx.node_id}/{b.serial_start}-{b.serial_end}", f"bundle id {b.id}"
        assert (b.issuer, b.owner, b.status) == (ctx.node_id, owner.id, ACTIVE), (
            f"bundle {b.id}: issuer {b.issuer}, owner {b.owner}, status {b.status}"
        )
        a = b.attributes
        assert (a.device_id, a.zone, a.source, a.technology) == (
            device.id,
            device.zone,
            device.source,
            device.technology,
        ), f"bundle {b.id} attributes {a} do not match device {device.id}"
    serials = [(b.serial_start, b.serial_end) for b in bundles]
    assert all(e1 <= s2_ for (_, e1), (s2_, _) in itertools.pairwise(serials)), (
        f"serial ranges overlap: {serials}"
    )
    nothing = ctx.issue(device.id)
    assert (nothing.bundles, nothing.wh) == (0, 0), (
        f"issuing the same readings again issued {nothing.bundles} bundles / {nothing.wh} Wh"
    )
    s3 = ctx.status()
    assert s3.wh_issued == s2.wh_issued, "a second IssueRecords issued Wh again"
    # A claim moves Wh from active to retired; a local transfer moves none.
    buyer, _ = ctx.new_account("buyer")
    ctx.call(
        "RetireBundle",
        api.RetireBundleRequest(
            request_id=ctx.rid("retire"),
            bundle_id=bundles[0].id,
            wh=100,
            beneficiary="interop",
            purpose="scope2-market-based",
        ),
    )
    s4 = ctx.status()
    assert (s4.wh_retired - s3.wh_retired, s4.wh_active - s3.wh_active) == (100, -100), (
        f"a 100 Wh claim moved retired by {s4.wh_retired - s3.wh_retired}, active by "
        f"{s4.wh_active - s3.wh_active}"
    )
    ctx.call(
        "TransferBundle",
        api.TransferBundleRequest(
            request_id=ctx.rid("transfer"), bundle_id=bundles[1].id, to_account=buyer.id, wh=10
        ),
    )
    s5 = ctx.status()
    assert (s5.wh_active, s5.wh_retired, s5.wh_issued) == (
        s4.wh_active,
        s4.wh_retired,
        s4.wh_issued,
    ), "a local transfer changed Wh totals"
    _conserved(s5, "after a claim and a transfer")


def _check_lineage(bundle: pb.RecordBundle, parent_lineage: bytes) -> None:
    want = protocol.lineage(parent_lineage, bundle.id)
    assert bundle.lineage_hash == want, (
        f"lineage_hash of {bundle.id} is {bundle.lineage_hash}, SHA-256(0x03 || parent || id) "
        f"is {want}"
    )


@case(Case.SPLIT_LINEAGE)
def split_lineage(ctx: Context) -> None:
    """Splits yield children that sum to the parent, with lineage hashes that recompute from
    the batch leaf down, as docs/protocol.md says."""
    parent = ctx.production([1000]).bundles[0]
    issuer, start, end = parent.issuer, parent.serial_start, parent.serial_end
    assert not parent.parent_id, f"issued bundle {parent.id} has parent {parent.parent_id}"
    _check_lineage(parent, protocol.bundle_leaf(parent))
    buyer, _ = ctx.new_account("buyer")
    res = ctx.call(
        "TransferBundle",
        api.TransferBundleRequest(
            request_id=ctx.rid("split"), bundle_id=parent.id, to_account=buyer.id, wh=300
        ),
    )
    moved, rest = res.transferred, res.remainder
    assert moved.id == f"{issuer}/{start}-{start + 300}", f"moved child is {moved.id}"
    assert rest.id == f"{issuer}/{start + 300}-{end}", f"remainder is {rest.id}"
    for child, owner in ((moved, buyer.id), (rest, parent.owner)):
        assert (child.parent_id, child.owner, child.status) == (parent.id, owner, ACTIVE), (
            f"{child.id}: parent {child.parent_id!r}, owner {child.owner}, status {child.status}"
        )
        assert child.attributes == parent.attributes, f"{child.id} attributes differ"
        _check_lineage(child, bytes.fromhex(parent.lineage_hash))
        assert ctx.get_bundle(child.id).lineage_hash == child.lineage_hash
    now = ctx.get_bundle(parent.id)
    assert now.status == SPLIT, f"split parent is {pb.BundleStatus.Name(now.status)}"
    assert now.lineage_hash == parent.lineage_hash, "the parent's lineage hash changed"
    # A second generation, by a partial claim of the remainder.
    receipt = ctx.call(
        "RetireBundle",
        api.RetireBundleRequest(
            request_id=ctx.rid("claim"),
            bundle_id=rest.id,
            wh=200,
            beneficiary="interop",
            purpose="scope2-market-based",
        ),
    )
    claimed = receipt.bundle
    assert claimed.id == f"{issuer}/{start + 300}-{start + 500}", f"claimed child {claimed.id}"
    assert (claimed.parent_id, claimed.status) == (rest.id, RETIRED)
    _check_lineage(claimed, bytes.fromhex(rest.lineage_hash))
    last = ctx.get_bundle(f"{issuer}/{start + 500}-{end}")
    assert (last.parent_id, last.status) == (rest.id, ACTIVE)
    _check_lineage(last, bytes.fromhex(rest.lineage_hash))
    assert _wh(moved) + _wh(claimed) + _wh(last) == _wh(parent), "children do not sum"


@case(Case.RETIRE_THEN_TRANSFER)
def retire_then_transfer(ctx: Context) -> None:
    """A retired bundle never moves again: transfer and a second claim are
    FAILED_PRECONDITION and change nothing."""
    bundle = ctx.production([500]).bundles[0]
    buyer, _ = ctx.new_account("buyer")
    beneficiary = f"interop beneficiary {ctx.run_id}"
    receipt = ctx.call(
        "RetireBundle",
        api.RetireBundleRequest(
            request_id=ctx.rid("retire"),
            bundle_id=bundle.id,
            beneficiary=beneficiary,
            purpose="scope2-market-based",
        ),
    )
    b = receipt.bundle
    assert (b.id, b.status, _wh(b)) == (bundle.id, RETIRED, 500), (
        f"receipt bundle {b.id} {pb.BundleStatus.Name(b.status)} {_wh(b)} Wh"
    )
    assert (receipt.beneficiary, receipt.purpose) == (beneficiary, "scope2-market-based")
    assert receipt.id and len(receipt.digest) == 32 and len(receipt.signature) == 64, (
        f"receipt id {receipt.id!r}, digest {len(receipt.digest)} B, signature "
        f"{len(receipt.signature)} B"
    )
    assert protocol.KEY_ID_RE.match(receipt.key_id), f"receipt key_id {receipt.key_id!r}"
    before = ctx.status()
    ctx.fails(
        Code.FAILED_PRECONDITION,
        "TransferBundle",
        api.TransferBundleRequest(
            request_id=ctx.rid("transfer"), bundle_id=bundle.id, to_account=buyer.id
        ),
        what=" of a retired bundle",
    )
    ctx.fails(
        Code.FAILED_PRECONDITION,
        "TransferBundle",
        api.TransferBundleRequest(
            request_id=ctx.rid("transfer-part"), bundle_id=bundle.id, to_account=buyer.id, wh=10
        ),
        what=" of part of a retired bundle",
    )
    ctx.fails(
        Code.FAILED_PRECONDITION,
        "RetireBundle",
        api.RetireBundleRequest(
            request_id=ctx.rid("retire-again"),
            bundle_id=bundle.id,
            beneficiary=beneficiary,
            purpose="scope2-market-based",
        ),
        what=" of a retired bundle",
    )
    _unchanged(before, ctx.status(), "moving a retired bundle")
    now = ctx.get_bundle(bundle.id)
    assert (now.status, now.owner) == (RETIRED, bundle.owner), "the retired bundle changed"
    claims = ctx.call(
        "ListClaims",
        api.ListClaimsRequest(purpose=OPERATIONS, beneficiary=beneficiary, page_size=100),
    ).claims
    assert [c.id for c in claims] == [receipt.id], (
        f"ListClaims for the beneficiary: {[c.id for c in claims]}"
    )


@case(Case.OVERSPEND_CHANGES_NOTHING)
def overspend_changes_nothing(ctx: Context) -> None:
    """Spending more Wh than a bundle holds is FAILED_PRECONDITION and changes nothing."""
    bundle = ctx.production([400]).bundles[0]
    buyer, _ = ctx.new_account("buyer")
    before = ctx.status()
    ctx.fails(
        Code.FAILED_PRECONDITION,
        "TransferBundle",
        api.TransferBundleRequest(
            request_id=ctx.rid("over-transfer"), bundle_id=bundle.id, to_account=buyer.id, wh=401
        ),
        what=" of 401 Wh from a 400 Wh bundle",
    )
    ctx.fails(
        Code.FAILED_PRECONDITION,
        "RetireBundle",
        api.RetireBundleRequest(
            request_id=ctx.rid("over-retire"),
            bundle_id=bundle.id,
            wh=401,
            beneficiary="interop",
            purpose="scope2-market-based",
        ),
        what=" of 401 Wh from a 400 Wh bundle",
    )
    _unchanged(before, ctx.status(), "an over-spend")
    assert ctx.get_bundle(bundle.id) == bundle, "the over-spent bundle changed"
    assert ctx.list_bundles(owner=buyer.id) == [], "the buyer received something"
    # Exactly what it holds is allowed, and moves the bundle whole.
    whole = ctx.call(
        "TransferBundle",
        api.TransferBundleRequest(
            request_id=ctx.rid("exact"), bundle_id=bundle.id, to_account=buyer.id, wh=400
        ),
    )
    assert whole.transferred.id == bundle.id and not whole.HasField("remainder"), (
        f"moving all 400 Wh gave {whole.transferred.id} + remainder {whole.remainder.id!r}"
    )


# -- federation -----------------------------------------------------------------------------------


def _identity(ctx: Context) -> tuple[api.NodeIdentity, dict[str, bytes]]:
    """GetIdentity, its keys by id (each id derived from its key)."""
    ident = ctx.call("GetIdentity", api.GetIdentityRequest())
    keys = {}
    for k in ident.keys:
        assert len(k.public_key) == 32 and protocol.key_id_for(k.public_key) == k.key_id, (
            f"GetIdentity key {k.key_id!r} is not derived from its 32-byte public key"
        )
        keys[k.key_id] = k.public_key
    return ident, keys


@case(Case.IDENTITY_KEYS_VERIFY_BATCHES)
def identity_keys_verify_batches(ctx: Context) -> None:
    """GetIdentity names the node and returns the keys that verify its signed batches."""
    ident, keys = _identity(ctx)
    st = ctx.status()
    assert (ident.node_id, ident.zone) == (st.node_id, st.zone), (
        f"GetIdentity names {ident.node_id!r}/{ident.zone!r}, GetStatus {st.node_id!r}/{st.zone!r}"
    )
    assert "eap.v1" in ident.protocol_versions, f"protocol versions {ident.protocol_versions}"
    active = [k.key_id for k in ident.keys if k.active]
    assert active == [st.key_id] and ident.keys[0].active, (
        f"active keys {active} (first listed: {ident.keys[0].key_id}), GetStatus key {st.key_id}"
    )
    if ident.descriptor:
        desc = protocol.parse_descriptor(ident.descriptor)
        assert desc.node_id == ident.node_id and desc.active_key_id == st.key_id, (
            "the identity's descriptor names another node or active key"
        )
        assert set(keys) <= set(desc.keys), "GetIdentity keys missing from its descriptor"
    prod = ctx.production([430, 540])
    for bundle in prod.bundles:
        bp = ctx.call("GetBundleProof", api.GetBundleProofRequest(bundle_id=bundle.id))
        h = bp.proof.batch
        assert (h.issuer, h.seq, h.count, h.merkle_root) == (
            ctx.node_id, prod.issued.batch_seq, prod.issued.bundles, prod.issued.merkle_root
        ), f"the proof's batch header is not the header of batch {prod.issued.batch_seq}"
        header = protocol.batch_header(h.issuer, h.seq, h.count, h.merkle_root)
        assert h.key_id in keys and protocol.verify_ed25519(keys[h.key_id], h.signature, header), (
            f"batch {h.seq}: signature by {h.key_id} does not verify with the identity's keys"
        )
    try:
        f = ctx.federation()
    except Skip:
        return  # the local API part is the case; the pull is an extra when federation is set
    seq = prod.issued.batch_seq
    pulled = list(f.pull(seq - 1, 1))
    assert [b.seq for b in pulled] == [seq], f"PullBatches streamed {[b.seq for b in pulled]}"
    _verify_batch(ctx, pulled[0], keys)


@case(Case.BUNDLE_PROOF_OFFLINE)
def bundle_proof_offline(ctx: Context) -> None:
    """GetBundleProof of issued and split bundles verifies offline with the identity's keys;
    a SPLIT parent is FAILED_PRECONDITION, an unknown bundle NOT_FOUND."""
    _, keys = _identity(ctx)
    prod = ctx.production([700, 800])
    buyer, _ = ctx.new_account("buyer")
    parent, whole = prod.bundles
    moved = ctx.call(
        "TransferBundle",
        api.TransferBundleRequest(
            request_id=ctx.rid("split"), bundle_id=parent.id, to_account=buyer.id, wh=300
        ),
    )
    for bundle, depth in ((whole, 1), (moved.transferred, 2), (moved.remainder, 2)):
        bp = ctx.call("GetBundleProof", api.GetBundleProofRequest(bundle_id=bundle.id))
        assert bp.bundle.id == bundle.id and len(bp.proof.lineage) == depth, (
            f"proof of {bundle.id}: bundle {bp.bundle.id}, lineage {list(bp.proof.lineage)}"
        )
        problem = protocol.record_proof_problem(bp.proof, bp.bundle, keys)
        assert problem is None, f"proof of {bundle.id}: {problem}"
        assert bp.bundle.lineage_hash == bundle.lineage_hash, f"{bundle.id}: lineage hash differs"
        # positive control of the client's own verifier: a changed attribute is refused
        bad = pb.BundleProof()
        bad.CopyFrom(bp)
        bad.bundle.attributes.carbon_mg_per_kwh += 1
        assert protocol.record_proof_problem(bad.proof, bad.bundle, keys) is not None
    ctx.fails(Code.FAILED_PRECONDITION, "GetBundleProof",
              api.GetBundleProofRequest(bundle_id=parent.id), what=" of a SPLIT parent")
    ctx.fails(Code.NOT_FOUND, "GetBundleProof",
              api.GetBundleProofRequest(bundle_id=f"{ctx.node_id}/{2**61}-{2**61 + 7}"),
              what=" of an unknown bundle")


@case(Case.CLAIM_RECEIPT_SIGNATURE)
def claim_receipt_signature(ctx: Context) -> None:
    """A claim receipt's digest recomputes from its canonical body and its signature verifies
    with the identity's key."""
    import hashlib

    _, keys = _identity(ctx)
    bundle = ctx.production([640]).bundles[0]
    receipt = ctx.call(
        "RetireBundle",
        api.RetireBundleRequest(
            request_id=ctx.rid("retire"), bundle_id=bundle.id, wh=240,
            beneficiary=f"Caf\u00e9 \"Sol\" {ctx.run_id}", purpose="scope2-market-based",
            consumption=pb.Interval(start_unix=T0, end_unix=T0 + HOUR),
            consumption_zone=ctx.node.zone,
        ),
    )
    body = protocol.canonical_json(protocol.claim_body(receipt))
    digest = hashlib.sha256(protocol.CLAIM_DOMAIN + body).digest()
    assert receipt.digest == digest, (
        f"receipt digest {receipt.digest.hex()} is not SHA-256 of the tagged canonical body "
        f"{body[:200]!r}: {digest.hex()}"
    )
    assert receipt.key_id in keys, f"receipt key {receipt.key_id} is not a GetIdentity key"
    assert protocol.verify_ed25519(keys[receipt.key_id], receipt.signature, digest), (
        "the receipt's signature does not verify over its digest with the identity's key"
    )


@case(Case.FED_HELLO, "federation")
def fed_hello(ctx: Context) -> None:
    """Hello negotiates the highest common version and the common capabilities, in a sealed
    answer whose keys and descriptor verify."""
    f = ctx.federation()
    versions = ["eap.v0", "eap.v1"]
    offered = ["batches.v1", "transfer.v1", "x-interop-unknown.v1"]
    _, resp = f.hello(versions=versions, capabilities=offered)
    assert resp.node_id == ctx.node_id, f"HelloResponse.node_id {resp.node_id!r}"
    desc = protocol.parse_descriptor(resp.descriptor)
    assert desc.node_id == ctx.node_id, f"descriptor is for {desc.node_id!r}"
    assert desc.active_key_id == ctx.node.key_id, (
        f"descriptor's active key {desc.active_key_id} is not GetStatus.key_id {ctx.node.key_id}"
    )
    for kid, raw in resp.public_keys.items():
        assert desc.keys.get(kid) == raw, f"Hello key {kid} is not in the descriptor"
    assert ctx.node.key_id in resp.public_keys, "HelloResponse lacks the node's active key"
    common = [v for v in versions if v in desc.doc["protocol_versions"]]
    assert common, f"the node speaks {desc.doc['protocol_versions']}, none of {versions}"
    best = max(common, key=protocol.version_rank)
    assert resp.protocol_version == best, (
        f"negotiated {resp.protocol_version!r}, the highest common version is {best!r}"
    )
    want = set(offered) & set(desc.doc["capabilities"])
    assert set(resp.capabilities) == want, (
        f"negotiated capabilities {sorted(resp.capabilities)}, expected the common {sorted(want)}"
    )
    assert resp.max_batch_records > 0, "HelloResponse.max_batch_records is 0"
    # Leave the suite's trust-list entry with its real capabilities (none: it serves nothing).
    _, resp = f.hello(capabilities=())
    assert list(resp.capabilities) == [], f"nothing offered, got {list(resp.capabilities)}"


@case(Case.FED_HELLO_NO_COMMON_VERSION, "federation")
def fed_hello_no_common_version(ctx: Context) -> None:
    """A Hello offering no protocol version the node speaks is FAILED_PRECONDITION."""
    f = ctx.federation()
    f.fails(
        Code.FAILED_PRECONDITION,
        "Hello",
        f.seal(f.hello_payload(versions=["eap.v0"])),
        what=" offering only eap.v0",
    )
    f.hello()  # and the peer can still handshake


@case(Case.FED_PULL_BATCHES, "federation")
def fed_pull_batches(ctx: Context) -> None:
    """PullBatches streams consecutive signed batches whose signature, Merkle root and
    records verify; the batch of an IssueRecords call holds exactly its bundles."""
    f = ctx.federation()
    keys = f.node_keys()
    prod = ctx.production([610, 720, 830, 940])
    seq = prod.issued.batch_seq
    cursor = max(0, seq - 4)
    previous_end: int | None = None
    mine = None
    while cursor < seq:
        got = list(f.pull(cursor, seq - cursor))
        assert got, f"PullBatches(cursor={cursor}) streamed nothing; batch {seq} exists"
        for batch in got:
            cursor += 1
            assert batch.seq == cursor, f"batch seq {batch.seq} streamed after {cursor - 1}"
            cols = _verify_batch(ctx, batch, keys)
            first, last = protocol.serial_span(cols)
            assert previous_end is None or first >= previous_end, (
                f"batch {batch.seq} starts at serial {first}, before the previous batch's "
                f"end {previous_end}"
            )
            previous_end = last
            if batch.seq == seq:
                mine = (batch, cols)
            if cursor >= seq:
                break
    assert mine is not None
    batch, cols = mine
    assert batch.merkle_root == prod.issued.merkle_root, (
        "the streamed batch's Merkle root is not the one IssueRecords returned"
    )
    assert batch.count == prod.issued.bundles, (
        f"batch {seq} holds {batch.count} records, IssueRecords issued {prod.issued.bundles}"
    )
    records = {}
    for i in range(batch.count):
        records[(cols["serial_start"][i], cols["serial_end"][i])] = (
            cols["interval_start"][i],
            cols["interval_end"][i],
            batch.devices[cols["device"][i]],
            batch.zones[cols["zone"][i]],
            batch.owners[cols["owner"][i]],
            cols["source"][i],
            cols["technology"][i],
            cols["renewable_ppm"][i],
            cols["carbon_mg"][i],
        )
    bundles = {}
    for b in prod.bundles:
        a = b.attributes
        bundles[(b.serial_start, b.serial_end)] = (
            a.interval.start_unix,
            a.interval.end_unix,
            a.device_id,
            a.zone,
            b.owner,
            a.source,
            a.technology,
            a.renewable_ppm,
            a.carbon_mg_per_kwh,
        )
    assert records == bundles, (
        f"batch {seq} records\n{records}\ndo not match the issued bundles\n{bundles}"
    )
    one = list(f.pull(seq - 1, 1))
    assert [b.seq for b in one] == [seq], (
        f"PullBatches(cursor={seq - 1}, max_batches=1) streamed seqs {[b.seq for b in one]}"
    )


def _verify_batch(
    ctx: Context, batch: pb.RecordBatch, keys: dict[str, bytes]
) -> dict[str, list[int]]:
    """docs/federation.md §6 steps 1, 3-6 for one streamed batch."""
    where = f"batch {batch.seq}"
    assert batch.issuer == ctx.node_id, f"{where}: issuer {batch.issuer!r}"
    assert batch.count > 0, f"{where}: empty"
    assert batch.key_id in keys, f"{where}: key {batch.key_id} is not a key of the node"
    header = protocol.batch_header(batch.issuer, batch.seq, batch.count, batch.merkle_root)
    assert protocol.verify_ed25519(keys[batch.key_id], batch.signature, header), (
        f"{where}: signature does not verify over the batch header bytes"
    )
    cols = protocol.decode_columns(batch)
    problems = protocol.batch_rule_problems(batch, cols)
    assert not problems, f"{where} breaks record rules: {problems}"
    root = protocol.merkle_root(protocol.batch_leaves(batch, cols))
    assert root == batch.merkle_root, (
        f"{where}: Merkle root recomputed from the columns is {root.hex()}, signed root is "
        f"{batch.merkle_root.hex()}"
    )
    return cols


@case(Case.FED_PULL_NAMES_CALLER, "federation")
def fed_pull_names_caller(ctx: Context) -> None:
    """PullBatches naming a node other than the TLS caller is PERMISSION_DENIED."""
    f = ctx.federation()
    f.hello()
    f.pull_fails(
        Code.PERMISSION_DENIED, node_id=f"someone-else.{f.me.node_id}", what=" naming another node"
    )


@case(Case.FED_UNKNOWN_PEER, "federation")
def fed_unknown_peer(ctx: Context) -> None:
    """A caller with a valid federation certificate but not on the trust list is
    PERMISSION_DENIED, for Hello and PullBatches."""
    f = ctx.federation()
    kit = ctx.settings.kit
    stranger = kit.stranger if kit else None
    if stranger is None or not (stranger.tls_cert and stranger.tls_key):
        raise Skip("no stranger identity with a TLS certificate in the kit")
    f.hello()  # the enrolled identity is accepted: the refusal below is about the caller
    f.fails(
        Code.PERMISSION_DENIED,
        "Hello",
        f.seal(f.hello_payload(ident=stranger), ident=stranger),
        ident=stranger,
        what=f" from {stranger.node_id} (not on the trust list)",
    )
    f.pull_fails(
        Code.PERMISSION_DENIED,
        ident=stranger,
        what=f" from {stranger.node_id} (not on the trust list)",
    )


@case(Case.FED_WRONG_DESTINATION, "federation")
def fed_wrong_destination(ctx: Context) -> None:
    """An envelope sealed to another node is PERMISSION_DENIED."""
    f = ctx.federation()
    f.hello()
    f.fails(
        Code.PERMISSION_DENIED,
        "Hello",
        f.seal(f.hello_payload(), destination=f"elsewhere.{ctx.node_id}"),
        what=" to another node",
    )


@case(Case.FED_EXPIRED_ENVELOPE, "federation")
def fed_expired_envelope(ctx: Context) -> None:
    """An envelope past its expiry, or expiring too far ahead, is UNAUTHENTICATED."""
    f = ctx.federation()
    f.hello()
    now = protocol.now_ms()
    f.fails(
        Code.UNAUTHENTICATED,
        "Hello",
        f.seal(f.hello_payload(), expires_at_ms=now - 5 * 60_000),
        what=" expired 5 minutes ago",
    )
    f.fails(
        Code.UNAUTHENTICATED,
        "Hello",
        f.seal(f.hello_payload(), expires_at_ms=now + 60 * 60_000),
        what=" expiring in an hour",
    )


@case(Case.FED_BAD_SIGNATURE, "federation")
def fed_bad_signature(ctx: Context) -> None:
    """Envelopes with a broken signature, altered payload or unknown key are
    UNAUTHENTICATED."""
    f = ctx.federation()
    f.hello()
    env = f.seal(f.hello_payload())
    flipped = bytearray(env.signature)
    flipped[10] ^= 0x01
    bad = pb.SignedEnvelope()
    bad.CopyFrom(env)
    bad.signature = bytes(flipped)
    f.fails(Code.UNAUTHENTICATED, "Hello", bad, what=" with a flipped signature bit")
    altered = pb.SignedEnvelope()
    altered.CopyFrom(f.seal(f.hello_payload()))
    altered.payload = f.hello_payload(capabilities=["batches.v1"])
    f.fails(Code.UNAUTHENTICATED, "Hello", altered, what=" with a payload altered after signing")
    other = Ed25519PrivateKey.generate()
    f.fails(
        Code.UNAUTHENTICATED,
        "Hello",
        f.seal(f.hello_payload(), key=other),
        what=" signed by a key the node does not know",
    )
    f.fails(
        Code.UNAUTHENTICATED,
        "Hello",
        f.seal(f.hello_payload(), key=other, key_id=f.me.key_id),
        what=" signed by another key under the enrolled key id",
    )


@case(Case.FED_REPLAYED_ENVELOPE, "federation")
def fed_replayed_envelope(ctx: Context) -> None:
    """The same envelope delivered twice is accepted once, then UNAUTHENTICATED."""
    f = ctx.federation()
    env = f.seal(f.hello_payload())
    try:
        f.call("Hello", env)
    except grpc.RpcError as error:
        raise AssertionError(f"first delivery refused: {describe_error(error)}") from None
    f.fails(Code.UNAUTHENTICATED, "Hello", env, what=" replaying an accepted envelope")


@case(Case.FED_WRONG_PAYLOAD_TYPE, "federation")
def fed_wrong_payload_type(ctx: Context) -> None:
    """A Hello whose envelope names another payload type is INVALID_ARGUMENT."""
    f = ctx.federation()
    f.hello()
    f.fails(
        Code.INVALID_ARGUMENT,
        "Hello",
        f.seal(f.hello_payload(), fed.TransferPrepare.DESCRIPTOR.full_name),
        what=" carrying an eap.v1.TransferPrepare payload type",
    )



# -- federation: the client as issuer and source (the fake peer) ----------------------------------

PREPARED = fed.TRANSFER_STATE_PREPARED
COMMITTED = fed.TRANSFER_STATE_COMMITTED
ABORTED = fed.TRANSFER_STATE_ABORTED


def _state(status: fed.TransferStatus, want: int, what: str) -> None:
    assert status.state == want, (
        f"{what}: {fed.TransferState.Name(status.state)} ({status.reason[:300]!r}), expected "
        f"{fed.TransferState.Name(want)}"
    )


def _delta(before: api.NodeStatus, after: api.NodeStatus, what: str, **moved: int) -> None:
    """``after`` - ``before`` is ``moved`` for those counters, 0 for the others."""
    a, b = _counters(before), _counters(after)
    got = {k: b[k] - a[k] for k in COUNTERS if b[k] != a[k] or k in moved}
    want = {k: moved.get(k, 0) for k in got}
    want.update({k: v for k, v in moved.items()})
    assert got == want, f"{what}: GetStatus counters moved by {got}, expected {want}"


def _pulled(peer: fake.FakePeer, since: int, pub: fake.Published) -> None:
    cursors = peer.pulls[since:]
    assert any(c < pub.batch.seq for c in cursors), (
        f"the node did not pull batch #{pub.batch.seq} from the fake peer before its answer "
        f"(PullBatches cursors {cursors})"
    )


def _import(
    ctx: Context, peer: fake.FakePeer, offer: fake.Offer, pub: fake.Published
) -> tuple[pb.Account, fed.TransferPrepare, api.NodeStatus]:
    """An account, PrepareTransfer (must be PREPARED after pulling ``pub``), COMMIT with the
    custody record (must be COMMITTED); returns the account, the prepare, GetStatus before."""
    account, _ = ctx.new_account("import")
    before = ctx.status()
    since = len(peer.pulls)
    msg = peer.prepare_message(offer, account.id)
    _state(peer.send_prepare(msg), PREPARED, f"PrepareTransfer of {offer.bundle.id}")
    _pulled(peer, since, pub)
    _state(peer.commit(msg), COMMITTED, f"DecideTransfer(COMMITTED) of {offer.bundle.id}")
    return account, msg, before


def _check_imported(
    ctx: Context, peer: fake.FakePeer, offer: fake.Offer, pub: fake.Published, owner: str
) -> None:
    """The import is ACTIVE with the record's attributes and proves with the issuer's key."""
    want, me = offer.bundle, peer.me
    got = ctx.get_bundle(want.id)
    assert got.status == ACTIVE and got.owner == owner, (
        f"{want.id}: {pb.BundleStatus.Name(got.status)} for {got.owner!r}, expected ACTIVE for "
        f"{owner}"
    )
    assert (got.issuer, got.serial_start, got.serial_end, got.parent_id, got.lineage_hash) == (
        want.issuer, want.serial_start, want.serial_end, want.parent_id, want.lineage_hash
    ), f"{want.id}: issuer, serials, parent or lineage hash differ from what was sent: {got}"
    record = pub.records[offer.proof.index].attributes(cell=fake.CELL)
    assert got.attributes == record, (
        f"{want.id}: attributes {got.attributes} are not the record's (cell from the custody "
        f"record): {record}"
    )
    bp = ctx.call("GetBundleProof", api.GetBundleProofRequest(bundle_id=want.id))
    assert bp.bundle.id == want.id, f"GetBundleProof({want.id}) proves {bp.bundle.id}"
    problem = protocol.record_proof_problem(bp.proof, bp.bundle, {me.key_id: me.public_key})
    assert problem is None, f"proof of {want.id} with the issuer's key: {problem}"
    h = bp.proof.batch
    assert (h.issuer, h.seq, h.merkle_root) == (me.node_id, pub.batch.seq, pub.batch.merkle_root), (
        f"proof of {want.id} names batch {h.issuer}#{h.seq}, not the published one"
    )
    assert list(bp.proof.lineage) == list(offer.proof.lineage), (
        f"proof lineage {list(bp.proof.lineage)}, expected {list(offer.proof.lineage)}"
    )


@case(Case.FED_TRANSFER_IN_WHOLE, "federation")
def fed_transfer_in_whole(ctx: Context) -> None:
    """A whole record of the client's published batch is imported: PREPARED, then COMMITTED
    with the issuer's custody record; ACTIVE with the record's attributes, provable."""
    with ctx.fake_peer() as peer:
        pub = peer.publish([1000])
        offer = peer.offer(pub)
        account, _, before = _import(ctx, peer, offer, pub)
        after = ctx.status()
        _delta(before, after, "the import", wh_imported=1000, wh_active=1000, bundles_active=1)
        _conserved(after, "after the import")
        _check_imported(ctx, peer, offer, pub, account.id)


@case(Case.FED_TRANSFER_IN_PARTIAL, "federation")
def fed_transfer_in_partial(ctx: Context) -> None:
    """A split child of a published record is imported with its lineage; the rest of the
    record never arrives."""
    with ctx.fake_peer() as peer:
        pub = peer.publish([1000])
        r = pub.records[0]
        offer = peer.offer(pub, 0, (r.serial_start, r.serial_start + 400))
        account, _, before = _import(ctx, peer, offer, pub)
        after = ctx.status()
        _delta(before, after, "the import", wh_imported=400, wh_active=400, bundles_active=1)
        _conserved(after, "after the import")
        assert len(offer.proof.lineage) == 2
        _check_imported(ctx, peer, offer, pub, account.id)
        rest = f"{peer.me.node_id}/{r.serial_start + 400}-{r.serial_end}"
        ctx.fails(Code.NOT_FOUND, "GetBundle", api.GetBundleRequest(id=rest, purpose=OPERATIONS),
                  what=" of the part never sent")


@case(Case.FED_TRANSFER_REPLAYED_PREPARE, "federation")
def fed_transfer_replayed_prepare(ctx: Context) -> None:
    """A re-sent PREPARE or COMMIT (new envelope, same payload) gets the first answer and
    changes nothing."""
    with ctx.fake_peer() as peer:
        pub = peer.publish([700])
        offer = peer.offer(pub)
        account, _ = ctx.new_account("import")
        msg = peer.prepare_message(offer, account.id)
        p1 = peer.send_prepare(msg)
        _state(p1, PREPARED, "PrepareTransfer")
        s1 = ctx.status()
        p2 = peer.send_prepare(msg)
        assert p2 == p1, f"the replayed prepare was answered {p2}, the first {p1}"
        _unchanged(s1, ctx.status(), "the replayed prepare")
        c1 = peer.commit(msg)
        _state(c1, COMMITTED, "DecideTransfer(COMMITTED)")
        s3 = ctx.status()
        _delta(s1, s3, "the commit", wh_imported=700, wh_active=700, bundles_active=1)
        decision = fed.TransferDecision(transfer_id=msg.transfer_id, decision=COMMITTED,
                                        custody=peer.decisions[msg.transfer_id].custody)
        c2 = peer.send_decision(decision)
        assert c2 == c1, f"the replayed commit was answered {c2}, the first {c1}"
        _unchanged(s3, ctx.status(), "the replayed commit")
        got = ctx.get_bundle(offer.bundle.id)
        assert got.status == ACTIVE and _wh(got) == 700 and got.owner == account.id, (
            f"{got.id}: {pb.BundleStatus.Name(got.status)}, {_wh(got)} Wh, owner {got.owner}"
        )
        owned = ctx.list_bundles(owner=account.id)
        assert [b.id for b in owned] == [offer.bundle.id], (
            f"the account holds {[b.id for b in owned]}, expected the one import"
        )


@case(Case.FED_TRANSFER_FORGERY_REFUSED, "federation")
def fed_transfer_forgery_refused(ctx: Context) -> None:
    """Prepares without proof, with other attributes, with a record outside the signed batch
    or from an equivocating batch are ABORTED; a COMMIT without custody is
    FAILED_PRECONDITION; nothing is imported."""
    with ctx.fake_peer() as peer:
        account, _ = ctx.new_account("import")
        pub = peer.publish([500, 600, 700])
        _, r1, r2 = pub.records
        before = ctx.status()
        since = len(peer.pulls)
        good = peer.prepare_message(peer.offer(pub, 0), account.id)
        _state(peer.send_prepare(good), PREPARED, "PrepareTransfer of a genuine record")
        _pulled(peer, since, pub)
        # (b) the bundle announces attributes other than its record's
        other = peer.offer(pub, 1)
        other.bundle.attributes.carbon_mg_per_kwh += 1
        # (c) a record not in the signed batch: B's header and R0's path
        r3 = peer.records([300])[0]
        outside = fake.Published(pub.batch, [r3, r1, r2], [r3.leaf(), *pub.leaves[1:]])
        # (d) another batch signed under the seq the node synced
        twin = peer.sign_batch([r2], pub.batch.seq)
        forged = {
            "(a) no proof": peer.prepare_message(peer.offer(pub, 1), account.id, proof=False),
            "(b) attributes not the record's": peer.prepare_message(other, account.id),
            "(c) record not in the signed batch": peer.prepare_message(
                peer.offer(outside, 0), account.id
            ),
            "(d) equivocating batch": peer.prepare_message(peer.offer(twin, 0), account.id),
        }
        for what, msg in forged.items():
            answer = peer.send_prepare(msg)
            _state(answer, ABORTED, f"PrepareTransfer {what}")
            assert answer.reason.strip(), f"PrepareTransfer {what}: ABORTED without a reason"
        try:
            peer.commit(good, custody=False)
        except grpc.RpcError as error:
            got = error.code()  # type: ignore[attr-defined]
            assert got == Code.FAILED_PRECONDITION, (
                f"COMMIT without custody: expected FAILED_PRECONDITION, got {describe_error(error)}"
            )
        else:
            raise AssertionError("COMMIT without the issuer's custody record was accepted")
        try:
            held = ctx.get_bundle(good.bundle.id)
        except grpc.RpcError as error:
            assert error.code() == Code.NOT_FOUND, describe_error(error)  # type: ignore[attr-defined]
        else:
            assert held.status != ACTIVE, f"{held.id} is ACTIVE after a COMMIT without custody"
        _state(peer.abort(good), ABORTED, "DecideTransfer(ABORTED) of the genuine prepare")
        _unchanged(before, ctx.status(), "the refused prepares and commit")
        for r in (r1, r2, r3):
            ctx.fails(Code.NOT_FOUND, "GetBundle",
                      api.GetBundleRequest(id=f"{peer.me.node_id}/{r.serial_start}-{r.serial_end}",
                                           purpose=OPERATIONS), what=" of a refused import")


@case(Case.FED_HOLDINGS_STATEMENT, "federation")
def fed_holdings_statement(ctx: Context) -> None:
    """GetHoldings answers a statement signed by the node, made for the caller and its nonce,
    listing what the caller's issuer has there."""
    with ctx.fake_peer() as peer:
        pub = peer.publish([700])
        offer = peer.offer(pub)
        _import(ctx, peer, offer, pub)
        nonce = secrets.token_bytes(32)
        _, signed = peer.holdings(nonce)
    assert signed.signer == ctx.node_id, f"statement signed by {signed.signer!r}"
    key = peer.keys.get(signed.key_id)
    assert key is not None, f"statement key {signed.key_id!r} is not one of {sorted(peer.keys)}"
    assert protocol.verify_ed25519(key, signed.signature, fake.HOLDINGS_DOMAIN + signed.body), (
        "the statement's signature does not verify over EAP-HOLDINGS-v1\\0 || body"
    )
    st = pb.HoldingsStatement.FromString(signed.body)
    me = peer.me.node_id
    assert (st.node_id, st.audience, st.nonce) == (ctx.node_id, me, nonce), (
        f"statement of {st.node_id!r} for {st.audience!r} with nonce {st.nonce.hex()}, expected "
        f"{ctx.node_id!r} for {me!r} with {nonce.hex()}"
    )
    assert abs(st.at_ms - protocol.now_ms()) < 600_000, f"statement taken at {st.at_ms}"
    mine = [i for i in st.issuers if i.issuer == me]
    assert len(mine) == 1, f"{len(mine)} IssuerHoldings for {me}"
    h, b = mine[0], offer.bundle
    assert any(r.start <= b.serial_start and b.serial_end <= r.end for r in h.active), (
        f"{b.id} is not inside an active range of {me}: {[(r.start, r.end) for r in h.active]}"
    )
    spans = sorted(
        (r.start, r.end, name)
        for name in ("active", "retired", "exporting", "importing")
        for r in getattr(h, name)
    )
    for (s1, e1, n1), (s2, e2, n2) in itertools.pairwise(spans):
        assert s2 >= e1, f"{me}: {n1} {s1}-{e1} overlaps {n2} {s2}-{e2}"


assert set(CASES) == set(Case), f"cases without a function: {set(Case) - set(CASES)}"
