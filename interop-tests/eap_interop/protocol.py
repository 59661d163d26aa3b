"""What the protocol documents make normative, re-implemented from the documents alone.

Nothing here imports ``eap.node``: signed envelopes (``docs/security.md`` §4), node
descriptors (``docs/federation.md`` §2), batch headers, record leaves and Merkle trees
(``docs/protocol.md``, ``docs/core.md``), lineage hashes and the record rules.  A case that
finds the node disagreeing with these functions has found a disagreement with the documents.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from eap.v1 import types_pb2

ENVELOPE_DOMAIN = b"EAP-ENVELOPE-v1\x00"
BATCH_DOMAIN = b"EAP-BATCH-v1\x00"
DESCRIPTOR_DOMAIN = b"EAP-DESCRIPTOR-v1\x00"
DESCRIPTOR_FORMAT = "eap-node-descriptor-v1"
#: Longest envelope lifetime a receiver accepts, and the clock skew it allows (seconds).
MAX_TTL_S = 600
CLOCK_SKEW_S = 30
NONCE_LEN = 16
KEY_ID_RE = re.compile(r"^ed25519:[0-9a-f]{16}$")
NODE_ID_RE = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}"
    r"[a-z0-9])?)*$"
)
#: A peer device's capacity is unknown to a verifier: the physical bound (1 TW) applies.
PHYSICAL_CAPACITY_W = 10**12
MAX_RENEWABLE_PPM = 1_000_000
MAX_CARBON_MG = 2_000_000
SOURCES = range(1, 13)
TECHNOLOGIES = range(1, 15)


class ProtocolViolation(AssertionError):
    """The node's bytes disagree with the protocol documents."""


def now_ms() -> int:
    return int(time.time() * 1000)


# -- keys ---------------------------------------------------------------------------------------


