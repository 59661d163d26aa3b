"""Federation PKI and real gRPC mutual TLS on 127.0.0.1: who may connect, who the peer is."""

from __future__ import annotations

import ipaddress
import stat
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eap.node.crypto import (
    create_ca,
    issue_node_cert,
    load_tls_material,
    peer_channel_options,
    peer_node_id_from_auth_context,
)
from eap.node.errors import AlreadyExists, ConfigError, InvalidArgument, Unauthenticated

METHOD = "/eap.test.Echo/Echo"
TIMEOUT = 10


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    create_ca(base / "ca1")
    create_ca(base / "ca2", name="Some other CA")
    issue_node_cert(base / "ca1", "node-a", base / "a")
    issue_node_cert(base / "ca1", "node-b", base / "b")
    issue_node_cert(base / "ca2", "node-x", base / "x")
    return base


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    try:
        peer = peer_node_id_from_auth_context(context)
    except Unauthenticated as exc:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
    return peer.encode() + b"|" + request


@pytest.fixture(scope="module")
def server(pki):
    material = load_tls_material(pki / "a", expected_node_id="node-a")
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "eap.test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    srv.add_generic_rpc_handlers((handler,))
    port = srv.add_secure_port("127.0.0.1:0", material.server_credentials())
    assert port > 0
    srv.start()
    yield f"127.0.0.1:{port}"
    srv.stop(grace=None)


def _call(target, credentials, options=()):
    with grpc.secure_channel(target, credentials, options=list(options)) as channel:
        return channel.unary_unary(METHOD)(b"ping", timeout=TIMEOUT)


def test_client_from_same_ca_is_accepted_and_identified(pki, server):
    client = load_tls_material(pki / "b")
    assert _call(server, client.channel_credentials()) == b"node-b|ping"
    # Dialling an address while insisting that the server is node-a.
    opts = peer_channel_options("node-a")
    assert _call(server, client.channel_credentials(), opts) == b"node-b|ping"


def test_server_must_be_the_expected_peer(pki, server):
    client = load_tls_material(pki / "b")
    with pytest.raises(grpc.RpcError) as err:
        _call(server, client.channel_credentials(), peer_channel_options("node-c"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_from_another_ca_is_refused(pki, server):
    stranger = load_tls_material(pki / "x")
    # The stranger trusts our CA (so it can verify us) but its own certificate is from ca2.
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca1" / "ca.crt").read_bytes(),
        private_key=stranger.private_key,
        certificate_chain=stranger.certificate_chain,
    )
    with pytest.raises(grpc.RpcError) as err:
        _call(server, creds)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_without_certificate_is_refused(pki, server):
    creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca1" / "ca.crt").read_bytes())
    with pytest.raises(grpc.RpcError) as err:
        _call(server, creds)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_node_certificate_contents(pki):
    cert = x509.load_pem_x509_certificate((pki / "a" / "node.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-a"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "node-a"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for path in (pki / "a" / "node.key", pki / "ca1" / "ca.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((pki / "a").stat().st_mode) == 0o700


def test_demo_pki_refuses_to_overwrite(pki):
    with pytest.raises(AlreadyExists):
        create_ca(pki / "ca1")
    with pytest.raises(AlreadyExists):
        issue_node_cert(pki / "ca1", "node-a", pki / "a")
    with pytest.raises(InvalidArgument):
        issue_node_cert(pki / "ca1", "Node_A", pki / "bad")


def test_renewal_with_overwrite(pki, tmp_path):
    issue_node_cert(pki / "ca1", "node-r", tmp_path / "r")
    before = (tmp_path / "r" / "node.crt").read_bytes()
    issue_node_cert(pki / "ca1", "node-r", tmp_path / "r", overwrite=True)
    assert (tmp_path / "r" / "node.crt").read_bytes() != before
    assert load_tls_material(tmp_path / "r").node_id == "node-r"


def test_load_tls_material_checks(pki, tmp_path):
    issue_node_cert(pki / "ca1", "node-c", tmp_path / "c")
    with pytest.raises(ConfigError, match="is for 'node-c'"):
        load_tls_material(tmp_path / "c", expected_node_id="node-a")
    with pytest.raises(ConfigError, match="not a valid node certificate"):
        load_tls_material(tmp_path / "c", now=4_000_000_000.0)  # after expiry
    (tmp_path / "c" / "node.key").chmod(0o644)
    with pytest.raises(ConfigError, match="too open"):
        load_tls_material(tmp_path / "c")
    (tmp_path / "c" / "node.key").chmod(0o600)
    # Trusting a CA that did not issue the certificate.
    (tmp_path / "c" / "ca.crt").write_bytes((pki / "ca2" / "ca.crt").read_bytes())
    with pytest.raises(ConfigError, match="not a valid node certificate"):
        load_tls_material(tmp_path / "c")
    # A key that is not the certificate's.
    (tmp_path / "c" / "node.key").write_bytes((pki / "b" / "node.key").read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        load_tls_material(tmp_path / "c")


@pytest.mark.parametrize(
    ("auth", "match"),
    [
        ({}, "mutual TLS"),
        ({"transport_security_type": [b"ssl"]}, "no client certificate"),
        (
            {
                "transport_security_type": [b"ssl"],
                "x509_common_name": [b"node-a"],
                "x509_subject_alternative_name": [b"localhost"],
            },
            "subjectAltName",
        ),
        (
            {
                "transport_security_type": [b"ssl"],
                "x509_common_name": [b"Not A Node"],
                "x509_subject_alternative_name": [b"Not A Node"],
            },
            "not a node id",
        ),
    ],
)
def test_peer_node_id_refuses_unusable_auth_contexts(auth, match):
    with pytest.raises(Unauthenticated, match=match):
        peer_node_id_from_auth_context(auth)


def test_peer_node_id_from_auth_context_mapping():
    auth = {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"node-a"],
        "x509_subject_alternative_name": [b"localhost", b"127.0.0.1", b"node-a"],
    }
    assert peer_node_id_from_auth_context(auth) == "node-a"
