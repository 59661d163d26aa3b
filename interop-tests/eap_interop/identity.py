"""The suite's client identity for the federation cases: a node a node under test trusts.

A federation server accepts calls only from peers on its trust list, over mutual TLS with a
certificate from the federation CA (docs/federation.md §5).  ``run.py identity`` writes a
*kit* the operator of the node under test enrols once::

    KIT/
      identity.json         node id, key id and fingerprint of the signing key
      signing.pem           Ed25519 private key (PKCS#8, 0600): signs envelopes
      descriptor.json       the signed node descriptor: `eap-node peer add KIT/descriptor.json
                            --fingerprint SHA256:...`
      tls/client.key        ECDSA P-256 TLS key (0600)
      tls/client.crt        TLS certificate CN = SAN = node id, from the federation CA
                            (minted here when the CA's key is given; otherwise tls/client.csr
                            is written for the federation's CA to sign)
      tls/ca.crt            the federation CA (verifies the node's server certificate)
      stranger/...          the same for a second node id that is *not* enrolled (the
                            unknown-peer case); never add it to a trust list

Only ``cryptography`` is used, so the kit does not depend on the implementation under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eap_interop import protocol

DEFAULT_NODE_ID = "interop-client.example"
#: Not a reachable federation endpoint: without ``--endpoint`` the suite's fake peer (the
#: transfer and holdings cases) cannot be reached, and those cases are skipped.
DEFAULT_ENDPOINT = "127.0.0.1:9"
CERT_DAYS = 30


@dataclass(frozen=True)
class Identity:
    """A federation client identity: node id, signing key, TLS material."""

    node_id: str
    signing_key: Ed25519PrivateKey
    descriptor: bytes
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    tls_ca: bytes | None = None

    @property
    def public_key(self) -> bytes:
        return protocol.raw_public_key(self.signing_key)

    @property
    def key_id(self) -> str:
        return protocol.key_id_for(self.public_key)

    @property
    def fingerprint(self) -> str:
        return protocol.fingerprint(self.public_key)

    def with_tls(self, *, cert: bytes | None, key: bytes | None, ca: bytes | None) -> Identity:
        return Identity(
            self.node_id,
            self.signing_key,
            self.descriptor,
            cert or self.tls_cert,
            key or self.tls_key,
            ca or self.tls_ca,
        )


@dataclass(frozen=True)
class Kit:
    """An identity kit on disk: the enrolled identity and the stranger (if minted)."""

    path: Path
    client: Identity
    stranger: Identity | None


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def _pem_private(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca_fingerprint(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificates(pem)[0]
    der = cert.public_bytes(serialization.Encoding.DER)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def descriptor_json(
    node_id: str,
    key: Ed25519PrivateKey,
    *,
    endpoint: str,
    zone: str = "ZZ",
    ca_pem: bytes | None = None,
) -> bytes:
    """A signed descriptor (docs/federation.md §2) advertising no capability: the suite
    serves only while a fake-peer case runs, and offers its capabilities in that case's
    Hello."""
    pub = protocol.raw_public_key(key)
    at = protocol.now_ms()
    body = {
        "format": protocol.DESCRIPTOR_FORMAT,
        "node_id": node_id,
        "zone": zone,
        "endpoint": endpoint,
        "protocol_versions": ["eap.v1"],
        "capabilities": [],
        "max_batch_records": 100_000,
        "public_keys": [
            {
                "key_id": protocol.key_id_for(pub),
                "public_key": base64.b64encode(pub).decode("ascii"),
                "created_at_ms": at,
                "retired_at_ms": None,
                "valid_until_ms": None,
            }
        ],
        "tls_ca_fingerprint": _ca_fingerprint(ca_pem) if ca_pem else "",
        "tls_ca_pem": ca_pem.decode("ascii") if ca_pem else "",
        "issued_at_ms": at,
    }
    return (
        json.dumps(protocol.sign_descriptor(body, key), indent=2, sort_keys=True) + "\n"
    ).encode()


def _subject(node_id: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])


def issue_client_cert(
    node_id: str,
    tls_key: ec.EllipticCurvePrivateKey,
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    days: int = CERT_DAYS,
) -> bytes:
    """A client (and server) TLS certificate for ``node_id`` signed by the federation CA:
    CN = node id, DNS SAN = node id, as docs/security.md §5 requires of a node."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    ca_public = ca_cert.public_key()
    if not isinstance(ca_public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError("the federation CA key must be ECDSA or RSA")
    now = dt.datetime.now(dt.UTC)
    end = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(node_id))
        .issuer_name(ca_cert.subject)
        .public_key(tls_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - dt.timedelta(minutes=5), ca_cert.not_valid_before_utc))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(tls_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
        )
    )
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM)


