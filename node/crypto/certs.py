"""A small federation PKI for tests and demos, and the TLS glue for gRPC mutual TLS.

Every node holds a certificate for its node id, issued by a federation CA that all peers
trust; connections are mutual TLS, so each side learns the other's node id from the verified
certificate.  Keys are ECDSA P-256 (gRPC's BoringSSL does not accept Ed25519 certificates);
the Ed25519 keys of :mod:`eap.node.crypto.keys` sign envelopes, not TLS handshakes.

Files::

    <ca dir>/ca.crt    CA certificate (0644)        <node tls dir>/node.crt  node certificate (0644)
    <ca dir>/ca.key    CA private key (0600)        <node tls dir>/node.key  node private key (0600)
                                                    <node tls dir>/ca.crt    trusted CA(s) (0644)

A node certificate has the node id as subject CN *and* as a DNS subjectAltName (plus the other
hosts it is reached by), extended key usage serverAuth + clientAuth, and never outlives its CA.
A production federation would use its own CA (or several, concatenated in ``ca.crt``); only
:func:`create_ca` and :func:`issue_node_cert` are demo tooling, the rest applies unchanged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eap.node.crypto import _files
from eap.node.errors import AlreadyExists, ConfigError, Unauthenticated, invalid

logger = logging.getLogger(__name__)

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
NODE_CERT_FILE = "node.crt"
NODE_KEY_FILE = "node.key"
DEFAULT_CA_DAYS = 3650
DEFAULT_NODE_DAYS = 365
#: Certificates start this long before "now", so a peer whose clock is behind accepts them.
BACKDATE = dt.timedelta(minutes=5)
#: Loading warns when a node certificate expires sooner than this.
RENEW_WARNING = dt.timedelta(days=14)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NODE_ID_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def is_node_id(value: str) -> bool:
    """Whether ``value`` is a valid node id: a lowercase DNS-like name of at most 253 chars."""
    return isinstance(value, str) and len(value) <= 253 and bool(_NODE_ID_RE.match(value))


def _check_node_id(node_id: str) -> None:
    if not is_node_id(node_id):
        raise invalid(
            "node_id", "must be a lowercase DNS-like name (letters, digits, '-', '.'), <= 253 chars"
        )


@dataclass(frozen=True)
class TlsFiles:
    """Where a certificate, its private key and the trusted CA certificate(s) were written."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes ready for gRPC, plus the node id the certificate names.

    Attributes:
        certificate_chain: the node certificate (and any intermediates), PEM.
        private_key: its private key, PEM PKCS#8.
        root_certificates: the CA certificate(s) peers must chain to, PEM.
        node_id: the node id in the certificate (subject CN, also a DNS SAN).
        not_valid_after: the certificate's expiry (UTC).
    """

    certificate_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    root_certificates: bytes = field(repr=False)
    node_id: str
    not_valid_after: dt.datetime

    def server_credentials(self, *, require_client_auth: bool = True) -> grpc.ServerCredentials:
        """Server credentials that demand and verify a client certificate from the same CA."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.root_certificates,
            require_client_auth=require_client_auth,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials presenting this node's certificate and trusting only the CA."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def peer_channel_options(node_id: str) -> list[tuple[str, str]]:
    """Channel options that make TLS check the server certificate against ``node_id``.

    Use them when dialling a peer at an address (IP, load balancer) that is not its node id:
    the handshake then fails unless the server proves it is that peer.
    """
    _check_node_id(node_id)
    return [("grpc.ssl_target_name_override", node_id)]


# -- demo PKI ---------------------------------------------------------------------------------


