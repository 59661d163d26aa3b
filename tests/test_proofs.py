"""Bundle proofs (issue #7): built by the holding node, checked offline with only the issuer's
public keys, through the domain, gRPC (GetBundleProof, GetIdentity) and the CLI.

One two-node federation per module: medellin (A) issues; 100 Wh of one of its bundles move to
barcelona (B), which splits them again; every bundle on the way has a proof.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import grpc
import pytest
from click.testing import CliRunner
from google.protobuf import json_format
from test_transfers_support import Federation

from eap.node.api import convert
from eap.node.api.server import build_server
from eap.node.domain import proofs
from eap.node.domain.provenance import ProofError
from eap.node.errors import FailedPrecondition, NotFound
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb

CLI = [sys.executable, "-m", "eap.node"]
MOVED = "medellin.example/1000-1100"  # 100 Wh of A's second bundle, now at B
CHILD = "medellin.example/1000-1030"  # split off at B


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    f = Federation(tmp_path_factory.mktemp("proofs"), "ab")
    a, b = f["a"], f["b"]
    assert a.bundles[1] == "medellin.example/1000-3000"
    a.engine.send(a.bundles[1], to=f.to("b"), wh=100, request_id="move")
    f.settle()
    b.node.transfer(MOVED, to_account=b.owner, wh=30, request_id="split-at-b")
    a.node.transfer(a.bundles[0], to_account=a.account, wh=250, request_id="split-at-a")
    yield f
    for city in f.cities.values():
        city.node.close()


def keys_of(city) -> dict[str, dict[str, bytes]]:
    return {city.node_id: {k.key_id: k.public_key
                           for k in city.node.keys.public_keys().values()}}


def prove(city, bundle_id: str) -> pb.BundleProof:
    return convert.bundle_proof(proofs.bundle_proof(city.node, bundle_id))


def test_proofs_of_issued_split_imported_and_split_imported_bundles(fed):
    a, b = fed["a"], fed["b"]
    cases = [
        (a, "medellin.example/3000-6000", ["medellin.example/3000-6000"]),
        (a, "medellin.example/0-1000", None),
        (a, "medellin.example/0-250", ["medellin.example/0-1000", "medellin.example/0-250"]),
        (a, MOVED, ["medellin.example/1000-3000", MOVED]),  # exported, still provable at A
        (b, MOVED, None),  # SPLIT at B: its children are proved
        (b, CHILD, ["medellin.example/1000-3000", MOVED, CHILD]),
        (b, "medellin.example/1030-1100", ["medellin.example/1000-3000", MOVED,
                                           "medellin.example/1030-1100"]),
        (b, "barcelona.example/0-1000", ["barcelona.example/0-1000"]),
    ]
    for city, bundle_id, lineage in cases:
        if lineage is None:
            with pytest.raises(FailedPrecondition, match="prove its children"):
                prove(city, bundle_id)
            continue
        bp = prove(city, bundle_id)
        issuer = fed["a"] if bundle_id.startswith("medellin") else b
        res = proofs.check_bundle_proof(bp, keys_of(issuer), issuer=issuer.node_id)
        assert list(res.verified.lineage) == lineage
        assert res.bundle.id == bundle_id and res.verified.lineage_hash == bp.bundle.lineage_hash
        assert res.wh == bp.bundle.serial_end - bp.bundle.serial_start
    # the cell of imported serials is the one the issuer attested (A's device cell), not B's
    assert prove(b, CHILD).cell == prove(a, "medellin.example/3000-6000").cell == "876619d8affffff"
    assert prove(b, "barcelona.example/0-1000").cell == "873944608ffffff"
    with pytest.raises(NotFound):
        prove(a, "medellin.example/7-9")


def _tamper(bp: pb.BundleProof, how: str) -> pb.BundleProof:
    t = pb.BundleProof()
    t.CopyFrom(bp)
    p = t.proof
    if how == "attribute":
        t.bundle.attributes.carbon_mg_per_kwh += 1
    elif how == "record_attribute":
        p.record.renewable_ppm -= 1
        t.bundle.attributes.renewable_ppm -= 1
    elif how == "wh_range":
        t.bundle.serial_end += 5
    elif how == "wh_range_and_id":
        t.bundle.serial_end += 5
        t.bundle.id = f"{t.bundle.issuer}/{t.bundle.serial_start}-{t.bundle.serial_end}"
        p.lineage[-1] = t.bundle.id
    elif how == "lineage_id":
        p.lineage[1] = "medellin.example/1000-1200"
    elif how == "path_byte":
        path = bytearray(p.path[0])
        path[7] ^= 0x01
        p.path[0] = bytes(path)
    elif how == "batch_seq":
        p.batch.seq += 1
    elif how == "batch_root":
        p.batch.merkle_root = bytes(32)
    elif how == "index":
        p.index = (p.index + 1) % p.batch.count
    else:
        raise AssertionError(how)
    return t


TAMPERINGS = ["attribute", "record_attribute", "wh_range", "wh_range_and_id", "lineage_id",
              "path_byte", "batch_seq", "batch_root", "index"]


@pytest.mark.parametrize("how", TAMPERINGS)
def test_every_tampering_is_rejected(fed, how):
    bp = prove(fed["b"], CHILD)
    proofs.check_bundle_proof(bp, keys_of(fed["a"]))
    with pytest.raises(ProofError):
        proofs.check_bundle_proof(_tamper(bp, how), keys_of(fed["a"]))


def test_wrong_key_or_issuer_is_rejected(fed):
    a, b = fed["a"], fed["b"]
    bp = prove(b, CHILD)
    wrong = {a.node_id: next(iter(keys_of(b).values()))}  # B's key presented as A's
    with pytest.raises(ProofError, match="signature"):
        proofs.check_bundle_proof(bp, wrong)
    with pytest.raises(ProofError, match=r"not 'barcelona\.example'"):
        proofs.check_bundle_proof(bp, {**keys_of(a), **keys_of(b)}, issuer=b.node_id)


# -- gRPC ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub_b(fed):
    server, port = build_server(fed["b"].node, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield node_api_pb2_grpc.NodeApiStub(channel)
    channel.close()
    server.stop(0).wait()


def test_get_identity_and_bundle_proof_over_grpc(fed, stub_b):
    b = fed["b"]
    md = (("authorization", f"Bearer {b.node.config.api_token()}"),)
    ident = stub_b.GetIdentity(api.GetIdentityRequest(), metadata=md)
    assert ident.node_id == b.node_id and ident.zone == "ES"
    assert list(ident.protocol_versions) == ["eap.v1"] and ident.descriptor == b""
    assert ident.keys[0].active and ident.keys[0].key_id == b.node.keys.active_key_id
    assert len(ident.keys[0].public_key) == 32
    # any valid token: an account's does
    acct = b.node.create_account(request_id="proof-acct").token
    amd = (("authorization", f"Bearer {acct}"),)
    bp = stub_b.GetBundleProof(api.GetBundleProofRequest(bundle_id=CHILD), metadata=amd)
    assert bp == prove(b, CHILD)
    proofs.check_bundle_proof(bp, keys_of(fed["a"]))
    own = stub_b.GetBundleProof(api.GetBundleProofRequest(bundle_id="barcelona.example/0-1000"),
                                metadata=md)
    keys = {ident.node_id: {k.key_id: k.public_key for k in ident.keys}}
    assert proofs.check_bundle_proof(own, keys).verified.issuer == b.node_id
    for bundle_id, code in ((MOVED, grpc.StatusCode.FAILED_PRECONDITION),
                            ("medellin.example/1-2", grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.RpcError) as err:
            stub_b.GetBundleProof(api.GetBundleProofRequest(bundle_id=bundle_id), metadata=md)
        assert err.value.code() == code
    with pytest.raises(grpc.RpcError) as err:
        stub_b.GetIdentity(api.GetIdentityRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- CLI -------------------------------------------------------------------------------------------


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def test_cli_proof_identity_and_offline_verify(fed, tmp_path):
    a, b = fed["a"], fed["b"]
    out = tmp_path / "child.json"
    wrote = run("proof", CHILD, "--out", str(out), "--json", "--home", str(b.home))
    assert json.loads(wrote.stdout)["bundle"] == CHILD
    doc = json.loads(out.read_text())
    assert set(doc) == {"issuer", "bundle_proof"} and doc["issuer"] == a.node_id
    # the same proof on stdout, from `proof get`
    again = json.loads(run("proof", "get", CHILD, "--home", str(b.home)).stdout)
    assert again == doc
    ident = tmp_path / "a-identity.json"
    ident.write_text(run("identity", "--json", "--home", str(a.home)).stdout)
    desc = tmp_path / "a-descriptor.json"
    run("descriptor", "--out", str(desc), "--home", str(a.home))
    key = json.loads(ident.read_text())["keys"][0]
    key_arg = f"{key['keyId']}={key['publicKey']}"
    for how in (["--identity", str(ident)], ["--descriptor", str(desc)], ["--key", key_arg]):
        proved = run("proof", "verify", str(out), *how)
        assert proved.stdout.startswith(f"proof OK: bundle {CHILD} (30 Wh)")
        assert "batch #1" in proved.stdout and "medellin.example/1000-3000" in proved.stdout
    data = json.loads(run("proof", "verify", str(out), "--key", key_arg, "--json").stdout)
    assert data["ok"] and data["wh"] == 30 and data["issuer"] == a.node_id
    assert data["attributes"]["source"] == "ENERGY_SOURCE_SOLAR"
    # B's identity is not A's: rejected with one line, exit 13
    bident = tmp_path / "b-identity.json"
    bident.write_text(run("identity", "--json", "--home", str(b.home)).stdout)
    bad = run("proof", "verify", str(out), "--identity", str(bident), ok=False)
    assert bad.returncode == 13 and bad.stderr.startswith("proof rejected:")
    assert len(bad.stderr.strip().splitlines()) == 1
    table = run("identity", "--home", str(a.home)).stdout
    assert key["keyId"] in table
    usage = run("proof", "verify", str(out), ok=False)
    assert usage.returncode == 2


@pytest.mark.parametrize("how", [*TAMPERINGS, "wrong_key", "garbage"])
def test_cli_verify_rejects_tampering(fed, tmp_path, how):
    from eap.node.cli import PROOF_REJECTED_EXIT, main

    a, b = fed["a"], fed["b"]
    bp = prove(b, CHILD)
    key_id, raw = next(iter(keys_of(a)[a.node_id].items()))
    if how == "wrong_key":
        key_id, raw = next(iter(keys_of(b)[b.node_id].items()))
    elif how != "garbage":
        bp = _tamper(bp, how)
    path = tmp_path / "p.json"
    doc = {"issuer": a.node_id, "bundle_proof": json_format.MessageToDict(bp)}
    path.write_text("{not json" if how == "garbage" else json.dumps(doc))
    key_arg = f"{key_id}={base64.b64encode(raw).decode()}"
    res = CliRunner().invoke(main, ["proof", "verify", str(path), "--key", key_arg,
                                    "--issuer", a.node_id])
    assert res.exit_code == PROOF_REJECTED_EXIT, res.output
    assert "proof OK" not in res.output


def test_cli_verify_accepts_untampered(fed, tmp_path):
    from eap.node.cli import main

    a, b = fed["a"], fed["b"]
    path = tmp_path / "p.json"
    path.write_text(json_format.MessageToJson(prove(b, CHILD)))  # a bare BundleProof, too
    key_id, raw = next(iter(keys_of(a)[a.node_id].items()))
    res = CliRunner().invoke(main, ["proof", "verify", str(path), "--key",
                                    f"{key_id}={base64.b64encode(raw).decode()}"])
    assert res.exit_code == 0 and "proof OK" in res.output, res.output


def test_proof_help(fed):
    for args in (["proof", "--help"], ["proof", "get", "--help"], ["proof", "verify", "--help"],
                 ["identity", "--help"]):
        assert "Usage:" in run(*args).stdout, args
