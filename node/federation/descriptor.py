"""Node descriptors: a node's signed self-description, exchanged out of band and in ``Hello``.

A descriptor says who a node is and how to reach and verify it: node id, federation endpoint,
Ed25519 public keys with their key ids and validity, the TLS CA it chains to, protocol versions,
capabilities and limits.  It is a JSON object signed by the node's active key::

    {
      "format": "eap-node-descriptor-v1",
      "node_id": "medellin.example",
      "zone": "CO-ANT",
      "endpoint": "fed.medellin.example:7444",
      "protocol_versions": ["eap.v1"],
      "capabilities": ["batches.v1", "transfer.v1"],
      "max_batch_records": 100000,
      "public_keys": [{"key_id": "ed25519:…", "public_key": "<base64>", "created_at_ms": …,
                       "retired_at_ms": null, "valid_until_ms": null}, …],
      "tls_ca_fingerprint": "SHA256:<base64 of SHA-256 of the CA certificate DER>",
      "tls_ca_pem": "-----BEGIN CERTIFICATE-----…",
      "issued_at_ms": 1767225600000,
      "signature": {"key_id": "ed25519:…", "value": "<base64 Ed25519 signature>"}
    }

**Canonical signed bytes** (normative, docs/federation.md §2)::

    b"EAP-DESCRIPTOR-v1\\x00" || canonical_json(body)

where *body* is the descriptor object without its ``signature`` member and ``canonical_json`` is
EAP canonical JSON (docs/protocol.md, "Canonical JSON"): keys sorted by code point, separators
``,`` and ``:``, ASCII-only output with lowercase ``\\uXXXX`` escapes, integers only.

Parsing is strict, so that the body a verifier signs is exactly the body the document holds:
exactly the fields of :data:`BODY_FIELDS` (plus ``signature``), no duplicate member names,
integers that are JSON integers (never ``true``, ``1.0`` or ``"1"``) in 0..2^53-1, canonical
padded base64, ``public_keys`` in ascending ``(created_at_ms, key_id)`` order with exactly the
five members each, and every string within its pattern.  Anything else is refused rather than
repaired.  The signing key must be the descriptor's *active* key (the only one with
``retired_at_ms`` null).

A descriptor is accepted (:meth:`NodeDescriptor.from_json`) only if its self-signature verifies;
whether its *signer* is trusted is the trust list's decision (:mod:`eap.node.federation.peers`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from eap.node.crypto import KeyRing, PublicKeyInfo, is_node_id
from eap.node.crypto.keys import key_id_for, now_ms
from eap.node.domain.rules import ZONE_RE
from eap.node.errors import Unauthenticated, invalid

DESCRIPTOR_FORMAT = "eap-node-descriptor-v1"
DESCRIPTOR_DOMAIN = b"EAP-DESCRIPTOR-v1\x00"
#: Protocol versions this implementation speaks, oldest first.
PROTOCOL_VERSIONS: tuple[str, ...] = ("eap.v1",)
#: Largest descriptor accepted, in bytes (a CA bundle plus a few dozen keys fit easily).
MAX_DESCRIPTOR_BYTES = 64 * 1024
MAX_KEYS = 32
MAX_CAPABILITIES = 64

MAX_PROTOCOL_VERSIONS = 16
MAX_BATCH_RECORDS = 10_000_000
#: Largest integer a descriptor may hold (exact in every JSON implementation).
MAX_JSON_INT = 2**53 - 1
#: The members of the signed body, in canonical (sorted) order.
BODY_FIELDS: tuple[str, ...] = (
    "capabilities", "endpoint", "format", "issued_at_ms", "max_batch_records", "node_id",
    "protocol_versions", "public_keys", "tls_ca_fingerprint", "tls_ca_pem", "zone",
)
KEY_FIELDS: tuple[str, ...] = (
    "created_at_ms", "key_id", "public_key", "retired_at_ms", "valid_until_ms",
)

# Patterns are applied with fullmatch: ``$`` alone would also accept a trailing newline.
_ENDPOINT_RE = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):([1-9][0-9]{0,4})")
_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_KEY_ID_RE = re.compile(r"ed25519:[0-9a-f]{16}")
#: One or more PEM certificate blocks and nothing else (no text around them), LF or CRLF lines.
_PEM_RE = re.compile(r"(?:-----BEGIN CERTIFICATE-----\r?\n(?:[A-Za-z0-9+/=]{1,76}\r?\n)+"
                     r"-----END CERTIFICATE-----\r?\n)+")


def canonical_json(body: Any) -> bytes:
    """EAP canonical JSON (docs/protocol.md): sorted keys, ``,``/``:``, ASCII, integers only.

    Raises:
        ValueError: a float (or NaN), or a string that is not valid Unicode (a lone surrogate).
    """
    _check_canonical_value(body)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _check_canonical_value(value: Any) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        value.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    elif isinstance(value, list | tuple):
        for item in value:
            _check_canonical_value(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is not a string")
            key.encode("utf-8")
            _check_canonical_value(item)
    else:
        raise ValueError(f"{type(value).__name__} has no canonical JSON form (integers only)")


def b64_decode_canonical(text: Any, size: int) -> bytes:
    """Standard base64 (RFC 4648 §4) with ``=`` padding, exactly as :func:`base64.b64encode`
    writes ``size`` bytes: any other spelling of the same bytes is refused (ValueError)."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not an ASCII string")
    raw = base64.b64decode(text, validate=True)
    if len(raw) != size or base64.b64encode(raw).decode("ascii") != text:
        raise ValueError(f"not the canonical padded base64 of {size} bytes")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_int(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_JSON_INT


def ca_fingerprint(pem: bytes) -> str:
    """``SHA256:<base64>`` of the DER of the first certificate in ``pem``."""
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError) as exc:
        raise invalid("tls_ca_pem", "is not a PEM certificate") from exc
    der = cert.public_bytes(serialization.Encoding.DER)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def pem_certificates(pem: bytes) -> bytes:
    """The certificates of ``pem`` re-encoded as bare PEM blocks (comments and other text
    around them dropped, LF line ends): the form a descriptor's ``tls_ca_pem`` must have."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise invalid("tls_ca_pem", "is not a PEM certificate") from exc
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def version_rank(version: str) -> int:
    """Order of a protocol version string ``eap.vN`` (unknown shapes rank lowest)."""
    m = re.fullmatch(r"eap\.v(\d{1,4})", version)
    return int(m.group(1)) if m else -1


def check_endpoint(endpoint: str, field_name: str = "endpoint") -> str:
    """``host:port``: a DNS name or IPv4 address (``A-Z a-z 0-9 . -``, 1..253 characters) or a
    bracketed IPv6 address, then a decimal port 1..65535 without leading zeros."""
    m = _ENDPOINT_RE.fullmatch(endpoint) if isinstance(endpoint, str) else None
    if m is None:
        raise invalid(field_name, "must be host:port (a DNS name, IPv4 or [IPv6] address, "
                                  "port without leading zeros)")
    if not 0 < int(m.group(2)) < 65536:
        raise invalid(field_name, "port must be 1..65535")
    return endpoint


@dataclass(frozen=True)
class NodeDescriptor:
    """A node's signed self-description (see the module docstring for the JSON form)."""

    node_id: str
    zone: str
    endpoint: str
    protocol_versions: tuple[str, ...]
    capabilities: tuple[str, ...]
    max_batch_records: int
    public_keys: dict[str, PublicKeyInfo]
    tls_ca_fingerprint: str
    tls_ca_pem: str
    issued_at_ms: int
    signing_key_id: str = ""
    signature: bytes = field(default=b"", repr=False)

    # -- the signed form -------------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        """Every field except the signature, JSON-ready."""
        keys = sorted(self.public_keys.values(), key=lambda k: (k.created_at_ms, k.key_id))
        return {
            "format": DESCRIPTOR_FORMAT,
            "node_id": self.node_id,
            "zone": self.zone,
            "endpoint": self.endpoint,
            "protocol_versions": list(self.protocol_versions),
            "capabilities": list(self.capabilities),
            "max_batch_records": self.max_batch_records,
            "public_keys": [k.as_dict() for k in keys],
            "tls_ca_fingerprint": self.tls_ca_fingerprint,
            "tls_ca_pem": self.tls_ca_pem,
            "issued_at_ms": self.issued_at_ms,
        }

    def signing_input(self) -> bytes:
        return DESCRIPTOR_DOMAIN + canonical_json(self.body())

    def to_json(self) -> str:
        doc = self.body()
        doc["signature"] = {"key_id": self.signing_key_id,
                            "value": base64.b64encode(self.signature).decode("ascii")}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @property
    def active_key(self) -> PublicKeyInfo:
        active = [k for k in self.public_keys.values() if not k.retired]
        if len(active) != 1:
            raise invalid("public_keys", "must hold exactly one active (not retired) key")
        return active[0]

    def signer_fingerprint(self) -> str:
        """``SHA256:`` fingerprint of the key that signed the descriptor."""
        return self.public_keys[self.signing_key_id].fingerprint()

    def fingerprints(self) -> dict[str, str]:
        return {k: v.fingerprint() for k, v in self.public_keys.items()}

    # -- making and reading ----------------------------------------------------------------------

    def signed_with(self, keyring: KeyRing) -> NodeDescriptor:
        """This descriptor signed by ``keyring``'s active key (which must be its active key)."""
        unsigned = NodeDescriptor(**{**self.__dict__, "signing_key_id": "", "signature": b""})
        key_id, sig = keyring.sign(unsigned.signing_input())
        if key_id != unsigned.active_key.key_id:
            raise invalid("public_keys", "the key ring rotated while signing; try again")
        return NodeDescriptor(**{**unsigned.__dict__, "signing_key_id": key_id, "signature": sig})

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeDescriptor:
        """Parse a descriptor strictly (docs/federation.md §2) and verify its self-signature.

        Raises:
            InvalidArgument: not UTF-8 JSON, or a field missing, unknown, of the wrong type,
                out of its bounds or not in canonical form.
            Unauthenticated: the signature is missing, not by the active key, or invalid.
        """
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if len(raw) > MAX_DESCRIPTOR_BYTES:
            raise invalid("descriptor", f"larger than {MAX_DESCRIPTOR_BYTES} bytes")
        try:
            # UTF-8 only (json.loads would also sniff UTF-16/32 and skip a BOM in bytes).
            doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                             parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise invalid("descriptor", f"not UTF-8 JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise invalid("descriptor", "must be a JSON object")
        desc = cls._parse(doc)
        desc.verify()
        return desc

    @classmethod
    def _parse(cls, doc: dict[str, Any]) -> NodeDescriptor:
        def get(name: str, kind: type) -> Any:
            value = doc.get(name)
            ok = _json_int(value) if kind is int else isinstance(value, kind)
            if not ok:
                what = "an integer in 0..2^53-1" if kind is int else f"a JSON {_KIND[kind]}"
                raise invalid(f"descriptor.{name}", f"missing or not {what}")
            return value

        unknown = sorted(set(doc) - set(BODY_FIELDS) - {"signature"})
        if unknown:
            raise invalid(f"descriptor.{unknown[0]}", "unknown field (not in the signed body)")
        if doc.get("format") != DESCRIPTOR_FORMAT:
            raise invalid("descriptor.format", f"must be {DESCRIPTOR_FORMAT!r}")
        node_id = get("node_id", str)
        if not is_node_id(node_id) or "\n" in node_id:  # is_node_id allows a final LF
            raise invalid("descriptor.node_id", "must be a lowercase DNS-like name")
        zone = get("zone", str)
        if not ZONE_RE.fullmatch(zone):
            raise invalid("descriptor.zone", "must be a grid zone like CO-ANT, ES or NL")
        endpoint = check_endpoint(get("endpoint", str), "descriptor.endpoint")
        versions = tuple(get("protocol_versions", list))
        caps = tuple(get("capabilities", list))
        for name, items, low, limit in (("protocol_versions", versions, 1, MAX_PROTOCOL_VERSIONS),
                                        ("capabilities", caps, 0, MAX_CAPABILITIES)):
            if not low <= len(items) <= limit or not all(
                    isinstance(v, str) and _TOKEN_RE.fullmatch(v) for v in items):
                raise invalid(f"descriptor.{name}", f"must be a list of {low}..{limit} tokens")
            if len(set(items)) != len(items):
                raise invalid(f"descriptor.{name}", "must not repeat a token")
        max_batch = get("max_batch_records", int)
        if not 1 <= max_batch <= MAX_BATCH_RECORDS:
            raise invalid("descriptor.max_batch_records", f"must be 1..{MAX_BATCH_RECORDS:,}")
        keys = _parse_keys(get("public_keys", list))
        pem = get("tls_ca_pem", str)
        fpr = get("tls_ca_fingerprint", str)
        if pem:
            if not _PEM_RE.fullmatch(pem):
                raise invalid("descriptor.tls_ca_pem",
                              "must be PEM CERTIFICATE blocks only, lines ended by LF or CRLF")
            if ca_fingerprint(pem.encode("ascii")) != fpr:
                raise invalid("descriptor.tls_ca_fingerprint", "does not match tls_ca_pem")
        elif fpr:
            raise invalid("descriptor.tls_ca_fingerprint", "must be empty without tls_ca_pem")
        issued_at = get("issued_at_ms", int)
        sig = doc.get("signature")
        if not isinstance(sig, dict) or set(sig) != {"key_id", "value"} \
                or not isinstance(sig["key_id"], str) or not isinstance(sig["value"], str):
            raise Unauthenticated("descriptor is not signed ({key_id, value} strings)")
        try:
            signature = b64_decode_canonical(sig["value"], 64)
        except ValueError as exc:
            raise Unauthenticated(f"descriptor signature: {exc}") from exc
        desc = cls(node_id=node_id, zone=zone, endpoint=endpoint, protocol_versions=versions,
                   capabilities=caps, max_batch_records=max_batch, public_keys=keys,
                   tls_ca_fingerprint=fpr, tls_ca_pem=pem, issued_at_ms=issued_at,
                   signing_key_id=sig["key_id"], signature=signature)
        # Every rule above makes the rebuilt body the document's own; this guards the rules.
        body = {k: v for k, v in doc.items() if k != "signature"}
        if canonical_json(body) != canonical_json(desc.body()):
            raise invalid("descriptor", "not in the canonical form of docs/federation.md §2")
        return desc

    def verify(self) -> None:
        """Check the self-signature: made by the descriptor's active key over the body.

        Raises:
            Unauthenticated: unsigned, signed by another key, or a bad signature.
            InvalidArgument: no single active key.
        """
        active = self.active_key
        if self.signing_key_id != active.key_id:
            raise Unauthenticated(
                f"descriptor of {self.node_id} is signed by {self.signing_key_id!r}, "
                f"not by its active key {active.key_id}")
        try:
            Ed25519PublicKey.from_public_bytes(active.public_key).verify(
                self.signature, self.signing_input())
        except (InvalidSignature, ValueError) as exc:
            raise Unauthenticated(f"descriptor of {self.node_id}: invalid signature") from exc


_KIND = {str: "string", list: "array", dict: "object"}


def _parse_keys(entries: list[Any]) -> dict[str, PublicKeyInfo]:
    """``public_keys``: 1..MAX_KEYS entries of exactly :data:`KEY_FIELDS`, distinct key ids, in
    ascending ``(created_at_ms, key_id)`` order, exactly one with ``retired_at_ms`` null."""
    field_name = "descriptor.public_keys"
    if not 1 <= len(entries) <= MAX_KEYS:
        raise invalid(field_name, f"must hold 1..{MAX_KEYS} keys")
    keys: dict[str, PublicKeyInfo] = {}
    for i, entry in enumerate(entries):
        where = f"{field_name}[{i}]"
        if not isinstance(entry, dict) or set(entry) != set(KEY_FIELDS):
            raise invalid(where, f"must be an object with exactly {', '.join(KEY_FIELDS)}")
        key_id = entry["key_id"]
        if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
            raise invalid(f"{where}.key_id", "must be ed25519: + 16 lowercase hex digits")
        try:
            raw = b64_decode_canonical(entry["public_key"], 32)
        except ValueError as exc:
            raise invalid(f"{where}.public_key", str(exc)) from exc
        if key_id_for(raw) != key_id:
            raise invalid(f"{where}.key_id", f"{key_id} does not match its public key")
        if not _json_int(entry["created_at_ms"]):
            raise invalid(f"{where}.created_at_ms", "must be an integer in 0..2^53-1")
        for name in ("retired_at_ms", "valid_until_ms"):
            if entry[name] is not None and not _json_int(entry[name]):
                raise invalid(f"{where}.{name}", "must be null or an integer in 0..2^53-1")
        if key_id in keys:
            raise invalid(f"{where}.key_id", "appears twice")
        keys[key_id] = PublicKeyInfo(key_id, raw, entry["created_at_ms"],
                                     entry["retired_at_ms"], entry["valid_until_ms"])
    order = [(k.created_at_ms, k.key_id) for k in keys.values()]
    if order != sorted(order):
        raise invalid(field_name, "must be in ascending (created_at_ms, key_id) order")
    if sum(1 for k in keys.values() if not k.retired) != 1:
        raise invalid(field_name, "must hold exactly one active key (retired_at_ms null)")
    return keys


def describe(node: Any, *, endpoint: str | None = None, tls_dir: Path | None = None,
             capabilities: tuple[str, ...] | None = None) -> NodeDescriptor:
    """The signed descriptor of ``node`` (an :class:`~eap.node.domain.node.Node`).

    Args:
        node: the local node (config, key ring).
        endpoint: the advertised federation address (default: ``[federation] endpoint`` of the
            config file, else ``federation_listen``).
        tls_dir: where ``ca.crt`` lives (default ``<home>/tls``); without it the descriptor
            carries no CA.
        capabilities: advertised capabilities (default: what this build implements).
    """
    from eap.node.federation.settings import FederationSettings, local_capabilities

    settings = FederationSettings.load(node.config)
    tls_dir = tls_dir or node.config.home / "tls"
    pem = b""
    if (tls_dir / "ca.crt").exists():
        pem = pem_certificates((tls_dir / "ca.crt").read_bytes())
    desc = NodeDescriptor(
        node_id=node.node_id,
        zone=node.config.zone,
        endpoint=check_endpoint(endpoint or settings.endpoint),
        protocol_versions=PROTOCOL_VERSIONS,
        capabilities=tuple(capabilities if capabilities is not None else local_capabilities()),
        max_batch_records=int(node.config.max_batch_records),
        public_keys=node.keys.public_keys(),
        tls_ca_fingerprint=ca_fingerprint(pem) if pem else "",
        tls_ca_pem=pem.decode("ascii") if pem else "",
        issued_at_ms=now_ms(),
    )
    return desc.signed_with(node.keys)


__all__ = [
    "BODY_FIELDS",
    "DESCRIPTOR_DOMAIN",
    "DESCRIPTOR_FORMAT",
    "KEY_FIELDS",
    "PROTOCOL_VERSIONS",
    "NodeDescriptor",
    "b64_decode_canonical",
    "ca_fingerprint",
    "canonical_json",
    "check_endpoint",
    "describe",
    "pem_certificates",
    "version_rank",
]
