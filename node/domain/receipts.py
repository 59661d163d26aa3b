"""Selective-disclosure claim receipts (``docs/receipts.md``): issue, look up, present, verify.

A claim's SD receipt is an SD-JWT (:mod:`eap.node.crypto.sd`) signed by the claiming node:
every field of the claim (generation hour, zone, cell, source, technology, carbon intensity,
Wh, beneficiary, purpose, consumption interval, owner pseudonym, ...) and the record's Merkle
inclusion in its signed issuance batch are separate salted commitments.  The holder keeps all
disclosures (the salts) and shows a verifier only the fields it chooses; the verifier checks
them offline with the issuer's public key.

* :func:`for_claim` / :func:`issue_receipt`: at retirement, from the claim and the bundle's
  record proof.
* :func:`stored_receipt`: the full receipt of a claim, for its holder (or the operator).
* :func:`present`: keep the chosen fields; with a bound holder key, add the KB-JWT.
* :func:`verify_receipt`: the offline check, as ``eap-node receipt verify`` runs it.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from eap.node import batches, kernels
from eap.node.crypto import sd
from eap.node.domain import ledger, provenance
from eap.node.errors import (
    EapError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from eap.node.records.models import ClaimReceipt, Principal
from eap.node.store import repos
from eap.v1 import types_pb2 as pb

#: JOSE ``typ`` of the issuer-signed JWT.
TYP = "eap-receipt+sd-jwt"
#: Credential type claim (always visible).
VCT = "urn:eap:claim-receipt:1"

#: Selectively disclosable fields, in the order the issuer writes them.
FIELDS: tuple[str, ...] = (
    "claim_id",
    "bundle",
    "hour",
    "zone",
    "cell",
    "source",
    "technology",
    "renewable_ppm",
    "carbon_mg_per_kwh",
    "wh",
    "beneficiary",
    "purpose",
    "consumption",
    "consumption_zone",
    "owner",
    "device",
    "claimed_at_ms",
    "inclusion",
)
_INTERVALS = {"hour", "consumption"}
_INTS = {"renewable_ppm", "carbon_mg_per_kwh", "wh", "claimed_at_ms"}


def receipt_claims(receipt: ClaimReceipt, proof: pb.RecordProof) -> dict[str, Any]:
    """The disclosable fields of ``receipt``; ``proof`` is its bundle's record proof."""
    b = receipt.bundle
    h = proof.batch
    return {
        "claim_id": receipt.id,
        "bundle": b.id,
        "hour": [b.interval_start, b.interval_end],
        "zone": b.zone,
        "cell": b.cell,
        "source": pb.EnergySource.Name(b.source),
        "technology": pb.Technology.Name(b.technology),
        "renewable_ppm": b.renewable_ppm,
        "carbon_mg_per_kwh": b.carbon_mg,
        "wh": b.wh,
        "beneficiary": receipt.beneficiary,
        "purpose": receipt.purpose,
        "consumption": [receipt.consumption_start, receipt.consumption_end],
        "consumption_zone": receipt.consumption_zone,
        "owner": b.owner,
        "device": b.device_id,
        "claimed_at_ms": receipt.claimed_at_ms,
        "inclusion": {
            "batch": {
                "issuer": h.issuer,
                "seq": int(h.seq),
                "count": int(h.count),
                "merkle_root": bytes(h.merkle_root).hex(),
                "key_id": h.key_id,
                "signature": bytes(h.signature).hex(),
            },
            "index": int(proof.index),
            "leaf": provenance.leaf_hash(proof.record).hex(),
            "path": [bytes(p).hex() for p in proof.path],
        },
    }


def issue_receipt(
    *,
    issuer: str,
    keys: Any,
    receipt: ClaimReceipt,
    proof: pb.RecordProof,
    holder_key: bytes | None = None,
    salts: Mapping[str, str] | None = None,
) -> str:
    """The SD receipt (issuer-signed JWT and every disclosure) of ``receipt``.

    ``keys`` is the node's :class:`~eap.node.crypto.KeyRing` (its active key signs);
    ``holder_key`` (raw 32-byte Ed25519) binds the receipt to its holder, whose presentations
    then need a KB-JWT; ``salts`` (field -> base64url salt) is for test vectors only.
    """
    kid = keys.active_key_id

    def sign(data: bytes) -> bytes:
        used, sig = keys.sign(data)
        if used != kid:  # rotated between reading the id and signing: never mislabel
            raise EapError("the node's signing key changed while signing a receipt; retry")
        return sig

    return sd.issue(
        {"iss": issuer, "vct": VCT},
        receipt_claims(receipt, proof),
        signer=sign,
        kid=kid,
        typ=TYP,
        holder_key=holder_key,
        salts=salts,
    )