def _csr(node_id: str, tls_key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(node_id))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
        .sign(tls_key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _make_one(
    out: Path, node_id: str, *, endpoint: str, ca_cert: bytes | None, ca_key: bytes | None
) -> Identity:
    if not protocol.NODE_ID_RE.match(node_id):
        raise ValueError(f"{node_id!r} is not a lowercase DNS-like node id")
    signing = Ed25519PrivateKey.generate()
    tls_key = ec.generate_private_key(ec.SECP256R1())
    _write_private(out / "signing.pem", _pem_private(signing))
    _write_private(out / "tls" / "client.key", _pem_private(tls_key))
    cert = None
    if ca_cert is not None and ca_key is not None:
        cert = issue_client_cert(node_id, tls_key, ca_cert, ca_key)
        (out / "tls" / "client.crt").write_bytes(cert)
    else:
        (out / "tls" / "client.csr").write_bytes(_csr(node_id, tls_key))
    if ca_cert is not None:
        (out / "tls" / "ca.crt").write_bytes(ca_cert)
    desc = descriptor_json(node_id, signing, endpoint=endpoint, ca_pem=ca_cert)
    (out / "descriptor.json").write_bytes(desc)
    ident = Identity(node_id, signing, desc, cert, _pem_private(tls_key), ca_cert)
    (out / "identity.json").write_text(
        json.dumps(
            {"node_id": node_id, "key_id": ident.key_id, "fingerprint": ident.fingerprint}, indent=2
        )
        + "\n"
    )
    return ident


def make_kit(
    out: Path,
    node_id: str = DEFAULT_NODE_ID,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    ca_cert: bytes | None = None,
    ca_key: bytes | None = None,
    stranger_id: str | None = None,
) -> Kit:
    """Write a kit into ``out`` (created; must not hold one already).

    Args:
        node_id: the identity the operator enrols.
        endpoint: advertised in the descriptor: where the node reaches the fake peer.
        ca_cert, ca_key: the federation CA (PEM); with the key, client certificates are minted
            for ``node_id`` and for the stranger; without it, CSRs are written instead.
        stranger_id: node id of the never-enrolled identity (default ``stranger-<node_id>``).
    """
    out = Path(out)
    if (out / "identity.json").exists():
        raise FileExistsError(f"{out} holds an identity kit already")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    client = _make_one(out, node_id, endpoint=endpoint, ca_cert=ca_cert, ca_key=ca_key)
    stranger = _make_one(
        out / "stranger",
        stranger_id or f"stranger-{node_id}",
        endpoint=endpoint,
        ca_cert=ca_cert,
        ca_key=ca_key,
    )
    return Kit(out, client, stranger)


def _load_one(path: Path) -> Identity:
    meta = json.loads((path / "identity.json").read_text())
    key = serialization.load_pem_private_key((path / "signing.pem").read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path / 'signing.pem'} is not an Ed25519 private key")

    def read(name: str) -> bytes | None:
        p = path / "tls" / name
        return p.read_bytes() if p.exists() else None

    return Identity(
        meta["node_id"],
        key,
        (path / "descriptor.json").read_bytes(),
        read("client.crt"),
        read("client.key"),
        read("ca.crt"),
    )


def load_kit(path: Path) -> Kit:
    """Read a kit written by :func:`make_kit` (the stranger is optional)."""
    path = Path(path)
    stranger = (
        _load_one(path / "stranger") if (path / "stranger" / "identity.json").exists() else None
    )
    return Kit(path, _load_one(path), stranger)
