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

**Canonical signed bytes** (normative)::

    b"EAP-DESCRIPTOR-v1\\x00" || UTF-8( JSON(body) )

where *body* is the object without its ``signature`` member, serialised with keys sorted,
no insignificant whitespace (separators ``,`` and ``:``) and ASCII-only output (non-ASCII as
``\\uXXXX``).  Bodies hold only strings, integers, booleans, nulls, lists and objects (never
floats), so this serialisation is unambiguous.  The signing key must be the descriptor's
*active* key (the one with ``retired_at_ms`` null).

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
from eap.node.crypto.keys import now_ms
from eap.node.errors import Unauthenticated, invalid

DESCRIPTOR_FORMAT = "eap-node-descriptor-v1"
DESCRIPTOR_DOMAIN = b"EAP-DESCRIPTOR-v1\x00"
#: Protocol versions this implementation speaks, oldest first.
PROTOCOL_VERSIONS: tuple[str, ...] = ("eap.v1",)
#: Largest descriptor accepted, in bytes (a CA bundle plus a few dozen keys fit easily).
MAX_DESCRIPTOR_BYTES = 64 * 1024
MAX_KEYS = 32
MAX_CAPABILITIES = 64

_ENDPOINT_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}$")
_TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def canonical_json(body: dict[str, Any]) -> bytes:
    """The canonical serialisation used for signing (see the module docstring)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def ca_fingerprint(pem: bytes) -> str:
    """``SHA256:<base64>`` of the DER of the first certificate in ``pem``."""
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError) as exc:
        raise invalid("tls_ca_pem", "is not a PEM certificate") from exc
    der = cert.public_bytes(serialization.Encoding.DER)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def version_rank(version: str) -> int:
    """Order of a protocol version string ``eap.vN`` (unknown shapes rank lowest)."""
    m = re.fullmatch(r"eap\.v(\d{1,4})", version)
    return int(m.group(1)) if m else -1


def check_endpoint(endpoint: str, field_name: str = "endpoint") -> str:
    if not isinstance(endpoint, str) or not _ENDPOINT_RE.match(endpoint):
        raise invalid(field_name, "must be host:port (a DNS name, IPv4 or [IPv6] address)")
    if not 0 < int(endpoint.rsplit(":", 1)[1]) < 65536:
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
        """Parse a descriptor and verify its self-signature.

        Raises:
            InvalidArgument: malformed JSON or a field out of its bounds.
            Unauthenticated: the signature is missing, not by the active key, or invalid.
        """
        raw = text.encode() if isinstance(text, str) else bytes(text)
        if len(raw) > MAX_DESCRIPTOR_BYTES:
            raise invalid("descriptor", f"larger than {MAX_DESCRIPTOR_BYTES} bytes")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid("descriptor", f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise invalid("descriptor", "must be a JSON object")
        desc = cls._parse(doc)
        desc.verify()
        return desc

    @classmethod
    def _parse(cls, doc: dict[str, Any]) -> NodeDescriptor:
        def get(name: str, kind: type | tuple[type, ...]) -> Any:
            value = doc.get(name)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
                raise invalid(f"descriptor.{name}", "missing or of the wrong type")
            return value

        if doc.get("format") != DESCRIPTOR_FORMAT:
            raise invalid("descriptor.format", f"must be {DESCRIPTOR_FORMAT!r}")
        node_id = get("node_id", str)
        if not is_node_id(node_id):
            raise invalid("descriptor.node_id", "must be a lowercase DNS-like name")
        endpoint = check_endpoint(get("endpoint", str), "descriptor.endpoint")
        versions = tuple(get("protocol_versions", list))
        caps = tuple(get("capabilities", list))
        for name, items, limit in (("protocol_versions", versions, 16),
                                   ("capabilities", caps, MAX_CAPABILITIES)):
            if len(items) > limit or not all(isinstance(v, str) and _TOKEN_RE.match(v)
                                             for v in items):
                raise invalid(f"descriptor.{name}", "must be a short list of short tokens")
        key_list = get("public_keys", list)
        if not 1 <= len(key_list) <= MAX_KEYS:
            raise invalid("descriptor.public_keys", f"must hold 1..{MAX_KEYS} keys")
        keys: dict[str, PublicKeyInfo] = {}
        for entry in key_list:
            if not isinstance(entry, dict):
                raise invalid("descriptor.public_keys", "entries must be objects")
            info = PublicKeyInfo.from_dict(entry)
            keys[info.key_id] = info
        sig = doc.get("signature")
        if not isinstance(sig, dict) or not isinstance(sig.get("key_id"), str) \
                or not isinstance(sig.get("value"), str):
            raise Unauthenticated("descriptor is not signed")
        try:
            signature = base64.b64decode(sig["value"], validate=True)
        except ValueError as exc:
            raise Unauthenticated("descriptor signature is not base64") from exc
        zone = get("zone", str)
        if len(zone) > 32:
            raise invalid("descriptor.zone", "at most 32 characters")
        max_batch = get("max_batch_records", int)
        if not 1 <= max_batch <= 10_000_000:
            raise invalid("descriptor.max_batch_records", "must be 1..10,000,000")
        pem = get("tls_ca_pem", str)
        fpr = get("tls_ca_fingerprint", str)
        if pem and ca_fingerprint(pem.encode()) != fpr:
            raise invalid("descriptor.tls_ca_fingerprint", "does not match tls_ca_pem")
        return cls(node_id=node_id, zone=zone, endpoint=endpoint, protocol_versions=versions,
                   capabilities=caps, max_batch_records=max_batch, public_keys=keys,
                   tls_ca_fingerprint=fpr, tls_ca_pem=pem,
                   issued_at_ms=get("issued_at_ms", int), signing_key_id=sig["key_id"],
                   signature=signature)

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
        pem = (tls_dir / "ca.crt").read_bytes()
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
    "DESCRIPTOR_DOMAIN",
    "DESCRIPTOR_FORMAT",
    "PROTOCOL_VERSIONS",
    "NodeDescriptor",
    "ca_fingerprint",
    "canonical_json",
    "check_endpoint",
    "describe",
    "version_rank",
]
