"""Domain objects ↔ ``eap.v1`` messages."""

from __future__ import annotations

from eap.node.records import models
from eap.v1 import node_api_pb2 as api
from eap.v1 import types_pb2 as pb


def interval(start: int, end: int) -> pb.Interval:
    return pb.Interval(start_unix=start, end_unix=end)


def bundle(b: models.Bundle) -> pb.RecordBundle:
    return pb.RecordBundle(
        id=b.id,
        issuer=b.issuer,
        serial_start=b.serial_start,
        serial_end=b.serial_end,
        attributes=pb.RecordAttributes(
            source=b.source,
            technology=b.technology,
            renewable_ppm=b.renewable_ppm,
            carbon_mg_per_kwh=b.carbon_mg,
            zone=b.zone,
            cell=b.cell,
            interval=interval(b.interval_start, b.interval_end),
            device_id=b.device_id,
        ),
        status=b.status,
        owner=b.owner,
        parent_id=b.parent_id or "",
        lineage_hash=b.lineage_hash,
        issued_at_ms=b.issued_at_ms,
        held_by=b.held_by or "",
    )


def bundle_from(m: pb.RecordBundle) -> models.Bundle:
    """The record a ``RecordBundle`` message carries (the inverse of :func:`bundle`)."""
    a = m.attributes
    return models.Bundle(
        id=m.id,
        issuer=m.issuer,
        serial_start=m.serial_start,
        serial_end=m.serial_end,
        device_id=a.device_id,
        interval_start=a.interval.start_unix,
        interval_end=a.interval.end_unix,
        source=a.source,
        technology=a.technology,
        renewable_ppm=a.renewable_ppm,
        carbon_mg=a.carbon_mg_per_kwh,
        zone=a.zone,
        cell=a.cell,
        owner=m.owner,
        status=m.status,
        parent_id=m.parent_id or None,
        lineage_hash=m.lineage_hash,
        issued_at_ms=m.issued_at_ms,
        held_by=m.held_by or None,
    )


def device(d: models.Device) -> pb.Device:
    return pb.Device(
        id=d.id,
        local_ref=d.local_ref,
        capacity_w=d.capacity_w,
        source=d.source,
        technology=d.technology,
        commissioned_on=d.commissioned_on,
        latitude=d.latitude or 0.0,
        longitude=d.longitude or 0.0,
        zone=d.zone,
        cell=d.cell,
        owner=d.owner,
        meter_id=d.meter_id or "",
        renewable_ppm=d.renewable_ppm,
        carbon_mg_per_kwh=d.carbon_mg,
        attested_by=d.attested_by,
        attestation_ref=d.attestation_ref,
        registered_at_ms=d.registered_at_ms,
    )


def account(a: models.Account) -> pb.Account:
    return pb.Account(
        id=a.id,
        label=a.label,
        identity=a.identity or "",
        disclosed=a.disclosed,
        balance_wh=a.balance_wh,
        created_at_ms=a.created_at_ms,
        holder_public_key=a.holder_public_key or b"",
    )


def claim(c: models.ClaimReceipt) -> pb.ClaimReceipt:
    return pb.ClaimReceipt(
        id=c.id,
        bundle=bundle(c.bundle),
        beneficiary=c.beneficiary,
        purpose=c.purpose,
        consumption=interval(c.consumption_start, c.consumption_end),
        consumption_zone=c.consumption_zone,
        claimed_at_ms=c.claimed_at_ms,
        digest=c.digest,
        signature=c.signature,
        key_id=c.key_id,
        sd_receipt=c.sd_receipt,
    )


def status(s: models.NodeStatus) -> api.NodeStatus:
    return api.NodeStatus(**s.to_dict())


def bundle_proof(p) -> pb.BundleProof:
    """A :class:`~eap.node.domain.proofs.ProvenBundle` as ``BundleProof``."""
    return pb.BundleProof(bundle=bundle(p.bundle), proof=p.proof, cell=p.cell)


def identity(ident, descriptor: bytes = b"") -> api.NodeIdentity:
    """A :class:`~eap.node.domain.proofs.Identity` as ``NodeIdentity``."""
    return api.NodeIdentity(
        node_id=ident.node_id,
        zone=ident.zone,
        protocol_versions=list(ident.protocol_versions),
        keys=[
            api.PublicKey(key_id=k.key_id, public_key=k.public_key,
                          active=k.key_id == ident.active_key_id,
                          not_after_ms=k.valid_until_ms or 0)
            for k in ident.keys
        ],
        descriptor=descriptor,
    )


def node_identity(node) -> api.NodeIdentity:
    """The ``NodeIdentity`` of ``node``, with its signed descriptor when it federates (TLS
    material in its home, as ``eap-node serve`` decides), else an empty one."""
    from eap.node.domain import proofs
    from eap.node.federation.runtime import tls_configured

    descriptor = b""
    if tls_configured(node):
        from eap.node.federation.descriptor import describe

        descriptor = describe(node).to_json().encode()
    return identity(proofs.identity(node), descriptor)


# -- hourly matching report --------------------------------------------------------------------

_HOUR_FIELDS = (
    "load_wh", "claimed_wh", "cfe_wh", "matched_cfe_wh", "cfe_score", "market_g", "location_g",
    "residual_mg_per_kwh", "location_mg_per_kwh", "residual_basis",
)


def matching_report(r) -> api.MatchingReport:
    """A :class:`~eap.node.domain.matching.MatchingReport` on the wire."""
    return api.MatchingReport(
        node_id=r.node_id,
        subject=r.subject,
        zone=r.zone,
        start_unix=r.start,
        end_unix=r.end,
        load_basis=r.load_basis,
        hours=[
            api.MatchingHour(hour_unix=h.hour, **{k: getattr(h, k) for k in _HOUR_FIELDS})
            for h in r.hours
        ],
        flows=[api.MatchingFlow(source_node=f.source, target_node=f.target, wh=f.wh)
               for f in r.flows],
    )


def matching_report_from(msg: api.MatchingReport):
    """The domain report back from the wire (a client renders it, as the demo does)."""
    from eap.node.domain import matching

    return matching.MatchingReport(
        node_id=msg.node_id,
        subject=msg.subject,
        zone=msg.zone,
        start=msg.start_unix,
        end=msg.end_unix,
        load_basis=msg.load_basis,
        hours=[
            matching.HourRow(hour=h.hour_unix, **{k: getattr(h, k) for k in _HOUR_FIELDS})
            for h in msg.hours
        ],
        flows=[matching.Flow(f.source_node, f.target_node, f.wh) for f in msg.flows],
    )
