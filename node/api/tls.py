"""TLS of the local API (``eap.v1.NodeApi``): server settings and checks, client credentials.

The local API authenticates callers with bearer tokens, so it must not be reachable in clear
over a network.  ``[api]`` of ``eap-node.toml``::

    [api]
    listen = "0.0.0.0:7443"
    tls_cert = "tls/node.crt"          # PEM certificate (chain); relative to the home
    tls_key = "tls/node.key"           # its private key: owner-only (0600), like every key
    client_ca = "tls/ca.crt"           # optional: CA(s) of client certificates
    require_client_cert = false        # with client_ca: refuse clients without a certificate
    allow_plaintext_remote = false     # explicit opt-out: plaintext on a non-loopback address
    health_listen = "0.0.0.0:7445"     # optional plaintext port with grpc.health.v1 only

:func:`resolve` turns the config (and ``eap-node serve`` options) into :class:`ApiSettings`
and refuses, with a :class:`~eap.node.errors.ConfigError` (exit 12), a non-loopback API
without TLS unless ``allow_plaintext_remote`` is set.  Certificates come from any CA; the
node's demo PKI (``eap-node certs issue``) names ``localhost``, ``127.0.0.1``, the node id and
every ``--host``.

Clients: :func:`channel_credentials` builds gRPC channel credentials from a CA file (and an
optional client certificate and key); :func:`api_channel` dials an API with them;
:func:`local_api_channel` is for clients that share the node's home (CLI helpers, local
federations, the container health probe): it reads ``[api]`` and dials the API the way it
is served.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from eap.node.config import NodeConfig
from eap.node.crypto import _files
from eap.node.errors import ConfigError

log = logging.getLogger(__name__)

#: Loading warns when the API certificate expires sooner than this.
RENEW_WARNING = dt.timedelta(days=14)


def listen_host(address: str) -> str:
    """The host part of a gRPC ``host:port`` address, brackets of IPv6 removed."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]")


def is_loopback(address: str) -> bool:
    """Whether a listen address can only be reached from this machine.

    Loopback IPs (127.0.0.0/8, ::1), ``localhost`` and Unix sockets are; wildcards
    (``0.0.0.0``, ``::``, an empty host), other addresses and other names are not.
    """
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen_host(address)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def probe_address(listen: str) -> str:
    """Where a client on the same machine reaches a server bound to ``listen``."""
    host = listen_host(listen)
    port = listen.rsplit(":", 1)[1]
    if host in ("", "0.0.0.0", "*"):
        return f"127.0.0.1:{port}"
    if host == "::":
        return f"[::1]:{port}"
    return listen


@dataclass(frozen=True)
class ApiSettings:
    """How ``eap-node serve`` exposes the local API (resolved, paths absolute)."""

    listen: str
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    require_client_cert: bool = False
    allow_plaintext_remote: bool = False
    health_listen: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def check(self) -> None:
        """Refuse unusable or unsafe combinations.

        Raises:
            ConfigError: a certificate without its key (or the reverse); client-certificate
                settings without TLS; ``require_client_cert`` without ``client_ca``; a
                non-loopback plaintext API without ``allow_plaintext_remote``.
        """
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("[api] tls_cert and tls_key go together: set both or neither")
        if not self.tls and (self.client_ca or self.require_client_cert):
            raise ConfigError("[api] client_ca and require_client_cert need tls_cert and tls_key")
        if self.require_client_cert and self.client_ca is None:
            raise ConfigError("[api] require_client_cert needs client_ca (the clients' CA)")
        if not self.tls and not is_loopback(self.listen) and not self.allow_plaintext_remote:
            raise ConfigError(
                f"refusing to serve the local API on {self.listen} without TLS: bearer tokens "
                f"would cross the network in clear. Set [api] tls_cert and tls_key "
                f"(`eap-node certs issue` makes them), or listen on loopback "
                f"(127.0.0.1), or opt out explicitly with [api] allow_plaintext_remote = true"
            )

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """gRPC server credentials (None for plaintext), after checking the files.

        Raises:
            ConfigError: a file is missing, has loose permissions, does not parse, the key
                does not match the certificate, or the certificate is not valid now.
        """
        if not self.tls:
            return None
        assert self.tls_cert is not None and self.tls_key is not None
        chain_pem, key_pem = load_server_pair(self.tls_cert, self.tls_key)
        roots = None
        if self.client_ca is not None:
            roots = _files.read_public_file(self.client_ca)
            try:
                x509.load_pem_x509_certificates(roots)
            except ValueError as exc:
                raise ConfigError(f"[api] client_ca {self.client_ca}: {exc!s}") from exc
        return grpc.ssl_server_credentials(
            [(key_pem, chain_pem)],
            root_certificates=roots,
            require_client_auth=self.require_client_cert,
        )

    def describe(self) -> str:
        if not self.tls:
            return "plaintext"
        if self.require_client_cert:
            return "TLS, client certificate required"
        return "TLS, client certificate optional" if self.client_ca else "TLS"


