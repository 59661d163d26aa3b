"""TLS of the local API: server settings, client credentials, the plaintext refusal, serve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eap.node.api import tls as api_tls
from eap.node.api.server import _build, build_health_server, build_server
from eap.node.config import NodeConfig, create_home
from eap.node.crypto import create_ca, issue_node_cert
from eap.node.errors import ConfigError
from eap.node.federation.localnet import LocalNode, free_ports, merge_settings
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc

NODE_ID = "medellin.example"


def make_node(home: Path, db: str | None, node_id: str):
    from eap.node.domain.node import Node

    return Node.initialise(create_home(home, node_id, "CO-ANT", db, operator_signed=True))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, the API's certificate (localhost, 127.0.0.1, the node id, api.internal), a client
    certificate from the same CA and one from another CA."""
    root = tmp_path_factory.mktemp("pki")
    create_ca(root / "ca")
    issue_node_cert(root / "ca", NODE_ID, root / "server", ["localhost", "127.0.0.1",
                                                            "api.internal"])
    issue_node_cert(root / "ca", "client.example", root / "client")
    create_ca(root / "other-ca", name="another CA")
    issue_node_cert(root / "other-ca", "client.example", root / "stranger")
    return root


@pytest.fixture
def node(tmp_path):
    n = make_node(tmp_path / "home", f"sqlite:///{tmp_path / 'node.db'}", NODE_ID)
    yield n
    n.close()


def settings(pki: Path, **kw) -> api_tls.ApiSettings:
    return api_tls.ApiSettings(
        listen="127.0.0.1:0",
        tls_cert=pki / "server" / "node.crt",
        tls_key=pki / "server" / "node.key",
        **kw,
    )


def status(channel: grpc.Channel, node) -> object:
    """GetStatus with the operator token of ``node`` (a Node or a NodeConfig)."""
    config = getattr(node, "config", node)
    stub = node_api_pb2_grpc.NodeApiStub(channel)
    md = (("authorization", f"Bearer {config.api_token()}"),)
    return stub.GetStatus(api.GetStatusRequest(), metadata=md, timeout=5)


def refused(channel: grpc.Channel, node) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        status(channel, node)
    return err.value.code()


@pytest.fixture
def serve(node):
    servers = []

    def start(tls: api_tls.ApiSettings | None) -> int:
        server, port = build_server(node, "127.0.0.1:0", tls=tls)
        server.start()
        servers.append(server)
        return port

    yield start
    for s in servers:
        s.stop(0).wait()


# -- in-process server ----------------------------------------------------------------------------


def test_tls_call_with_the_ca_succeeds_and_plaintext_fails(pki, node, serve):
    port = serve(settings(pki))
    target = f"127.0.0.1:{port}"
    with api_tls.api_channel(target, ca_file=pki / "ca" / "ca.crt") as channel:
        assert status(channel, node).node_id == NODE_ID
    # a DNS name of the certificate, dialled by address
    with api_tls.api_channel(target, ca_file=pki / "ca" / "ca.crt",
                             server_name="api.internal") as channel:
        assert status(channel, node).node_id == NODE_ID
    # a plaintext client never gets an answer (and never sends its token in clear)
    with grpc.insecure_channel(target) as channel:
        assert refused(channel, node) == grpc.StatusCode.UNAVAILABLE
    # a client trusting another CA refuses the server
    with api_tls.api_channel(target, ca_file=pki / "other-ca" / "ca.crt") as channel:
        assert refused(channel, node) == grpc.StatusCode.UNAVAILABLE
    # a name the certificate does not hold
    with api_tls.api_channel(target, ca_file=pki / "ca" / "ca.crt",
                             server_name="elsewhere.example") as channel:
        assert refused(channel, node) == grpc.StatusCode.UNAVAILABLE


def test_required_client_certificate(pki, node, serve):
    port = serve(settings(pki, client_ca=pki / "ca" / "ca.crt", require_client_cert=True))
    target, ca = f"127.0.0.1:{port}", pki / "ca" / "ca.crt"
    with api_tls.api_channel(target, ca_file=ca) as channel:
        assert refused(channel, node) == grpc.StatusCode.UNAVAILABLE
    with api_tls.api_channel(target, ca_file=ca, cert_file=pki / "stranger" / "node.crt",
                             key_file=pki / "stranger" / "node.key") as channel:
        assert refused(channel, node) == grpc.StatusCode.UNAVAILABLE
    with api_tls.api_channel(target, ca_file=ca, cert_file=pki / "client" / "node.crt",
                             key_file=pki / "client" / "node.key") as channel:
        assert status(channel, node).node_id == NODE_ID