def for_claim(
    conn: Any, node: Any, receipt: ClaimReceipt, *, holder_key: bytes | None = None
) -> str:
    """The SD receipt of a claim being made by ``node`` in transaction ``conn``: the retired
    bundle's record proof (:func:`eap.node.domain.ledger.proof`) and :func:`issue_receipt`."""
    proof, _ = ledger.proof(conn, node.node_id, receipt.bundle)
    return issue_receipt(
        issuer=node.node_id, keys=node.keys, receipt=receipt, proof=proof, holder_key=holder_key
    )


def stored_receipt(node: Any, claim_id: str, principal: Principal | None = None) -> str:
    """The full SD receipt of claim ``claim_id`` for its holder (or the operator).

    Raises:
        NotFound: unknown claim (also when the caller may not see it: no existence oracle).
        FailedPrecondition: the claim predates SD receipts.
    """
    principal = principal or Principal.operator()
    with node.store.read() as conn:
        found = repos.get_claim(conn, claim_id)
    if found is None or not principal.may_act_for(found.bundle.owner):
        raise NotFound(f"no claim {claim_id[:200]}", [FieldViolation("claim", "unknown claim")])
    if not found.sd_receipt:
        raise FailedPrecondition(f"claim {found.id} was made before SD receipts existed")
    return found.sd_receipt


def payload_of(token: str) -> dict[str, Any]:
    """The issuer-signed payload of an SD receipt, decoded but NOT verified."""
    return sd.unverified_payload(token)


def present(
    receipt: str,
    show: Iterable[str],
    holder_signer: sd.Signer | None = None,
    nonce: str | None = None,
    audience: str | None = None,
    *,
    now: int | None = None,
) -> str:
    """A presentation of ``receipt`` disclosing only the fields ``show``.

    When the receipt binds a holder key (``cnf``), ``holder_signer`` (the holder's Ed25519
    signing function), ``nonce`` and ``audience`` (from the verifier) are required and a
    KB-JWT is appended.

    Raises:
        InvalidArgument: unknown field, malformed receipt, or key binding inputs missing.
    """
    names = [s.strip() for s in show if s.strip()]
    unknown = sorted(set(names) - set(FIELDS))
    if unknown:
        raise InvalidArgument(
            f"unknown receipt field {', '.join(unknown)}; fields: {', '.join(FIELDS)}",
            [FieldViolation("show", "unknown field")],
        )
    if sd.parse(receipt).kb_jwt:
        raise InvalidArgument("present from the issued receipt, not from a presentation")
    chosen = sd.select(receipt, names)
    if "cnf" not in payload_of(receipt):
        if holder_signer is not None:
            raise InvalidArgument("the receipt binds no holder key; present it without one")
        return chosen
    if holder_signer is None or not nonce or not audience:
        raise InvalidArgument(
            "the receipt is bound to a holder key: presenting it needs the holder's key, "
            "the verifier's nonce and its audience"
        )
    iat = int(time.time()) if now is None else now
    return sd.key_bind(chosen, holder_signer, nonce=nonce, audience=audience, iat=iat)


@dataclass
class CheckedReceipt:
    """What an offline check of a presentation established."""

    issuer: str
    key_id: str
    #: Disclosed fields, exactly as the issuer committed to them.
    disclosed: dict[str, Any]
    #: The KB-JWT payload when the receipt binds a holder key, else None.
    key_binding: dict[str, Any] | None
    #: The holder key bound by ``cnf`` (raw), else None.
    holder_key: bytes | None

    @property
    def inclusion_verified(self) -> bool:
        return "inclusion" in self.disclosed

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "issuer": self.issuer,
            "key_id": self.key_id,
            "disclosed": self.disclosed,
            "undisclosed": [f for f in FIELDS if f not in self.disclosed],
            "key_binding": self.key_binding,
            "holder_key": sd.b64url(self.holder_key) if self.holder_key else None,
        }


