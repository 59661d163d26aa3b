"""Provenance of a bundle: proofs that its Wh were issued, as issued (DESIGN §2 Custody).

A :class:`~eap.v1.types_pb2.RecordProof` carries the issuer's signed batch header, the issued
record the bundle's serials lie in (every field of its Merkle leaf), the record's RFC 6962
inclusion path, and the chain of bundle ids from the issued record down to the bundle.  Anyone
with the issuer's public key checks it offline (:func:`verify`):

1. the header's signature, by the issuer's key, over the batch header bytes;
2. the leaf recomputed from the record, included at ``index`` under the signed root;
3. the record obeys the record rules (interval, enums, bounds);
4. the lineage ids: the first is the issued record's id, each next a strict sub-range of the
   one before, the last the bundle's id; the lineage hash recomputed along them is the
   bundle's (``L0 = SHA-256(0x03 || leaf || id0)``, ``Li = SHA-256(0x03 || L(i-1) || idi)``);
5. the bundle's attributes are exactly the record's.

A bundle never spans two issued records: issuance makes one bundle per record and a split cuts
inside one bundle, so a range across records has no proof and is refused.

This module also signs and opens the detached signatures (:class:`~eap.v1.types_pb2.Signed`)
of custody records and holdings statements.  It does no I/O; :mod:`eap.node.domain.ledger`
builds proofs from the store.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from eap.node import batches, kernels
from eap.node.domain.rules import MAX_CARBON_MG, MAX_RENEWABLE_PPM, ZONE_RE, interval_violation
from eap.node.errors import EapError, InvalidArgument, Unauthenticated
from eap.node.records.enums import Source, Technology
from eap.v1 import types_pb2 as pb

CUSTODY_TAG = b"EAP-CUSTODY-v1\x00"
HOLDINGS_TAG = b"EAP-HOLDINGS-v1\x00"

#: Longest lineage a proof may carry: one id per split between the issued record and the
#: bundle (a bundle sold piece by piece is split once per piece).
MAX_LINEAGE = 10_000
#: Longest inclusion path (a tree of at most 2**32 leaves).
MAX_PATH = 32

_BUNDLE_ID = re.compile(r"^(?P<issuer>[a-z0-9.-]{1,128})/(?P<start>\d{1,19})-(?P<end>\d{1,19})$")

#: ``verify_sig(signer node id, key id, data, signature)``: raises when it does not verify.
SignatureCheck = Callable[[str, str, bytes, bytes], None]


class ProofError(InvalidArgument):
    """A proof (or a signed object) does not establish what it claims; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedProof:
    """What a proof established."""

    issuer: str
    seq: int
    record: pb.IssuedRecord
    #: Bundle ids, issued record first.
    lineage: tuple[str, ...]
    #: Lineage hash (hex) of the last id.
    lineage_hash: str
    #: The record's leaf hash.
    leaf: bytes


# -- hashing -----------------------------------------------------------------------------------


def leaf_hash(record: pb.IssuedRecord) -> bytes:
    """The record's Merkle leaf hash, as its issuer computed it (``docs/core.md``)."""
    cols = {
        "serial_start": np.array([record.serial_start], np.int64),
        "serial_end": np.array([record.serial_end], np.int64),
        "interval_start": np.array([record.interval.start_unix], np.int64),
        "interval_end": np.array([record.interval.end_unix], np.int64),
        "device": np.zeros(1, np.int32),
        "source": np.array([record.source], np.uint8),
        "technology": np.array([record.technology], np.uint8),
        "renewable_ppm": np.array([record.renewable_ppm], np.uint32),
        "carbon_mg": np.array([record.carbon_mg_per_kwh], np.uint32),
        "zone": np.zeros(1, np.int32),
        "owner": np.zeros(1, np.int32),
    }
    return bytes(kernels.leaf_hashes(cols, [record.device_id], [record.zone],
                                     [record.owner])[0])


def lineage(parent: bytes, child_id: str) -> str:
    """Lineage hash of a bundle, hex: SHA-256(0x03 || parent lineage (or batch leaf) || id)."""
    return hashlib.sha256(b"\x03" + parent + child_id.encode()).hexdigest()


def record_id(issuer: str, record: pb.IssuedRecord) -> str:
    return f"{issuer}/{record.serial_start}-{record.serial_end}"


def parse_bundle_id(bundle_id: str) -> tuple[str, int, int]:
    """``"<issuer>/<start>-<end>"`` → parts; ProofError when malformed."""
    m = _BUNDLE_ID.match(bundle_id or "")
    if m is None:
        raise ProofError(f"malformed bundle id {bundle_id[:200]!r}")
    return m.group("issuer"), int(m.group("start")), int(m.group("end"))


# -- building ----------------------------------------------------------------------------------