def resolve(
    config: NodeConfig,
    *,
    listen: str | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    client_ca: str | Path | None = None,
    require_client_cert: bool | None = None,
    allow_plaintext_remote: bool | None = None,
) -> ApiSettings:
    """The API settings of ``config``, overridden by whatever is given (``serve`` options),
    checked with :meth:`ApiSettings.check`."""
    settings = ApiSettings(
        listen=config.api_listen,
        tls_cert=config.home_path(config.api_tls_cert),
        tls_key=config.home_path(config.api_tls_key),
        client_ca=config.home_path(config.api_client_ca),
        require_client_cert=config.api_require_client_cert,
        allow_plaintext_remote=config.api_allow_plaintext_remote,
        health_listen=config.api_health_listen or None,
    )
    overrides: dict = {}
    if listen:
        overrides["listen"] = listen
    for name, value in (("tls_cert", tls_cert), ("tls_key", tls_key), ("client_ca", client_ca)):
        if value:
            overrides[name] = Path(value).expanduser().absolute()
    if require_client_cert is not None:
        overrides["require_client_cert"] = require_client_cert
    if allow_plaintext_remote is not None:
        overrides["allow_plaintext_remote"] = allow_plaintext_remote
    settings = replace(settings, **overrides)
    settings.check()
    return settings


def load_server_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes]:
    """PEM certificate chain and key of a TLS server, checked (see ``server_credentials``)."""
    chain_pem = _files.read_public_file(cert_path)
    key_pem = _files.read_private_file(key_path)  # owner-only, like every private key
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read API TLS files {cert_path}, {key_path}: {exc!s}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"{key_path}: gRPC TLS needs an ECDSA or RSA key")
    leaf = chain[0]
    if key.public_key() != leaf.public_key():
        raise ConfigError(f"{key_path} does not match the certificate {cert_path}")
    now = dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        raise ConfigError(
            f"{cert_path} is not valid now (valid {leaf.not_valid_before_utc.isoformat()} to "
            f"{leaf.not_valid_after_utc.isoformat()})"
        )
    if leaf.not_valid_after_utc - now < RENEW_WARNING:
        log.warning("API TLS certificate %s expires %s", cert_path, leaf.not_valid_after_utc)
    return chain_pem, key_pem


# -- clients ----------------------------------------------------------------------------------


def channel_credentials(
    ca_file: str | Path,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS channel credentials for the local API: trust ``ca_file`` only, and present a
    client certificate when ``cert_file`` and ``key_file`` are given (``require_client_cert``).

    Raises:
        ConfigError: a file is missing or unreadable, the key file is not owner-only, or only
            one of ``cert_file`` and ``key_file`` is given.
    """
    if (cert_file is None) != (key_file is None):
        raise ConfigError("a client certificate needs its key (and the reverse)")
    roots = _files.read_public_file(Path(ca_file))
    chain = key = None
    if cert_file is not None and key_file is not None:
        chain = _files.read_public_file(Path(cert_file))
        key = _files.read_private_file(Path(key_file))
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def api_channel(
    target: str,
    *,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    server_name: str | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A channel to a local API at ``target``: TLS when ``ca_file`` is given, else plaintext.

    ``server_name`` checks the server certificate against that name instead of the host of
    ``target`` (dialling an IP or a tunnel to a certificate issued for a DNS name).
    """
    if ca_file is None:
        return grpc.insecure_channel(target, options=list(options))
    opts = list(options)
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(
        target, channel_credentials(ca_file, cert_file, key_file), options=opts
    )


def local_ca_file(settings: ApiSettings) -> Path | None:
    """The CA a client in the node's home trusts for the API certificate: ``ca.crt`` beside
    the certificate (the layout of ``eap-node certs issue`` and of a Kubernetes TLS Secret),
    else ``client_ca``."""
    if settings.tls_cert is None:
        return None
    beside = settings.tls_cert.parent / "ca.crt"
    if beside.exists():
        return beside
    if settings.client_ca is not None:
        return settings.client_ca
    raise ConfigError(
        f"no CA to verify the API certificate {settings.tls_cert}: put its CA in {beside}"
    )


def local_api_channel(
    config: NodeConfig, *, address: str | None = None, options: Sequence = ()
) -> grpc.Channel:
    """A channel from the node's own machine to its API, as ``[api]`` serves it.

    Over TLS it trusts :func:`local_ca_file` and, when the API requires client certificates,
    presents the API's own certificate (it must allow clientAuth, as the demo PKI's do).
    Wildcard listen hosts are dialled on loopback.
    """
    settings = ApiSettings(
        listen=config.api_listen,
        tls_cert=config.home_path(config.api_tls_cert),
        tls_key=config.home_path(config.api_tls_key),
        client_ca=config.home_path(config.api_client_ca),
        require_client_cert=config.api_require_client_cert,
    )
    target = address or probe_address(settings.listen)
    if not settings.tls:
        return grpc.insecure_channel(target, options=list(options))
    client = (settings.tls_cert, settings.tls_key) if settings.require_client_cert else (None, None)
    return api_channel(
        target,
        ca_file=local_ca_file(settings),
        cert_file=client[0],
        key_file=client[1],
        options=options,
    )


__all__ = [
    "ApiSettings",
    "api_channel",
    "channel_credentials",
    "is_loopback",
    "local_api_channel",
    "local_ca_file",
    "probe_address",
    "resolve",
]