def raw_public_key(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_for(public_key: bytes) -> str:
    """``"ed25519:" + hex(SHA-256(raw public key))[:16]`` (docs/security.md §2)."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:16]


def fingerprint(public_key: bytes) -> str:
    """``"SHA256:" + base64(SHA-256(raw public key))`` without padding."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(public_key).digest()).decode().rstrip("=")


def verify_ed25519(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# -- signed envelopes (docs/security.md §4) -------------------------------------------------------


def _str16(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return struct.pack(">H", len(raw)) + raw


def envelope_signing_input(
    *,
    payload_type: str,
    origin: str,
    destination: str,
    expires_at_ms: int,
    key_id: str,
    nonce: bytes,
    payload: bytes,
) -> bytes:
    """The exact bytes an envelope's Ed25519 signature covers."""
    return (
        ENVELOPE_DOMAIN
        + _str16(payload_type)
        + _str16(origin)
        + _str16(destination)
        + struct.pack(">q", expires_at_ms)
        + _str16(key_id)
        + _str16(nonce)
        + struct.pack(">I", len(payload))
        + payload
    )


def seal(
    key: Ed25519PrivateKey,
    payload: bytes,
    payload_type: str,
    origin: str,
    destination: str,
    *,
    ttl_s: float = 60,
    expires_at_ms: int | None = None,
    nonce: bytes | None = None,
    key_id: str | None = None,
) -> types_pb2.SignedEnvelope:
    """A ``SignedEnvelope`` of ``payload`` (``expires_at_ms``/``key_id`` override the defaults,
    so that cases can build envelopes a node must refuse)."""
    nonce = secrets.token_bytes(NONCE_LEN) if nonce is None else nonce
    expires = now_ms() + int(ttl_s * 1000) if expires_at_ms is None else expires_at_ms
    kid = key_id or key_id_for(raw_public_key(key))
    sig = key.sign(
        envelope_signing_input(
            payload_type=payload_type,
            origin=origin,
            destination=destination,
            expires_at_ms=expires,
            key_id=kid,
            nonce=nonce,
            payload=payload,
        )
    )
    return types_pb2.SignedEnvelope(
        payload=payload,
        payload_type=payload_type,
        origin=origin,
        destination=destination,
        expires_at_ms=expires,
        key_id=kid,
        signature=sig,
        nonce=nonce,
    )


def check_envelope(
    env: types_pb2.SignedEnvelope,
    *,
    keys: Mapping[str, bytes],
    origin: str,
    destination: str,
    payload_type: str,
) -> None:
    """Assert that ``env`` passes every check a receiver makes (docs/security.md §4).

    Raises:
        ProtocolViolation: naming the first check that fails.
    """
    if len(env.nonce) != NONCE_LEN:
        raise ProtocolViolation(f"envelope nonce is {len(env.nonce)} bytes, not {NONCE_LEN}")
    for name in ("payload_type", "origin", "destination", "key_id"):
        if len(getattr(env, name).encode()) > 255:
            raise ProtocolViolation(f"envelope {name} longer than 255 bytes")
    if env.origin != origin:
        raise ProtocolViolation(f"envelope origin {env.origin!r}, expected {origin!r}")
    if env.destination != destination:
        raise ProtocolViolation(
            f"envelope destination {env.destination!r}, expected {destination!r}"
        )
    now = now_ms()
    if not now < env.expires_at_ms + CLOCK_SKEW_S * 1000:
        raise ProtocolViolation(f"envelope expired at {env.expires_at_ms} (now {now})")
    if env.expires_at_ms > now + (MAX_TTL_S + CLOCK_SKEW_S) * 1000:
        raise ProtocolViolation(
            f"envelope expiry {env.expires_at_ms} is more than {MAX_TTL_S} s ahead"
        )
    if env.key_id not in keys:
        raise ProtocolViolation(f"envelope key id {env.key_id!r} is not one of {sorted(keys)}")
    signed = envelope_signing_input(
        payload_type=env.payload_type,
        origin=env.origin,
        destination=env.destination,
        expires_at_ms=env.expires_at_ms,
        key_id=env.key_id,
        nonce=env.nonce,
        payload=env.payload,
    )
    if not verify_ed25519(keys[env.key_id], env.signature, signed):
        raise ProtocolViolation("envelope signature does not verify over the signing input")
    if env.payload_type != payload_type:
        raise ProtocolViolation(
            f"envelope payload type {env.payload_type!r}, expected {payload_type!r}"
        )


# -- node descriptors (docs/federation.md §2) -----------------------------------------------------


def canonical_json(body: Mapping[str, Any]) -> bytes:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sign_descriptor(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """``body`` (a descriptor without ``signature``) with its self-signature."""
    sig = key.sign(DESCRIPTOR_DOMAIN + canonical_json(body))
    return {
        **body,
        "signature": {
            "key_id": key_id_for(raw_public_key(key)),
            "value": base64.b64encode(sig).decode("ascii"),
        },
    }


@dataclass(frozen=True)
class Descriptor:
    """A parsed descriptor whose self-signature verified."""

    doc: dict[str, Any]
    keys: dict[str, bytes]
    active_key_id: str

    @property
    def node_id(self) -> str:
        return str(self.doc["node_id"])


def parse_descriptor(raw: bytes | str) -> Descriptor:
    """Parse a descriptor and check it as docs/federation.md §2 says a peer does.

    Raises:
        ProtocolViolation: malformed, a key id that does not match its key, not exactly one
            active key, or a signature that is not the active key's over the canonical bytes.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolViolation(f"descriptor is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != DESCRIPTOR_FORMAT:
        raise ProtocolViolation(f"descriptor format is not {DESCRIPTOR_FORMAT!r}")
    for name, kind in (
        ("node_id", str),
        ("zone", str),
        ("endpoint", str),
        ("protocol_versions", list),
        ("capabilities", list),
        ("max_batch_records", int),
        ("public_keys", list),
        ("tls_ca_fingerprint", str),
        ("tls_ca_pem", str),
        ("issued_at_ms", int),
        ("signature", dict),
    ):
        if not isinstance(doc.get(name), kind):
            raise ProtocolViolation(f"descriptor field {name!r} missing or not a {kind.__name__}")
    keys: dict[str, bytes] = {}
    active = []
    for entry in doc["public_keys"]:
        try:
            raw_key = base64.b64decode(entry["public_key"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolViolation(f"descriptor key entry malformed: {exc}") from exc
        if key_id_for(raw_key) != entry.get("key_id"):
            raise ProtocolViolation(
                f"descriptor key id {entry.get('key_id')!r} does not match its public key"
            )
        keys[entry["key_id"]] = raw_key
        if entry.get("retired_at_ms") is None:
            active.append(entry["key_id"])
    if len(active) != 1:
        raise ProtocolViolation(f"descriptor has {len(active)} active keys, not exactly one")
    sig = doc["signature"]
    body = {k: v for k, v in doc.items() if k != "signature"}
    if sig.get("key_id") != active[0]:
        raise ProtocolViolation(
            f"descriptor signed by {sig.get('key_id')!r}, not its active key {active[0]}"
        )
    try:
        value = base64.b64decode(sig.get("value", ""), validate=True)
    except (TypeError, ValueError) as exc:
        raise ProtocolViolation("descriptor signature is not base64") from exc
    if not verify_ed25519(keys[active[0]], value, DESCRIPTOR_DOMAIN + canonical_json(body)):
        raise ProtocolViolation(
            "descriptor self-signature does not verify over EAP-DESCRIPTOR-v1\\0 || canonical JSON"
        )
    return Descriptor(doc=doc, keys=keys, active_key_id=active[0])


def version_rank(version: str) -> int:
    m = re.fullmatch(r"eap\.v(\d{1,4})", version)
    return int(m.group(1)) if m else -1


# -- record batches (docs/protocol.md, docs/core.md) ----------------------------------------------

#: Column -> struct format character (little-endian on the wire).
COLUMNS: dict[str, str] = {
    "serial_start": "q",
    "serial_end": "q",
    "interval_start": "q",
    "interval_end": "q",
    "device": "i",
    "source": "B",
    "technology": "B",
    "renewable_ppm": "I",
    "carbon_mg": "I",
    "zone": "i",
    "owner": "i",
}


def batch_header(issuer: str, seq: int, count: int, root: bytes) -> bytes:
    """``"EAP-BATCH-v1\\0" || u16be len(issuer) || issuer || u64be seq || u32be count || root``."""
    return BATCH_DOMAIN + _str16(issuer) + struct.pack(">QI", seq, count) + root


def decode_columns(batch: types_pb2.RecordBatch) -> dict[str, list[int]]:
    """The packed little-endian columns of a batch as lists.

    Raises:
        ProtocolViolation: a column whose length is not ``count`` elements.
    """
    out = {}
    for name, fmt in COLUMNS.items():
        raw = getattr(batch, name)
        size = struct.calcsize("<" + fmt)
        if len(raw) != size * batch.count:
            raise ProtocolViolation(
                f"batch {batch.seq}: column {name} holds {len(raw)} bytes for {batch.count} records"
            )
        out[name] = [v[0] for v in struct.iter_unpack("<" + fmt, raw)]
    return out


def dictionary_digest(entry: str) -> bytes:
    return hashlib.sha256(b"\x02" + entry.encode("utf-8")).digest()


def leaf_hash(
    *,
    serial_start: int,
    serial_end: int,
    interval_start: int,
    interval_end: int,
    source: int,
    technology: int,
    renewable_ppm: int,
    carbon_mg: int,
    device: str,
    zone: str,
    owner: str,
) -> bytes:
    """SHA-256 of the 139-byte leaf of docs/core.md ("Hashing and Merkle trees")."""
    body = (
        b"\x00"
        + struct.pack(
            "<qqqqBBII",
            serial_start,
            serial_end,
            interval_start,
            interval_end,
            source,
            technology,
            renewable_ppm,
            carbon_mg,
        )
        + dictionary_digest(device)
        + dictionary_digest(zone)
        + dictionary_digest(owner)
    )
    return hashlib.sha256(body).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 tree hash with inner nodes ``SHA-256(0x01 || left || right)``."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)

    def root(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return level[lo]
        k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
        return hashlib.sha256(b"\x01" + root(lo, lo + k) + root(lo + k, hi)).digest()

    return root(0, len(level))


def inclusion_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 §2.1.1 audit path of leaf ``index``: sibling hashes from the leaf upward."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} outside a tree of {len(leaves)}")

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = 1 << ((n - 1).bit_length() - 1)
        if m < k:
            return [*path(m, lo, lo + k), merkle_root(leaves[lo + k : hi])]
        return [*path(m - k, lo + k, hi), merkle_root(leaves[lo : lo + k])]

    return path(index, 0, len(leaves))


def pack_columns(cols: Mapping[str, Sequence[int]]) -> dict[str, bytes]:
    """Columns as the packed little-endian bytes of ``RecordBatch`` (``COLUMNS`` types)."""
    return {
        name: b"".join(struct.pack("<" + fmt, int(v)) for v in cols[name])
        for name, fmt in COLUMNS.items()
    }


def batch_leaves(batch: types_pb2.RecordBatch, cols: Mapping[str, list[int]]) -> list[bytes]:
    devices, zones, owners = list(batch.devices), list(batch.zones), list(batch.owners)
    return [
        leaf_hash(
            serial_start=cols["serial_start"][i],
            serial_end=cols["serial_end"][i],
            interval_start=cols["interval_start"][i],
            interval_end=cols["interval_end"][i],
            source=cols["source"][i],
            technology=cols["technology"][i],
            renewable_ppm=cols["renewable_ppm"][i],
            carbon_mg=cols["carbon_mg"][i],
            device=devices[cols["device"][i]],
            zone=zones[cols["zone"][i]],
            owner=owners[cols["owner"][i]],
        )
        for i in range(batch.count)
    ]


def bundle_leaf(bundle: types_pb2.RecordBundle) -> bytes:
    """The batch leaf of an *issued* (never split) bundle, from its own fields."""
    a = bundle.attributes
    return leaf_hash(
        serial_start=bundle.serial_start,
        serial_end=bundle.serial_end,
        interval_start=a.interval.start_unix,
        interval_end=a.interval.end_unix,
        source=a.source,
        technology=a.technology,
        renewable_ppm=a.renewable_ppm,
        carbon_mg=a.carbon_mg_per_kwh,
        device=a.device_id,
        zone=a.zone,
        owner=bundle.owner,
    )


def lineage(parent: bytes, bundle_id: str) -> str:
    """``hex(SHA-256(0x03 || parent lineage (or batch leaf) || utf8(id)))``."""
    return hashlib.sha256(b"\x03" + parent + bundle_id.encode("utf-8")).hexdigest()


def _printable(s: str, limit: int) -> bool:
    return 0 < len(s) <= limit and s.isprintable()


def interval_problem(start: int, end: int) -> str | None:
    """The first interval rule (docs/core.md rules 1-3) that ``[start, end)`` breaks."""
    if end <= start:
        return "INTERVAL_EMPTY"
    d = end - start
    if d > 3600:
        return "INTERVAL_TOO_LONG"
    if 3600 % d or start % d:
        return "INTERVAL_MISALIGNED"
    return None


def batch_rule_problems(
    batch: types_pb2.RecordBatch, cols: Mapping[str, list[int]], *, limit: int = 10
) -> list[str]:
    """Records breaking the rules a verifier checks (docs/federation.md §6 steps 3 and 6):
    dictionaries, indexes, rules 1-11 of docs/core.md with the physical capacity bound."""
    problems: list[str] = []

    def bad(msg: str) -> None:
        if len(problems) < limit:
            problems.append(msg)

    for name, table, bound in (
        ("devices", batch.devices, 256),
        ("zones", batch.zones, 32),
        ("owners", batch.owners, 256),
    ):
        for s in table:
            if not _printable(s, bound):
                bad(f"{name} entry {s!r} is not printable text of 1..{bound} characters")
    ok: list[int] = []
    for i in range(batch.count):
        for col, table in (
            ("device", batch.devices),
            ("zone", batch.zones),
            ("owner", batch.owners),
        ):
            if not 0 <= cols[col][i] < len(table):
                bad(f"records[{i}].{col}: index {cols[col][i]} outside its dictionary")
                break
        else:
            s, e = cols["interval_start"][i], cols["interval_end"][i]
            ss, se = cols["serial_start"][i], cols["serial_end"][i]
            rule = interval_problem(s, e)
            if rule is None and (ss < 0 or se <= ss):
                rule = "SERIAL_RANGE_INVALID"
            if rule is None and cols["source"][i] not in SOURCES:
                rule = "SOURCE_INVALID"
            if rule is None and cols["technology"][i] not in TECHNOLOGIES:
                rule = "TECHNOLOGY_INVALID"
            if rule is None and cols["renewable_ppm"][i] > MAX_RENEWABLE_PPM:
                rule = "RENEWABLE_SHARE_OUT_OF_RANGE"
            if rule is None and cols["carbon_mg"][i] > MAX_CARBON_MG:
                rule = "CARBON_INTENSITY_OUT_OF_RANGE"
            if rule is None and (se - ss) * 3600 > PHYSICAL_CAPACITY_W * (e - s):
                rule = "EXCEEDS_CAPACITY"
            if rule is None:
                ok.append(i)
            else:
                bad(f"records[{i}]: {rule}")
    # Rule 10: intervals of one device intersect without being identical.
    by_device: dict[int, list[tuple[int, int, int]]] = {}
    for i in ok:
        by_device.setdefault(cols["device"][i], []).append(
            (cols["interval_start"][i], cols["interval_end"][i], i)
        )
    for spans in by_device.values():
        spans.sort()
        for (s1, e1, i1), (s2, e2, i2) in itertools.pairwise(spans):
            if s2 < e1 and (s1, e1) != (s2, e2):
                bad(f"records[{i1}] and records[{i2}]: INTERVAL_OVERLAP")
    # Rule 11: serial ranges intersect.
    ranges = sorted((cols["serial_start"][i], cols["serial_end"][i], i) for i in ok)
    for (_s1, e1, i1), (s2, _e2, i2) in itertools.pairwise(ranges):
        if s2 < e1:
            bad(f"records[{i1}] and records[{i2}]: SERIAL_OVERLAP")
    return problems


def serial_span(cols: Mapping[str, list[int]]) -> tuple[int, int]:
    return min(cols["serial_start"]), max(cols["serial_end"])


def wh_of(bundles: Iterable[types_pb2.RecordBundle]) -> int:
    return sum(b.serial_end - b.serial_start for b in bundles)


# -- proofs (docs/protocol.md "Proofs") --------------------------------------------------------

CLAIM_DOMAIN = b"EAP-CLAIM-v1\x00"


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` lead from ``leaf`` at ``index`` of ``size`` to ``root``."""
    if index >= size or any(len(p) != 32 for p in path):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def record_proof_problem(proof: types_pb2.RecordProof, bundle: types_pb2.RecordBundle,
                         keys: Mapping[str, bytes]) -> str | None:
    """The first step of docs/protocol.md "Proofs" that ``proof`` of ``bundle`` fails, with
    ``keys`` (key id -> raw key) of the issuer; None when it holds."""
    h, r = proof.batch, proof.record
    if not h.count or proof.index >= h.count or len(h.merkle_root) != 32:
        return "malformed batch header or index"
    header = batch_header(h.issuer, h.seq, h.count, h.merkle_root)
    if h.key_id not in keys or not verify_ed25519(keys[h.key_id], h.signature, header):
        return f"batch header signature by {h.key_id!r} does not verify"
    if not 0 <= r.serial_start < r.serial_end or interval_problem(
            r.interval.start_unix, r.interval.end_unix):
        return "issued record breaks the record rules"
    leaf = leaf_hash(serial_start=r.serial_start, serial_end=r.serial_end,
                     interval_start=r.interval.start_unix, interval_end=r.interval.end_unix,
                     source=r.source, technology=r.technology, renewable_ppm=r.renewable_ppm,
                     carbon_mg=r.carbon_mg_per_kwh, device=r.device_id, zone=r.zone,
                     owner=r.owner)
    if not verify_inclusion(leaf, proof.index, h.count, list(proof.path), h.merkle_root):
        return "inclusion path does not lead to the signed Merkle root"
    ids = list(proof.lineage)
    if not 1 <= len(ids) <= 128 or ids[0] != f"{h.issuer}/{r.serial_start}-{r.serial_end}":
        return "lineage does not start at the issued record's id"
    lo, hi = r.serial_start, r.serial_end
    lin = lineage(leaf, ids[0])
    for cid in ids[1:]:
        who, _, span = cid.rpartition("/")
        s, _, e = span.partition("-")
        if who != h.issuer or not (s.isdigit() and e.isdigit()):
            return f"malformed lineage id {cid!r}"
        if not lo <= int(s) < int(e) <= hi or (int(s), int(e)) == (lo, hi):
            return f"lineage id {cid!r} is not a strict sub-range of {lo}-{hi}"
        lo, hi = int(s), int(e)
        lin = lineage(bytes.fromhex(lin), cid)
    parent = ids[-2] if len(ids) > 1 else ""
    if (bundle.id, bundle.lineage_hash, bundle.parent_id, bundle.issuer) != (
            ids[-1], lin, parent, h.issuer):
        return "bundle id, lineage hash, parent or issuer differ from the lineage"
    if (bundle.serial_start, bundle.serial_end) != (lo, hi):
        return "bundle serial range differs from its id"
    a = bundle.attributes
    if (a.device_id, a.interval, a.source, a.technology, a.renewable_ppm,
            a.carbon_mg_per_kwh, a.zone) != (r.device_id, r.interval, r.source, r.technology,
                                              r.renewable_ppm, r.carbon_mg_per_kwh, r.zone):
        return "bundle attributes differ from the issued record"
    return None


def claim_body(receipt: types_pb2.ClaimReceipt) -> dict[str, Any]:
    """The signed body of a claim receipt (docs/protocol.md "Claim receipts")."""
    b, a = receipt.bundle, receipt.bundle.attributes
    return {
        "id": receipt.id, "bundle": b.id, "lineage": b.lineage_hash,
        "wh": b.serial_end - b.serial_start, "beneficiary": receipt.beneficiary,
        "purpose": receipt.purpose,
        "consumption": [receipt.consumption.start_unix, receipt.consumption.end_unix],
        "zone": receipt.consumption_zone, "claimed_at_ms": receipt.claimed_at_ms,
        "generation": [a.interval.start_unix, a.interval.end_unix], "source": a.source,
        "carbon_mg": a.carbon_mg_per_kwh,
    }