def record_from_columns(cols: batches.Columns, index: int) -> pb.IssuedRecord:
    """Record ``index`` of decoded batch columns."""
    a = cols.arrays
    return pb.IssuedRecord(
        serial_start=int(a["serial_start"][index]), serial_end=int(a["serial_end"][index]),
        interval=pb.Interval(start_unix=int(a["interval_start"][index]),
                             end_unix=int(a["interval_end"][index])),
        source=int(a["source"][index]), technology=int(a["technology"][index]),
        renewable_ppm=int(a["renewable_ppm"][index]),
        carbon_mg_per_kwh=int(a["carbon_mg"][index]),
        device_id=cols.devices[int(a["device"][index])], zone=cols.zones[int(a["zone"][index])],
        owner=cols.owners[int(a["owner"][index])])


def header_of(batch: pb.RecordBatch) -> pb.BatchHeader:
    return pb.BatchHeader(issuer=batch.issuer, seq=batch.seq, count=batch.count,
                          merkle_root=batch.merkle_root, created_at_ms=batch.created_at_ms,
                          key_id=batch.key_id, signature=batch.signature)


def extend(proof: pb.RecordProof, ids: Sequence[str]) -> pb.RecordProof:
    """A copy of ``proof`` whose lineage continues with ``ids``."""
    out = pb.RecordProof()
    out.CopyFrom(proof)
    out.lineage.extend(ids)
    return out


# -- verifying ---------------------------------------------------------------------------------


def verify(proof: pb.RecordProof, verify_sig: SignatureCheck, *,
           bundle: pb.RecordBundle | None = None) -> VerifiedProof:
    """Check a proof (steps 1-5 of the module docstring); ``bundle`` is what it must prove.

    Raises:
        ProofError: anything that does not verify, with the reason.
    """
    h, rec = proof.batch, proof.record
    if not proof.HasField("batch") or not proof.HasField("record"):
        raise ProofError("proof without batch header or record")
    if not h.count > 0 or not 0 <= proof.index < h.count:
        raise ProofError("leaf index outside the batch")
    if len(h.merkle_root) != 32 or len(proof.path) > MAX_PATH:
        raise ProofError("malformed Merkle root or inclusion path")
    header = batches.header_bytes(h.issuer, h.seq, h.count, h.merkle_root)
    try:
        verify_sig(h.issuer, h.key_id, header, bytes(h.signature))
    except EapError as exc:
        raise ProofError(f"batch {h.issuer}#{h.seq}: signature: {exc.message}") from exc
    why = record_violation(rec)
    if why:
        raise ProofError(f"issued record: {why}")
    leaf = leaf_hash(rec)
    if any(len(p) != 32 for p in proof.path) or not kernels.verify_inclusion(
            leaf, proof.index, h.count, list(proof.path), bytes(h.merkle_root)):
        raise ProofError(f"the record is not included in batch {h.issuer}#{h.seq} "
                         "(inclusion path does not lead to the signed root)")
    ids = tuple(proof.lineage)
    if not 1 <= len(ids) <= MAX_LINEAGE:
        raise ProofError(f"lineage must name 1..{MAX_LINEAGE} bundle ids")
    if ids[0] != record_id(h.issuer, rec):
        raise ProofError("lineage must start at the issued record's id")
    lin = lineage(leaf, ids[0])
    lo, hi = rec.serial_start, rec.serial_end
    for cid in ids[1:]:
        issuer, s, e = parse_bundle_id(cid)
        if issuer != h.issuer or not (lo <= s < e <= hi) or (s, e) == (lo, hi):
            raise ProofError(f"lineage step {cid!r} is not a strict sub-range of {lo}-{hi}")
        lo, hi = s, e
        lin = lineage(bytes.fromhex(lin), cid)
    out = VerifiedProof(issuer=h.issuer, seq=int(h.seq), record=rec, lineage=ids,
                        lineage_hash=lin, leaf=leaf)
    if bundle is not None:
        check_bundle(bundle, out)
    return out


def check_bundle(b: pb.RecordBundle, v: VerifiedProof) -> None:
    """``b`` is the proved bundle: same id, lineage hash, parent, and exactly its attributes."""
    if b.id != v.lineage[-1]:
        raise ProofError(f"the proof is for {v.lineage[-1]}, not {b.id[:200]}")
    if b.id != f"{b.issuer}/{b.serial_start}-{b.serial_end}":
        raise ProofError("the bundle's serial range differs from its id")
    if b.issuer != v.issuer:
        raise ProofError("issuer differs from the proof's")
    if b.lineage_hash != v.lineage_hash:
        raise ProofError("lineage hash does not recompute along the proof's lineage")
    parent = v.lineage[-2] if len(v.lineage) > 1 else ""
    if (b.parent_id or "") != parent:
        raise ProofError(f"parent {b.parent_id[:200]!r} differs from the lineage's {parent!r}")
    a, r = b.attributes, v.record
    differ = [name for name, x, y in (
        ("device_id", a.device_id, r.device_id),
        ("interval", (a.interval.start_unix, a.interval.end_unix),
         (r.interval.start_unix, r.interval.end_unix)),
        ("source", a.source, r.source), ("technology", a.technology, r.technology),
        ("renewable_ppm", a.renewable_ppm, r.renewable_ppm),
        ("carbon_mg_per_kwh", a.carbon_mg_per_kwh, r.carbon_mg_per_kwh),
        ("zone", a.zone, r.zone)) if x != y]
    if differ:
        raise ProofError(f"attributes differ from the issued record: {', '.join(differ)}")