def _utcnow(now: float | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromtimestamp(now, dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    if overwrite:
        _files.replace_file(path, data, mode)
    else:
        _files.create_file(path, data, mode)


def create_ca(
    ca_dir: str | Path,
    name: str = "EAP demo federation CA",
    days: int = DEFAULT_CA_DAYS,
    *,
    now: float | None = None,
) -> TlsFiles:
    """Create a federation CA (ECDSA P-256, self-signed) in ``ca_dir``.

    Raises:
        AlreadyExists: ``ca_dir`` holds a CA key already (it is never overwritten).
        InvalidArgument: ``days`` is not positive or ``name`` is empty.
    """
    if days <= 0:
        raise invalid("days", "must be positive")
    if not name:
        raise invalid("name", "must not be empty")
    ca_dir = Path(ca_dir)
    _files.ensure_private_dir(ca_dir)
    key_path, cert_path = ca_dir / CA_KEY_FILE, ca_dir / CA_CERT_FILE
    if key_path.exists() or cert_path.exists():
        raise AlreadyExists(f"a CA exists already in {ca_dir}")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = _utcnow(now)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _files.create_file(key_path, _key_pem(key), _files.PRIVATE_FILE_MODE)
    _files.create_file(
        cert_path, cert.public_bytes(serialization.Encoding.PEM), _files.PUBLIC_FILE_MODE
    )
    logger.info("created federation CA %r in %s", name, ca_dir)
    return TlsFiles(cert=cert_path, key=key_path, ca=cert_path)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bytes]:
    ca_pem = _files.read_public_file(ca_dir / CA_CERT_FILE)
    key_pem = _files.read_private_file(ca_dir / CA_KEY_FILE)
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_pem)
        ca_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the CA in {ca_dir}: {exc!s}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"CA key in {ca_dir} is not an EC key")
    if ca_key.public_key() != ca_cert.public_key():
        raise ConfigError(f"CA key in {ca_dir} does not match the CA certificate")
    return ca_cert, ca_key, ca_pem


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            general: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            general = x509.DNSName(host)
        if general not in names:
            names.append(general)
    return names


def issue_node_cert(
    ca_dir: str | Path,
    node_id: str,
    out_dir: str | Path,
    hosts: Sequence[str] | None = None,
    *,
    days: int = DEFAULT_NODE_DAYS,
    now: float | None = None,
    overwrite: bool = False,
) -> TlsFiles:
    """Issue a TLS certificate for ``node_id`` signed by the CA in ``ca_dir``.

    Writes ``node.crt``, ``node.key`` (0600) and a copy of ``ca.crt`` into ``out_dir`` (0700).

    Args:
        ca_dir: directory made by :func:`create_ca`.
        node_id: the node id; becomes the subject CN and a DNS SAN.
        out_dir: the node's TLS directory.
        hosts: further names (DNS) or addresses (IP) the node is reached by; default
            ``["localhost", "127.0.0.1", node_id]``.  ``node_id`` is always included.
        days: validity; capped at the CA's own expiry.
        now: issuance time in seconds, for tests.
        overwrite: replace existing files (renewal) instead of refusing.

    Raises:
        InvalidArgument: a malformed node id or host, or non-positive ``days``.
        AlreadyExists: ``out_dir`` holds a certificate already and ``overwrite`` is false.
        ConfigError: the CA cannot be read (missing, loose permissions, mismatched).
    """
    _check_node_id(node_id)
    if days <= 0:
        raise invalid("days", "must be positive")
    hosts = list(hosts) if hosts is not None else ["localhost", "127.0.0.1", node_id]
    if node_id not in hosts:
        hosts.append(node_id)
    for host in hosts:
        if not isinstance(host, str) or not host or len(host) > 253 or not host.isascii():
            raise invalid("hosts", f"{host!r} is not a host name or IP address")
    ca_cert, ca_key, ca_pem = _load_ca(Path(ca_dir))
    out_dir = Path(out_dir)
    _files.ensure_private_dir(out_dir)
    cert_path, key_path, ca_path = (
        out_dir / NODE_CERT_FILE,
        out_dir / NODE_KEY_FILE,
        out_dir / CA_CERT_FILE,
    )
    if not overwrite and (cert_path.exists() or key_path.exists()):
        raise AlreadyExists(f"{out_dir} holds a node certificate already")

    key = ec.generate_private_key(ec.SECP256R1())
    start = _utcnow(now)
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(start - BACKDATE, ca_cert.not_valid_before_utc))
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
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Key first: a crash in between leaves a key/cert mismatch that load_tls_material reports.
    _write(key_path, _key_pem(key), _files.PRIVATE_FILE_MODE, overwrite)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), _files.PUBLIC_FILE_MODE, True)
    _write(ca_path, ca_pem, _files.PUBLIC_FILE_MODE, True)
    logger.info("issued TLS certificate for %s in %s (until %s)", node_id, out_dir, end.isoformat())
    return TlsFiles(cert=cert_path, key=key_path, ca=ca_path)


# -- loading ----------------------------------------------------------------------------------


def node_id_from_certificate(cert: x509.Certificate) -> str:
    """The node id a certificate names: its single subject CN, which must also be a DNS SAN.

    Raises:
        Unauthenticated: no CN, several CNs, a CN that is not a node id, or not among the SANs.
    """
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    return _node_id_from(
        [c.value.encode() if isinstance(c.value, str) else c.value for c in cns],
        [d.encode() for d in dns],
    )


