"""What a node shows the world about itself and its bundles (docs/protocol.md "Proofs").

* :func:`identity`: the node's public identity (id, zone, protocol versions, signing keys);
  the keys are what anyone needs to check its batches, receipts and proofs offline.
* :func:`bundle_proof`: a bundle (TRANSPARENCY view) with its provenance
  (:class:`~eap.v1.types_pb2.RecordProof`, built by :func:`eap.node.domain.ledger.proof`)
  and the coarse cell the issuer attests for its serials.
* :func:`check_bundle_proof`: the offline check of such a proof with the issuer's public keys
  only, as ``eap-node proof verify`` runs it.

No transport here: the API and the CLI convert (``eap.node.api.convert``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eap.node.config import PROTOCOL_VERSION
from eap.node.crypto.keys import PublicKeyInfo
from eap.node.domain import ledger, provenance
from eap.node.domain.policy import redact_bundle
from eap.node.errors import FailedPrecondition, FieldViolation, NotFound
from eap.node.records.enums import Purpose, Status
from eap.node.records.models import Bundle
from eap.node.store import repos
from eap.v1 import types_pb2 as pb


@dataclass(frozen=True)
class Identity:
    """A node's public identity."""

    node_id: str
    zone: str
    protocol_versions: tuple[str, ...]
    #: Signing keys, the active one first.
    keys: tuple[PublicKeyInfo, ...]
    active_key_id: str


@dataclass(frozen=True)
class ProvenBundle:
    """A bundle, its provenance and its attested cell."""

    #: TRANSPARENCY view of the bundle.
    bundle: Bundle
    proof: pb.RecordProof
    #: Coarse cell of the record's device: from the issuer's custody record when the serials
    #: came from another node, else the bundle's own (this node issued them).
    cell: str


@dataclass(frozen=True)
class CheckedProof:
    """What an offline check of a bundle proof established."""

    verified: provenance.VerifiedProof
    bundle: pb.RecordBundle
    #: The cell the proof carries (informational: not covered by the batch leaf).
    cell: str
    #: The issuer's key that signed the batch header.
    key_id: str

    @property
    def wh(self) -> int:
        return self.bundle.serial_end - self.bundle.serial_start

    def to_dict(self) -> dict[str, Any]:
        v, r = self.verified, self.verified.record
        return {
            "ok": True,
            "issuer": v.issuer,
            "batch_seq": v.seq,
            "key_id": self.key_id,
            "record": {"id": provenance.record_id(v.issuer, r),
                       "serial_start": r.serial_start, "serial_end": r.serial_end},
            "bundle": self.bundle.id,
            "wh": self.wh,
            "lineage": list(v.lineage),
            "lineage_hash": v.lineage_hash,
            "attributes": {
                "device_id": r.device_id, "zone": r.zone,
                "interval": [r.interval.start_unix, r.interval.end_unix],
                "source": pb.EnergySource.Name(r.source),
                "technology": pb.Technology.Name(r.technology),
                "renewable_ppm": r.renewable_ppm, "carbon_mg_per_kwh": r.carbon_mg_per_kwh,
            },
            "cell": self.cell,
        }


def identity(node: Any) -> Identity:
    """The public identity of ``node`` (an :class:`~eap.node.domain.node.Node`)."""
    ring = node.keys
    active = ring.active_key_id
    keys = sorted(ring.public_keys().values(),
                  key=lambda k: (k.key_id != active, -k.created_at_ms, k.key_id))
    return Identity(node_id=node.node_id, zone=node.config.zone,
                    protocol_versions=(PROTOCOL_VERSION,), keys=tuple(keys),
                    active_key_id=active)


def bundle_proof(node: Any, bundle_id: str) -> ProvenBundle:
    """The proof of a bundle held, retired or exported here.

    Raises:
        NotFound: unknown bundle.
        FailedPrecondition: the bundle was split (its children are what exists now).
    """
    with node.store.read() as conn:
        found = repos.get_bundle(conn, bundle_id)
        if found is None:
            raise NotFound(f"no bundle {bundle_id[:200]}",
                           [FieldViolation("bundle_id", "unknown bundle")])
        bundle = found[0]
        if bundle.status == Status.SPLIT:
            raise FailedPrecondition(f"bundle {bundle.id} was split; prove its children")
        proof, custody = ledger.proof(conn, node.node_id, bundle)
    cell = bundle.cell
    if custody is not None:
        # Our own store: the custody record was verified when the serials arrived.
        signed = pb.Signed.FromString(custody)
        cell = pb.CustodyRecord.FromString(signed.body).cell
    return ProvenBundle(bundle=redact_bundle(bundle, Purpose.TRANSPARENCY), proof=proof,
                        cell=cell)


def check_bundle_proof(bp: pb.BundleProof, keys: Mapping[str, Mapping[str, bytes]], *,
                       issuer: str | None = None) -> CheckedProof:
    """Check ``bp`` offline with ``keys`` (``{node id: {key id: raw 32-byte key}}``).

    Steps: the batch header's signature by the issuer's key, the record's inclusion under the
    signed root, the record rules, the lineage recomputed from the record's leaf to the
    bundle's lineage hash, the bundle's id and serial range those of the lineage's last id,
    and the bundle's attributes exactly the record's.

    Raises:
        ProofError: anything that does not verify, with the reason.
    """
    if not bp.HasField("bundle") or not bp.HasField("proof"):
        raise provenance.ProofError("a bundle proof needs a bundle and a proof")
    if issuer is not None and bp.proof.batch.issuer != issuer:
        raise provenance.ProofError(
            f"the proof is of issuer {bp.proof.batch.issuer[:128]!r}, not {issuer!r}")
    b = bp.bundle
    checked = provenance.keys_check({n: dict(k) for n, k in keys.items()})
    v = provenance.verify(bp.proof, checked, bundle=b)
    owner, start, end = provenance.parse_bundle_id(b.id)
    if (owner, start, end) != (b.issuer, b.serial_start, b.serial_end):
        raise provenance.ProofError(
            f"serial range {b.serial_start}-{b.serial_end} differs from the bundle id {b.id}")
    return CheckedProof(verified=v, bundle=b, cell=bp.cell, key_id=bp.proof.batch.key_id)