def test_optional_client_certificate(pki, node, serve):
    port = serve(settings(pki, client_ca=pki / "ca" / "ca.crt"))
    target, ca = f"127.0.0.1:{port}", pki / "ca" / "ca.crt"
    with api_tls.api_channel(target, ca_file=ca) as channel:
        assert status(channel, node).node_id == NODE_ID
    with api_tls.api_channel(target, ca_file=ca, cert_file=pki / "client" / "node.crt",
                             key_file=pki / "client" / "node.key") as channel:
        assert status(channel, node).node_id == NODE_ID


def test_health_only_port_serves_health_and_nothing_else(pki, node):
    server, _, health = _build(node, "127.0.0.1:0", tls=settings(pki))
    probe, probe_port = build_health_server(health, "127.0.0.1:0")
    server.start()
    probe.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{probe_port}") as channel:
            for service in ("", "eap.v1.NodeApi"):
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert refused(channel, node) == grpc.StatusCode.UNIMPLEMENTED
    finally:
        probe.stop(0).wait()
        server.stop(0).wait()


# -- settings and checks --------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1:7443", True), ("127.1.2.3:7443", True), ("localhost:7443", True),
    ("[::1]:7443", True), ("unix:/run/eap.sock", True),
    ("0.0.0.0:7443", False), ("[::]:7443", False), (":7443", False),
    ("10.0.0.5:7443", False), ("node.internal:7443", False),
])
def test_loopback_addresses(address, loopback):
    assert api_tls.is_loopback(address) is loopback


def test_non_loopback_plaintext_is_refused(tmp_path, pki):
    node = make_node(tmp_path / "home", None, NODE_ID)
    try:
        cfg = node.config
        cfg.api_listen = "0.0.0.0:7443"
        with pytest.raises(ConfigError) as err:
            api_tls.resolve(cfg)
        assert err.value.exit_code == 12
        assert "allow_plaintext_remote" in str(err.value) and "tls_cert" in str(err.value)
        with pytest.raises(ConfigError):
            build_server(node, "0.0.0.0:0")  # the library refuses it too
        # loopback, an explicit opt-out, or TLS
        assert not api_tls.resolve(cfg, listen="127.0.0.1:7443").tls
        assert api_tls.resolve(cfg, allow_plaintext_remote=True).allow_plaintext_remote
        got = api_tls.resolve(cfg, tls_cert=pki / "server" / "node.crt",
                              tls_key=pki / "server" / "node.key")
        assert got.tls and got.listen == "0.0.0.0:7443"
    finally:
        node.close()


def test_inconsistent_settings_are_refused(pki):
    base = api_tls.ApiSettings(listen="127.0.0.1:7443")
    from dataclasses import replace

    for bad in (
        replace(base, tls_cert=pki / "server" / "node.crt"),  # no key
        replace(base, client_ca=pki / "ca" / "ca.crt"),  # client CA without TLS
        replace(settings(pki), require_client_cert=True),  # required, but no CA
    ):
        with pytest.raises(ConfigError):
            bad.check()


def test_config_round_trip_and_types(tmp_path):
    node = make_node(tmp_path / "home", None, NODE_ID)
    node.close()
    home = tmp_path / "home"
    merge_settings(home, "api", {"listen": "0.0.0.0:7443", "tls_cert": "tls/node.crt",
                                 "tls_key": "/etc/eap/api.key", "client_ca": "tls/ca.crt",
                                 "require_client_cert": True, "health_listen": "0.0.0.0:7445"})
    cfg = NodeConfig.load(home)
    s = api_tls.resolve(cfg)
    assert s.tls_cert == home / "tls" / "node.crt" and s.tls_key == Path("/etc/eap/api.key")
    assert s.client_ca == home / "tls" / "ca.crt" and s.require_client_cert
    assert s.health_listen == "0.0.0.0:7445"
    cfg.save()  # keeps every [api] setting
    assert NodeConfig.load(home) == cfg
    merge_settings(home, "api", {"require_client_cert": "yes"})
    with pytest.raises(ConfigError, match="require_client_cert"):
        NodeConfig.load(home)


