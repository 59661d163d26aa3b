"""The interop suite against eap-node: every case of SPEC.md, on two targets, plus self-tests.

Targets, both on SQLite over real loopback sockets:

* ``inprocess`` — the node's local API and federation servers built in this process
  (``eap.node.api.server.build_server`` and ``FederationRuntime``, as ``eap-node serve`` does);
* ``process`` — a real ``eap-node serve`` subprocess with mutual TLS from a demo CA
  (``eap.node.federation.localnet``), its identity kit made with ``run.py identity`` and
  enrolled with ``eap-node peer add``, as an operator would.

eap-node supports every case: a SKIP here is a failure.  The self-tests check that the suite
itself catches a node that breaks a rule, and the command line's exit codes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from eap_interop import protocol
from eap_interop.cases import CASES, Case
from eap_interop.context import Context, Settings, Skip, violations
from eap_interop.identity import load_kit, make_kit
from eap_interop.runner import FAIL, PASS, SKIP, parse_cases, read_skip_file, run_case

from eap.v1 import node_api_pb2 as api
from eap.v1 import types_pb2 as pb

HERE = Path(__file__).resolve().parent
RUN_PY = HERE / "run.py"
NODE_ID = "iut.example"
ZONE = "ES"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class InProcess:
    settings: Settings
    node: Any
    runtime: Any
    ca_dir: Path


@contextlib.contextmanager
def _inprocess(root: Path) -> Iterator[InProcess]:
    """eap-node's servers in this process, wired as ``eap-node serve`` wires them."""
    from eap.node.api.server import build_server
    from eap.node.api.servicer import NodeApiServicer
    from eap.node.config import create_home
    from eap.node.crypto import create_ca, issue_node_cert
    from eap.node.domain.node import Node
    from eap.node.federation.descriptor import NodeDescriptor
    from eap.node.federation.localnet import merge_settings
    from eap.node.federation.peers import TrustList
    from eap.node.federation.runtime import FederationRuntime

    ca = create_ca(root / "ca")
    home = root / "iut"
    Node.initialise(create_home(home, NODE_ID, ZONE, operator_signed=True)).close()
    merge_settings(home, "federation", {"sync_interval_s": 0})
    issue_node_cert(root / "ca", NODE_ID, home / "tls", ["localhost", "127.0.0.1"])
    peer_listen = f"127.0.0.1:{_free_port()}"
    kit = make_kit(
        root / "kit",
        endpoint=peer_listen,
        ca_cert=ca.cert.read_bytes(),
        ca_key=ca.key.read_bytes(),
    )
    node = Node.open(home)
    TrustList(node.store, NODE_ID, cache_s=0).add_descriptor(
        NodeDescriptor.from_json(kit.client.descriptor), fingerprint=kit.client.fingerprint
    )
    runtime = FederationRuntime(node, listen="127.0.0.1:0")
    runtime.start()
    server, port = build_server(
        node, "127.0.0.1:0", servicer=NodeApiServicer(node, transfers=runtime.transfers)
    )
    server.start()
    settings = Settings(
        server_port=port,
        token=node.config.api_token(),
        federation_port=runtime.port,
        kit=kit,
        peer_listen=peer_listen,
    )
    try:
        yield InProcess(settings, node, runtime, root / "ca")
    finally:
        server.stop(0).wait()
        runtime.stop(0)
        node.close()