def attribute_violation(source: int, technology: int, renewable_ppm: int, carbon_mg: int,
                        zone: str, interval_start: int, interval_end: int) -> str | None:
    """First record-attribute rule (DESIGN §3) broken, or None: closed enums, bounds, zone,
    interval.  Shared by issued records in proofs and bundles announced in prepares."""
    if source not in _SOURCES:
        return "unknown energy source"
    if technology not in _TECHNOLOGIES:
        return "unknown technology"
    if not 0 <= renewable_ppm <= MAX_RENEWABLE_PPM:
        return "renewable share out of range"
    if not 0 <= carbon_mg <= MAX_CARBON_MG:
        return "carbon intensity out of range"
    if not ZONE_RE.match(zone or ""):
        return "malformed zone"
    why = interval_violation(interval_start, interval_end)
    return f"interval: {why}" if why else None


def record_violation(r: pb.IssuedRecord) -> str | None:
    """First record rule (DESIGN §3) an issued record breaks, or None."""
    if not 0 <= r.serial_start < r.serial_end <= 2**62:
        return "serial range must satisfy 0 <= start < end"
    if not 1 <= len(r.device_id) <= 64 or not 1 <= len(r.owner) <= 200:
        return "malformed device or owner"
    return attribute_violation(r.source, r.technology, r.renewable_ppm, r.carbon_mg_per_kwh,
                               r.zone, r.interval.start_unix, r.interval.end_unix)


_SOURCES = frozenset(int(s) for s in Source if s)
_TECHNOLOGIES = frozenset(int(x) for x in Technology if x)


# -- detached signatures -----------------------------------------------------------------------


def sign(keys, signer: str, tag: bytes, body: bytes) -> pb.Signed:
    """``Signed`` over ``tag || body`` with the active key of ``keys`` (a KeyRing)."""
    key_id, sig = keys.sign(tag + body)
    return pb.Signed(body=body, signer=signer, key_id=key_id, signature=sig)


def open_signed(signed: pb.Signed, tag: bytes, verify_sig: SignatureCheck, *,
                signer: str | None = None) -> bytes:
    """The body of a ``Signed`` whose signature verifies (and whose signer is ``signer``).

    Raises:
        ProofError: wrong signer, or the signature does not verify.
    """
    if signer is not None and signed.signer != signer:
        raise ProofError(f"signed by {signed.signer[:128]!r}, expected {signer!r}")
    try:
        verify_sig(signed.signer, signed.key_id, tag + bytes(signed.body),
                   bytes(signed.signature))
    except EapError as exc:
        raise ProofError(f"signature of {signed.signer[:128]!r}: {exc.message}") from exc
    return bytes(signed.body)


def custody_record(signed: pb.Signed, verify_sig: SignatureCheck, *,
                   issuer: str) -> pb.CustodyRecord:
    """The CustodyRecord of a ``Signed`` by ``issuer``, verified."""
    body = open_signed(signed, CUSTODY_TAG, verify_sig, signer=issuer)
    try:
        rec = pb.CustodyRecord.FromString(body)
    except Exception as exc:
        raise ProofError("custody body is not a CustodyRecord") from exc
    if rec.issuer != issuer:
        raise ProofError("custody record names another issuer")
    return rec


def signature_check(own_id: str, own_keys, peer_keys) -> SignatureCheck:
    """A :data:`SignatureCheck` over this node's key ring and the trust list's peer keys."""

    def check(signer: str, key_id: str, data: bytes, signature: bytes) -> None:
        if signer == own_id:
            own_keys.verify(key_id, data, signature)
        else:
            peer_keys.verify(signer, key_id, data, signature)

    return check


def keys_check(keys: dict[str, dict[str, bytes]]) -> SignatureCheck:
    """A :data:`SignatureCheck` from raw public keys: ``{node id: {key id: 32 bytes}}``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    def check(signer: str, key_id: str, data: bytes, signature: bytes) -> None:
        raw = keys.get(signer, {}).get(key_id)
        if raw is None:
            raise Unauthenticated(f"no public key {key_id!r} of {signer!r}")
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
        except (InvalidSignature, ValueError) as exc:
            raise Unauthenticated(f"invalid signature by {signer!r}") from exc

    return check