def _node_id_from(cns: Sequence[bytes], sans: Sequence[bytes]) -> str:
    if len(cns) != 1:
        raise Unauthenticated("peer certificate must have exactly one common name (its node id)")
    try:
        node_id = cns[0].decode("ascii")
    except UnicodeDecodeError as exc:
        raise Unauthenticated("peer certificate common name is not a node id") from exc
    if not is_node_id(node_id):
        raise Unauthenticated(f"peer certificate common name {node_id!r} is not a node id")
    if cns[0] not in sans:
        raise Unauthenticated(f"peer certificate does not list {node_id!r} as a subjectAltName")
    return node_id


def peer_node_id_from_auth_context(context: Any) -> str:
    """The node id of the mutual-TLS peer of a gRPC call.

    Args:
        context: a ``grpc.ServicerContext`` (or ``grpc.aio`` one), or the mapping its
            ``auth_context()`` returns.

    Returns:
        The peer certificate's subject CN, checked to be a node id that is also one of the
        certificate's subjectAltNames.  gRPC has verified the certificate against the CA.

    Raises:
        Unauthenticated: the call did not come over TLS with a client certificate, or the
            certificate does not name a node id consistently.
    """
    auth: Mapping[str, Sequence[bytes]] = (
        context if isinstance(context, Mapping) else context.auth_context()
    )
    if list(auth.get("transport_security_type", [])) != [b"ssl"]:
        raise Unauthenticated("federation calls need mutual TLS")
    cns = list(auth.get("x509_common_name", []))
    if not cns:
        raise Unauthenticated("no client certificate presented")
    return _node_id_from(cns, list(auth.get("x509_subject_alternative_name", [])))


def load_tls_material(
    tls_dir: str | Path | TlsFiles,
    *,
    expected_node_id: str | None = None,
    now: float | None = None,
) -> TlsMaterial:
    """Read and check a node's TLS files, ready for gRPC credentials.

    Checks: the key file is owner-only; the key matches the certificate; the certificate
    chains to ``ca.crt`` and is valid now for both serverAuth (for its node id) and
    clientAuth; it names a node id (``expected_node_id`` if given).  Warns in the log when
    the certificate expires within 14 days.

    Raises:
        ConfigError: any check fails, with what to fix.
    """
    files = (
        tls_dir
        if isinstance(tls_dir, TlsFiles)
        else TlsFiles(
            cert=Path(tls_dir) / NODE_CERT_FILE,
            key=Path(tls_dir) / NODE_KEY_FILE,
            ca=Path(tls_dir) / CA_CERT_FILE,
        )
    )
    chain_pem = _files.read_public_file(files.cert)
    key_pem = _files.read_private_file(files.key)
    ca_pem = _files.read_public_file(files.ca)
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        roots = x509.load_pem_x509_certificates(ca_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read TLS files {files.cert}, {files.key}: {exc!s}") from exc
    leaf = chain[0]
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"{files.key}: gRPC TLS needs an ECDSA or RSA key")
    if key.public_key() != leaf.public_key():
        raise ConfigError(f"{files.key} does not match the certificate {files.cert}")
    try:
        node_id = node_id_from_certificate(leaf)
    except Unauthenticated as exc:
        raise ConfigError(f"{files.cert}: {exc.message}") from exc
    if expected_node_id is not None and node_id != expected_node_id:
        raise ConfigError(f"{files.cert} is for {node_id!r}, this node is {expected_node_id!r}")
    at = _utcnow(now)
    try:
        builder = verification.PolicyBuilder().store(verification.Store(roots)).time(at)
        builder.build_server_verifier(x509.DNSName(node_id)).verify(leaf, chain[1:])
        builder.build_client_verifier().verify(leaf, chain[1:])
    except verification.VerificationError as exc:
        raise ConfigError(
            f"{files.cert} is not a valid node certificate under {files.ca} at "
            f"{at.isoformat()}: {exc!s}"
        ) from exc
    expiry = leaf.not_valid_after_utc
    if expiry - at < RENEW_WARNING:
        logger.warning("TLS certificate %s for %s expires %s", files.cert, node_id, expiry)
    return TlsMaterial(
        certificate_chain=chain_pem,
        private_key=key_pem,
        root_certificates=ca_pem,
        node_id=node_id,
        not_valid_after=expiry,
    )