def _cli(*args: object, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if ok:
        assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


@contextlib.contextmanager
def _process(root: Path) -> Iterator[Settings]:
    """A real ``eap-node serve`` process; identity enrolled through both command lines."""
    from eap.node.federation.localnet import LocalFederation

    net = LocalFederation.create(
        root, [(NODE_ID, ZONE)], federation={"sync_interval_s": 0}, connect=False
    )
    try:
        n = net[NODE_ID]
        peer_listen = f"127.0.0.1:{_free_port()}"
        _cli(
            RUN_PY,
            "identity",
            "--out",
            root / "kit",
            "--endpoint",
            peer_listen,
            "--ca_cert",
            root / "ca" / "ca.crt",
            "--ca_key",
            root / "ca" / "ca.key",
        )
        kit = load_kit(root / "kit")
        _cli(
            "-m",
            "eap.node",
            "peer",
            "add",
            root / "kit" / "descriptor.json",
            "--fingerprint",
            kit.client.fingerprint,
            "--home",
            n.home,
        )
        net.start()
        yield Settings(
            server_port=n.api_port,
            token=(n.home / "api-token").read_text().strip(),
            federation_port=n.fed_port,
            kit=kit,
            peer_listen=peer_listen,
        )
    finally:
        net.stop()


@pytest.fixture(scope="module")
def inprocess_env(tmp_path_factory) -> Iterator[InProcess]:
    with _inprocess(tmp_path_factory.mktemp("interop-inprocess")) as env:
        yield env


@pytest.fixture(scope="module")
def inprocess_target(inprocess_env) -> Settings:
    return inprocess_env.settings


@pytest.fixture(scope="module")
def process_target(tmp_path_factory) -> Iterator[Settings]:
    with _process(tmp_path_factory.mktemp("interop-process")) as settings:
        yield settings


@pytest.fixture(scope="module", params=["inprocess", "process"])
def ctx(request) -> Iterator[Context]:
    c = Context(request.getfixturevalue(f"{request.param}_target"))
    yield c
    c.close()


@pytest.mark.parametrize("case", list(Case), ids=lambda c: c.value)
def test_case(ctx: Context, case: Case) -> None:
    result = run_case(ctx, case, verbose=True)
    assert result.verdict == PASS, f"{result.verdict} {case.value}: {result.detail}"


# -- the suite catches broken nodes ----------------------------------------------------------------


@pytest.fixture
def inprocess(inprocess_target) -> Iterator[Context]:
    c = Context(inprocess_target)
    yield c
    c.close()


def _verdict(ctx: Context, case: Case) -> tuple[str, str]:
    r = run_case(ctx, case)
    return r.verdict, r.detail


def test_catches_a_tampered_batch(inprocess, monkeypatch):
    from eap.node.federation import server
    from eap.node.store import repos

    def tampered(conn, cursor, limit):
        rows = []
        for row in repos.batches_after(conn, cursor, limit):
            batch = pb.RecordBatch.FromString(bytes(row.payload))
            carbon = bytearray(batch.carbon_mg)
            carbon[0] ^= 0x01
            batch.carbon_mg = bytes(carbon)
            rows.append(types.SimpleNamespace(seq=row.seq, payload=batch.SerializeToString()))
        return rows

    monkeypatch.setattr(server, "repos", types.SimpleNamespace(batches_after=tampered))
    verdict, detail = _verdict(inprocess, Case.FED_PULL_BATCHES)
    assert verdict == FAIL and "Merkle root recomputed" in detail, detail


def test_catches_a_wrong_lineage_hash(inprocess, monkeypatch):
    import hashlib

    from eap.node.domain import ledger  # splits derive the child's lineage here

    monkeypatch.setattr(
        ledger,
        "lineage",
        lambda parent, child: hashlib.sha256(parent + child.encode()).hexdigest(),
    )
    verdict, detail = _verdict(inprocess, Case.SPLIT_LINEAGE)
    assert verdict == FAIL and "lineage_hash" in detail, detail


def test_catches_an_ignored_request_id_conflict(inprocess, monkeypatch):
    from eap.node.domain import idempotency

    monkeypatch.setattr(idempotency, "request_hash", lambda operation, principal, payload: "x")
    verdict, detail = _verdict(inprocess, Case.IDEMPOTENT_REPLAY)
    assert verdict == FAIL and "expected INVALID_ARGUMENT" in detail, detail


def test_catches_a_missing_destination_check(inprocess, monkeypatch):
    from eap.node.federation import auth

    real = auth.open_envelope

    def lenient(env, *, me, **kw):
        return real(env, me=env.destination, **kw)

    monkeypatch.setattr(auth, "open_envelope", lenient)
    verdict, detail = _verdict(inprocess, Case.FED_WRONG_DESTINATION)
    assert verdict == FAIL and "accepted, expected PERMISSION_DENIED" in detail, detail


def test_catches_a_change_on_overspend(inprocess, monkeypatch):
    """A node that splits before checking the amount leaves a trace the case sees."""
    from eap.node.domain.node import Node

    real = Node.transfer

    def sloppy(self, bundle_ref, *, to_account, wh=0, request_id, **kw):
        if wh and wh > self.get_bundle(bundle_ref).wh:  # splits off 1 Wh, then refuses
            real(self, bundle_ref, to_account=to_account, wh=1, request_id=f"{request_id}-x")
        return real(self, bundle_ref, to_account=to_account, wh=wh, request_id=request_id, **kw)

    monkeypatch.setattr(Node, "transfer", sloppy)
    verdict, detail = _verdict(inprocess, Case.OVERSPEND_CHANGES_NOTHING)
    assert verdict == FAIL and "changed GetStatus counters" in detail, detail


def test_catches_an_import_of_other_attributes(inprocess, monkeypatch):
    """A destination that does not compare the announced attributes with the issued record
    prepares the forged import; the case sees it."""
    from eap.node.domain import provenance

    monkeypatch.setattr(provenance, "check_bundle", lambda bundle, verified: None)
    verdict, detail = _verdict(inprocess, Case.FED_TRANSFER_FORGERY_REFUSED)
    assert verdict == FAIL, detail
    assert "(b) attributes not the record's: TRANSFER_STATE_PREPARED" in detail, detail


FAKE_PEER_CASES = [c for c in Case if c.value.startswith(("fed_transfer_", "fed_holdings_"))]


def test_fake_peer_cases_skip_when_the_node_cannot_reach_the_peer(inprocess_env, tmp_path):
    """No --peer_listen, a kit advertising the default endpoint, or a fake peer listening
    where the node does not dial: the fake-peer cases are SKIP with the reason."""
    target = inprocess_env.settings
    kit_default = make_kit(
        tmp_path / "kit",
        "default-endpoint.example",
        ca_cert=(inprocess_env.ca_dir / "ca.crt").read_bytes(),
        ca_key=(inprocess_env.ca_dir / "ca.key").read_bytes(),
    )
    for settings, reason in (
        (dataclasses.replace(target, peer_listen=None), "no --peer_listen"),
        (dataclasses.replace(target, kit=kit_default), "serves nothing"),
        (
            dataclasses.replace(target, peer_listen=f"127.0.0.1:{_free_port()}"),
            "did not pull from the fake peer",
        ),
    ):
        ctx = Context(settings)
        try:
            r = run_case(ctx, FAKE_PEER_CASES[0])
            assert r.verdict == SKIP and reason in r.detail, f"{r.verdict} {r.detail}"
        finally:
            ctx.close()


def test_federation_cases_skip_without_a_federation_port(inprocess_target):
    ctx = Context(Settings(server_port=inprocess_target.server_port, token=inprocess_target.token))
    try:
        for c in Case:
            if CASES[c].area == "federation":
                assert run_case(ctx, c).verdict == SKIP, c
        assert run_case(ctx, Case.STATUS_IDENTITY).verdict == PASS
    finally:
        ctx.close()


def test_identity_pinned_by_fingerprint(inprocess_env, tmp_path):
    """Enrolment by node id and fingerprint only: the first Hello carries the descriptor."""
    from eap.node.federation.peers import TrustList

    env = inprocess_env
    kit = make_kit(
        tmp_path / "kit",
        "pinned-client.example",
        ca_cert=(env.ca_dir / "ca.crt").read_bytes(),
        ca_key=(env.ca_dir / "ca.key").read_bytes(),
    )
    TrustList(env.node.store, NODE_ID, cache_s=0).add_pinned(
        kit.client.node_id, "127.0.0.1:9", kit.client.fingerprint
    )
    env.runtime.trust.reload()
    ctx = Context(dataclasses.replace(env.settings, kit=kit))
    try:
        for c in (Case.FED_HELLO, Case.FED_PULL_BATCHES, Case.FED_BAD_SIGNATURE):
            r = run_case(ctx, c)
            assert r.verdict == PASS, f"{c.value}: {r.detail}"
    finally:
        ctx.close()


def test_local_api_over_tls(tmp_path):
    """``--use_tls``, ``--ca`` and ``--server_host_override`` reach a TLS local API."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from eap.node.crypto import create_ca, issue_node_cert

    ca = create_ca(tmp_path / "ca")
    tls = issue_node_cert(tmp_path / "ca", "api.tls.example", tmp_path / "tls", ["localhost"])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", "eap.v1.NodeApi"):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    creds = grpc.ssl_server_credentials([(tls.key.read_bytes(), tls.cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        for override, verdict in (("api.tls.example", PASS), ("other.tls.example", FAIL)):
            ctx = Context(
                Settings(
                    server_port=port,
                    use_tls=True,
                    ca=ca.cert.read_bytes(),
                    server_host_override=override,
                    timeout=3,
                )
            )
            try:
                r = run_case(ctx, Case.HEALTH_SERVING)
                assert r.verdict == verdict, f"{override}: {r.verdict} {r.detail}"
            finally:
                ctx.close()
    finally:
        server.stop(0).wait()


# -- the command line ------------------------------------------------------------------------------


def test_command_line_against_a_live_node(process_target, tmp_path):
    t = process_target
    assert t.kit is not None and t.token
    skips = tmp_path / "skips.txt"
    skips.write_text(
        "# cases this implementation does not support\nfed_unknown_peer   # no second certificate\n"
    )
    base = [
        RUN_PY,
        "--server_port",
        t.server_port,
        "--token",
        t.token,
        "--federation_port",
        t.federation_port,
        "--identity",
        t.kit.path,
        "--peer_listen",
        t.peer_listen,
    ]
    proc = _cli(
        *base,
        "--cases",
        "health_serving,fed_hello,fed_unknown_peer,status_identity,fed_transfer_in_whole",
        "--skip",
        "status_identity",
        "--skip_file",
        skips,
        "--report",
        tmp_path / "report.json",
    )
    lines = [
        line.split()[:2] for line in proc.stdout.splitlines() if line[:4] in (PASS, FAIL, SKIP)
    ]
    assert lines == [
        [PASS, "health_serving"],
        [PASS, "fed_hello"],
        [SKIP, "fed_unknown_peer"],
        [SKIP, "status_identity"],
        [PASS, "fed_transfer_in_whole"],
    ], proc.stdout
    assert "5 cases: 3 passed, 0 failed, 2 skipped" in proc.stdout
    assert '"result": "SKIP"' in (tmp_path / "report.json").read_text()
    failing = _cli(
        RUN_PY,
        "--server_port",
        t.server_port,
        "--token",
        "not-the-token",
        "--cases",
        "status_identity",
        ok=False,
    )
    assert failing.returncode == 1 and "FAIL  status_identity" in failing.stdout, failing.stdout
    usage = _cli(RUN_PY, "--cases", "no_such_case", ok=False)
    assert usage.returncode == 2 and "unknown case" in usage.stderr


def test_identity_kit_without_a_ca_key_writes_csrs(tmp_path):
    kit = make_kit(tmp_path / "kit", "suite.example")
    assert kit.client.tls_cert is None and (tmp_path / "kit" / "tls" / "client.csr").exists()
    assert protocol.parse_descriptor(kit.client.descriptor).node_id == "suite.example"
    assert load_kit(tmp_path / "kit").client.key_id == kit.client.key_id
    ctx = Context(Settings(federation_port=1, kit=kit))
    with pytest.raises(Skip, match="TLS client certificate"):
        ctx.federation()


# -- the suite's own protocol code ---------------------------------------------------------------


def test_envelope_signing_matches_the_documented_vector():
    """docs/security.md §4 test vector, through the suite's independent implementation."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    pub = protocol.raw_public_key(key)
    assert pub.hex() == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    assert protocol.key_id_for(pub) == "ed25519:56475aa75463474c"
    env = protocol.seal(
        key,
        b"hello",
        "eap.v1.Ping",
        "medellin.eap.example",
        "barcelona.eap.example",
        expires_at_ms=1700000060000,
        nonce=bytes(range(16)),
    )
    assert env.signature.hex() == (
        "6829c2d48a0690f0dac6d6cdef28e4c9acafbddb369221b8e601d701516677103c6b6a94b7486504b65f"
        "223ed3575acfbd1b12b3f8b3dffd80dff4c6593a580f"
    )


def test_merkle_and_leaves_match_the_node_kernels():
    from eap.node import kernels
    from eap.node.federation.testing import craft_columns

    for n in (1, 2, 3, 5, 8, 13):
        cols = craft_columns(n, devices=3, owner_count=2)
        leaves = kernels.leaf_hashes(cols.arrays, cols.devices, cols.zones, cols.owners)
        batch = pb.RecordBatch(count=n, devices=cols.devices, zones=cols.zones, owners=cols.owners)
        decoded = {k: [int(x) for x in v] for k, v in cols.arrays.items()}
        mine = protocol.batch_leaves(batch, decoded)
        assert mine == [bytes(x) for x in leaves]
        assert protocol.merkle_root(mine) == bytes(kernels.merkle_root(leaves))
        assert protocol.batch_rule_problems(batch, decoded) == []
        root = bytes(kernels.merkle_root(leaves))
        for i, leaf in enumerate(mine):  # the fake peer's inclusion paths, checked by the node
            path = protocol.inclusion_path(mine, i)
            assert path == [bytes(x) for x in kernels.inclusion_proof(leaves, i)]
            assert kernels.verify_inclusion(leaf, i, n, path, root)
            assert protocol.verify_inclusion(leaf, i, n, path, root)


def test_rule_checks_flag_broken_records():
    batch = pb.RecordBatch(count=3, devices=["dev_a"], zones=["ES"], owners=["acct_a"])
    cols = {
        "serial_start": [0, 5, 20],
        "serial_end": [10, 15, 30],
        "interval_start": [0, 1800, 7200],
        "interval_end": [3600, 3600, 7200 + 5400],
        "device": [0, 0, 0],
        "source": [1, 1, 1],
        "technology": [1, 1, 1],
        "renewable_ppm": [0, 0, 0],
        "carbon_mg": [0, 0, 0],
        "zone": [0, 0, 0],
        "owner": [0, 0, 0],
    }
    problems = protocol.batch_rule_problems(batch, cols)
    assert "records[2]: INTERVAL_TOO_LONG" in problems
    assert any("INTERVAL_OVERLAP" in p for p in problems)
    assert any("SERIAL_OVERLAP" in p for p in problems)


def test_case_lists_and_skip_files(tmp_path):
    assert parse_cases("fed_hello, split_lineage", "--cases") == [
        Case.FED_HELLO,
        Case.SPLIT_LINEAGE,
    ]
    with pytest.raises(SystemExit, match="unknown case"):
        parse_cases("fed_hello,nope", "--cases")
    f = tmp_path / "skips"
    f.write_text("# header\n\nfed_replayed_envelope  # no replay guard yet\nfed_hello\n")
    assert read_skip_file(f) == {
        Case.FED_REPLAYED_ENVELOPE: "no replay guard yet",
        Case.FED_HELLO: "",
    }


def test_spec_documents_every_case():
    spec = (HERE / "SPEC.md").read_text()
    missing = [c.value for c in Case if f"### {c.value}" not in spec]
    assert not missing, f"SPEC.md has no section for {missing}"


def test_violations_reads_status_details(inprocess):
    """The suite reads google.rpc details itself (no node code), as another client would."""
    try:
        inprocess.call("ListBundles", api.ListBundlesRequest())
    except grpc.RpcError as error:
        assert "purpose" in violations(error)
    else:
        raise AssertionError("ListBundles without a purpose succeeded")