def test_key_files_must_be_owner_only(pki, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for name in ("node.crt", "node.key"):
        (loose / name).write_bytes((pki / "server" / name).read_bytes())
    (loose / "node.key").chmod(0o644)
    s = api_tls.ApiSettings(listen="127.0.0.1:0", tls_cert=loose / "node.crt",
                            tls_key=loose / "node.key")
    with pytest.raises(ConfigError, match="chmod 600"):
        s.server_credentials()
    (loose / "node.key").chmod(0o600)
    assert s.server_credentials() is not None
    # a key that is not the certificate's
    (loose / "node.key").write_bytes((pki / "client" / "node.key").read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        s.server_credentials()
    # the client side checks its key file the same way
    (pki / "client" / "node.key").chmod(0o640)
    try:
        with pytest.raises(ConfigError, match="chmod 600"):
            api_tls.channel_credentials(pki / "ca" / "ca.crt", pki / "client" / "node.crt",
                                        pki / "client" / "node.key")
    finally:
        (pki / "client" / "node.key").chmod(0o600)


# -- a real `eap-node serve` -----------------------------------------------------------------------


def _serve_cmd(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "eap.node", "serve", "--home", str(home), *args]


def test_eap_node_serve_refuses_a_plaintext_remote_api(tmp_path):
    make_node(tmp_path / "home", None, NODE_ID).close()
    (port,) = free_ports(1)
    proc = subprocess.run(_serve_cmd(tmp_path / "home", "--listen", f"0.0.0.0:{port}"),
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "EAP_NODE_HOME": ""})
    assert proc.returncode == 12, proc.stderr
    assert "without TLS" in proc.stderr and "allow_plaintext_remote" in proc.stderr


def test_eap_node_serve_over_tls_with_client_certificates(tmp_path, pki):
    """`eap-node serve` with [api] TLS settings from the demo PKI (`certs issue` layout in
    <home>/tls): LocalNode (the demo's and benchmarks' client) reaches it, a plaintext client
    and a client without a certificate do not."""
    home = tmp_path / "home"
    make_node(home, None, NODE_ID).close()
    issue_node_cert(pki / "ca", NODE_ID, home / "tls")
    api_port, fed_port, health_port = free_ports(3)
    merge_settings(home, "api", {
        "listen": f"127.0.0.1:{api_port}", "tls_cert": "tls/node.crt", "tls_key": "tls/node.key",
        "client_ca": "tls/ca.crt", "require_client_cert": True,
        "health_listen": f"127.0.0.1:{health_port}"})
    merge_settings(home, "federation", {"listen": f"127.0.0.1:{fed_port}",
                                        "sync_interval_s": 0})
    local = LocalNode.from_home(home)
    local.start(env={"EAP_NODE_HOME": ""})
    try:
        local.wait_ready()
        assert "TLS, client certificate required" in local.log()
        assert local.api().GetStatus(api.GetStatusRequest()).node_id == NODE_ID
        cfg = NodeConfig.load(home)
        target = f"127.0.0.1:{api_port}"
        with grpc.insecure_channel(target) as channel:
            assert refused(channel, cfg) == grpc.StatusCode.UNAVAILABLE
        with api_tls.api_channel(target, ca_file=home / "tls" / "ca.crt") as channel:
            assert refused(channel, cfg) == grpc.StatusCode.UNAVAILABLE
        with api_tls.api_channel(target, ca_file=pki / "ca" / "ca.crt",
                                 cert_file=pki / "client" / "node.crt",
                                 key_file=pki / "client" / "node.key") as channel:
            assert status(channel, cfg).node_id == NODE_ID
        # the container probe: health-only port first, else the API over TLS
        probe = [sys.executable, str(Path(__file__).parents[1] / "deploy" / "healthcheck.py")]
        env = {**os.environ, "EAP_NODE_HOME": str(home)}
        ok = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0 and f"127.0.0.1:{health_port}" in ok.stdout, ok.stderr
        merge_settings(home, "api", {"health_listen": ""})
        ok = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0 and f"{target} eap.v1.NodeApi: SERVING" in ok.stdout, ok.stderr
    finally:
        assert local.stop() == 0