def verify_receipt(
    token: str,
    keys: Mapping[str, Mapping[str, bytes]],
    *,
    issuer: str | None = None,
    nonce: str | None = None,
    audience: str | None = None,
    require: Iterable[str] = (),
) -> CheckedReceipt:
    """Check a presentation (or a full receipt) offline with ``{node id: {key id: raw}}``.

    Steps (``docs/receipts.md``): the issuer JWT's Ed25519 signature by the key ``kid`` of
    node ``iss`` (and ``iss`` = ``issuer`` when given); ``typ``, ``vct`` and ``_sd_alg``; each
    disclosure's digest in ``_sd``, no repeats; the field types; when ``inclusion`` is
    disclosed, the batch header's signature by its issuer's key and the leaf's RFC 6962
    inclusion under the signed root; when ``cnf`` is present, the KB-JWT; and that every field
    in ``require`` (what this verifier needs, e.g. ``inclusion``) is disclosed.

    Raises:
        SdError: anything that does not verify, with the reason.
    """

    def issuer_key(header: dict[str, Any], payload: dict[str, Any]) -> bytes:
        iss, kid = payload.get("iss"), header.get("kid")
        if not isinstance(iss, str) or not isinstance(kid, str):
            raise sd.SdError("issuer JWT: needs string iss and kid")
        if issuer is not None and iss != issuer:
            raise sd.SdError(f"issued by {iss[:128]!r}, not by the expected {issuer!r}")
        raw = keys.get(iss, {}).get(kid)
        if raw is None:
            raise sd.SdError(f"no trusted public key {kid[:64]!r} of issuer {iss[:128]!r}")
        return raw

    v = sd.verify(token, issuer_key, typ=TYP, nonce=nonce, audience=audience)
    if v.payload.get("vct") != VCT:
        raise sd.SdError(f"issuer JWT: vct must be {VCT!r}")
    for name, value in v.disclosed.items():
        _check_field(name, value)
    if "inclusion" in v.disclosed:
        _check_inclusion(v.disclosed["inclusion"], keys)
    missing = [f for f in require if f not in v.disclosed]
    if missing:
        raise sd.SdError(f"required field(s) not disclosed: {', '.join(missing)}")
    holder = sd.cnf_key(v.payload["cnf"]) if "cnf" in v.payload else None
    return CheckedReceipt(
        issuer=v.payload["iss"],
        key_id=v.header["kid"],
        disclosed=v.disclosed,
        key_binding=v.key_binding,
        holder_key=holder,
    )


def _is_int(x: Any) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_field(name: str, value: Any) -> None:
    if name not in FIELDS:
        raise sd.SdError(f"unknown receipt field {name[:64]!r}")
    if name in _INTERVALS:
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(_is_int(x) for x in value)
            and value[0] < value[1]
        )
    elif name in _INTS:
        ok = _is_int(value) and value >= 0
    elif name == "inclusion":
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise sd.SdError(f"field {name}: malformed value")


def _hex32(value: Any, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32 or raw.hex() != value:
        raise sd.SdError(f"inclusion: {what} must be 32 bytes in lowercase hex")
    return raw


def _check_inclusion(inc: dict[str, Any], keys: Mapping[str, Mapping[str, bytes]]) -> None:
    """The batch header's signature and the leaf's inclusion under its signed root."""
    b = inc.get("batch")
    if not isinstance(b, dict):
        raise sd.SdError("inclusion: no batch header")
    issuer, seq, count, kid = b.get("issuer"), b.get("seq"), b.get("count"), b.get("key_id")
    index, path = inc.get("index"), inc.get("path")
    if not (
        isinstance(issuer, str)
        and isinstance(kid, str)
        and _is_int(seq)
        and 0 <= seq < 2**64
        and _is_int(count)
        and 1 <= count < 2**32
        and _is_int(index)
        and 0 <= index < count
        and isinstance(path, list)
        and len(path) <= provenance.MAX_PATH
    ):
        raise sd.SdError("inclusion: malformed batch header, index or path")
    root = _hex32(b.get("merkle_root"), "merkle_root")
    leaf = _hex32(inc.get("leaf"), "leaf")
    steps = [_hex32(p, "a path entry") for p in path]
    sig_hex = b.get("signature")
    try:
        sig = bytes.fromhex(sig_hex) if isinstance(sig_hex, str) else b""
    except ValueError:
        sig = b""
    if len(sig) != 64:
        raise sd.SdError("inclusion: the batch signature must be 64 bytes in hex")
    check = provenance.keys_check({n: dict(k) for n, k in keys.items()})
    try:
        header = batches.header_bytes(issuer, seq, count, root)
    except (UnicodeEncodeError, struct.error) as exc:
        raise sd.SdError("inclusion: the batch issuer is not a node id") from exc
    try:
        check(issuer, kid, header, sig)
    except EapError as exc:
        raise sd.SdError(f"inclusion: batch {issuer[:128]}#{seq}: {exc.message}") from exc
    if not kernels.verify_inclusion(leaf, index, count, steps, root):
        raise sd.SdError(
            f"inclusion: the leaf is not in batch {issuer[:128]}#{seq} "
            "(the path does not lead to the signed root)"
        )


def sign_with(private_key: Any) -> Callable[[bytes], bytes]:
    """A :data:`~eap.node.crypto.sd.Signer` from a ``cryptography`` Ed25519 private key."""
    return private_key.sign
