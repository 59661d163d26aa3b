"""Holder-held keys across nodes: signed cross-node transfers, and the key never leaves a node.

* In process (test_transfers_support): every federation message of transfers between two
  accounts of one holder on two nodes is captured; the holder key is in none of them, nor in
  the exported batches, and the accounts' pseudonyms are unrelated.
* Over real gRPC between ``eap-node serve`` processes: the NodeApi (LocalFederation stubs)
  and the CLI with ``--sign-with`` (tests/fednet.py).
"""

from __future__ import annotations

import base64
import subprocess

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fednet import CLI, FedNet
from test_transfers_support import Federation

from eap.node.crypto import account_id_from_public_key
from eap.node.domain import holder_auth as H
from eap.node.errors import PermissionDenied
from eap.node.federation import transfers as T
from eap.node.federation.localnet import LocalFederation
from eap.node.records.enums import Purpose, Status
from eap.node.store import repos
from eap.v1 import federation_pb2 as fed
from eap.v1 import node_api_pb2 as api
from eap.v1 import types_pb2 as pb

OPS = api.READ_PURPOSE_OPERATIONS


def _forms(raw: bytes) -> list[bytes]:
    """The ways a key could be spelled in a message."""
    return [
        raw,
        raw.hex().encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
    ]


class Capture:
    """Wraps a transport: records every request and reply payload that crosses it."""

    def __init__(self, real) -> None:
        self.real, self.seen = real, []

    def call(self, peer, rpc, payload_type, payload, **kw):
        self.seen.append((rpc, bytes(payload)))
        ptype, reply = self.real.call(peer, rpc, payload_type, payload, **kw)
        self.seen.append((rpc, bytes(reply)))
        return ptype, reply


def _sign_out(city, key, account, bundle, to, rid, wh=0):
    return H.sign(
        key,
        H.Intent(
            node_id=city.node_id,
            account=account,
            operation=H.TRANSFER_OUT,
            moves=((bundle, wh),),
            destination=to,
            request_id=rid,
            expires_at_ms=H.now_ms() + 60_000,
        ),
    )


def test_one_holder_on_two_nodes_stays_unlinkable_and_its_key_never_leaves(tmp_path):
    ab = Federation(tmp_path, "ab")
    try:
        a, b = ab["a"], ab["b"]
        key = Ed25519PrivateKey.generate()
        raw = H.public_key_of(key)
        on_a = [
            a.node.create_account(request_id=f"h{i}", holder_public_key=raw).account.id
            for i in range(2)
        ]
        on_b = b.node.create_account(request_id="h", holder_public_key=raw).account.id
        ids = {*on_a, on_b}
        assert len(ids) == 3 and account_id_from_public_key(raw) not in ids
        assert not any(x[5:15] in y for x in ids for y in ids if x != y)  # no shared stem

        # The producer's custodial bundle goes to the holder's first account on A.
        bid = a.bundles[0]
        a.node.transfer(bid, to_account=on_a[0], request_id="to-holder")
        for city in (a, b):
            city.engine.transport = Capture(city.engine.transport)
        to = f"{b.node_id}/{on_b}"
        before = ab.bundle("a", bid)
        with pytest.raises(PermissionDenied, match="needs its holder's signature"):
            a.engine.send(bid, to=to, request_id="x-0")
        stranger = _sign_out(a, Ed25519PrivateKey.generate(), on_a[0], bid, to, "x-0")
        with pytest.raises(PermissionDenied, match="does not authorize"):
            a.engine.send(bid, to=to, request_id="x-0", holder=stranger)
        tampered = _sign_out(a, key, on_a[0], bid, f"{b.node_id}/{b.account}", "x-0")
        with pytest.raises(PermissionDenied, match="does not authorize"):
            a.engine.send(bid, to=to, request_id="x-0", holder=tampered)
        assert ab.bundle("a", bid) == before and not a.engine.transport.seen

        _, rec = a.engine.send(
            bid, to=to, request_id="x-1", holder=_sign_out(a, key, on_a[0], bid, to, "x-1")
        )
        assert rec.state == T.COMMITTED
        assert ab.bundle("b", bid).owner == on_b and ab.bundle("b", bid).status == Status.ACTIVE
        # Back on B the same holder must sign too; it sends part of it home to A's 2nd account.
        back = f"{a.node_id}/{on_a[1]}"
        with pytest.raises(PermissionDenied):
            b.engine.send(bid, to=back, wh=7, request_id="y-1")
        _, rec2 = b.engine.send(
            bid,
            to=back,
            wh=7,
            request_id="y-1",
            holder=_sign_out(b, key, on_b, bid, back, "y-1", wh=7),
        )
        assert rec2.state == T.COMMITTED
        ab.settle()
        ab.assert_conserved()
        ab.assert_agree()

        seen = a.engine.transport.seen + b.engine.transport.seen
        assert any(rpc == "PrepareTransfer" for rpc, _ in seen)
        assert {rpc for rpc, _ in seen} >= {"PrepareTransfer", "DecideTransfer"}
        for rpc, payload in seen:
            for form in _forms(raw):
                assert form not in payload, f"holder key in a {rpc} message"
        for city in (a, b):
            with city.node.store.read() as conn:
                batches = repos.batches_after(conn, 0, 10_000)
            for row in batches:
                assert all(form not in bytes(row.payload) for form in _forms(raw))
            public = city.node.list_accounts(purpose=Purpose.TRANSPARENCY).items
            assert all(x.holder_public_key is None for x in public)
    finally:
        ab.close()


# -- over real gRPC -------------------------------------------------------------------------------

A, B = "a.example", "b.example"
CSV = (
    "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator\n"
    + "".join(
        f"2025-06-21 {h:02d}:00:00,2025-06-21 {h + 1:02d}:00:00,m-1,{900 + h},NET\n"
        for h in range(3)
    )
)


@pytest.fixture(scope="module")
def apinet(tmp_path_factory):
    root = tmp_path_factory.mktemp("holder-api")
    with LocalFederation.create(root, [(A, "ES"), (B, "NL")]) as federation:
        federation.start()
        yield federation


def _auth(key, intent) -> api.HolderAuthorization:
    signed = H.sign(key, intent)
    return api.HolderAuthorization(signature=signed.signature, expires_at_ms=signed.expires_at_ms)


def test_node_api_moves_holder_bundles_only_with_the_holders_signature(apinet):
    a, b = apinet[A].api(), apinet[B].api()
    key = Ed25519PrivateKey.generate()
    raw = H.public_key_of(key)
    holder = a.CreateAccount(api.CreateAccountRequest(request_id="h", holder_public_key=raw))
    assert holder.account.holder_public_key == raw
    friend = a.CreateAccount(api.CreateAccountRequest(request_id="f")).account.id
    far = b.CreateAccount(
        api.CreateAccountRequest(request_id="far", holder_public_key=raw)
    ).account.id
    acct = holder.account.id
    a.RegisterDevice(
        api.RegisterDeviceRequest(
            request_id="dev",
            device=pb.Device(
                local_ref="roof-1",
                capacity_w=5000,
                source=pb.ENERGY_SOURCE_SOLAR,
                technology=pb.TECHNOLOGY_PHOTOVOLTAIC,
                commissioned_on="2020-01-01",
                latitude=41.39,
                longitude=2.17,
                zone="ES",
                owner=acct,
                meter_id="m-1",
            ),
            attestation=pb.Attestation(scheme="operator-signed", evidence="grid connection 1"),
        )
    )
    a.ImportReadings(
        api.ImportReadingsRequest(request_id="imp", content=CSV.encode(), filename="m.csv")
    )
    a.IssueRecords(api.IssueRecordsRequest(request_id="iss"))
    ids = [x.id for x in a.ListBundles(api.ListBundlesRequest(purpose=OPS, owner=acct)).bundles]
    assert len(ids) == 3
    public = a.ListAccounts(api.ListAccountsRequest(purpose=api.READ_PURPOSE_TRANSPARENCY))
    assert all(not x.holder_public_key for x in public.accounts)

    # The operator alone, and a signature over other content, are PERMISSION_DENIED.
    req = api.TransferBundleRequest(request_id="l-1", bundle_id=ids[0], to_account=friend, wh=100)
    with pytest.raises(grpc.RpcError) as err:
        a.TransferBundle(req)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "holder's signature" in err.value.details()
    local = H.Intent(
        node_id=A,
        account=acct,
        operation=H.TRANSFER,
        moves=((ids[0], 100),),
        destination=friend,
        request_id="l-1",
        expires_at_ms=H.now_ms() + 60_000,
    )
    req.holder_auth.CopyFrom(_auth(key, local))
    req.wh = 101
    with pytest.raises(grpc.RpcError) as err:
        a.TransferBundle(req)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert a.GetBundle(api.GetBundleRequest(id=ids[0], purpose=OPS)).status == (
        pb.BUNDLE_STATUS_ACTIVE
    )
    req.wh = 100
    short = api.TransferBundleRequest()
    short.CopyFrom(req)
    short.holder_auth.signature = b"\x00" * 10
    with pytest.raises(grpc.RpcError) as err:
        a.TransferBundle(short)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "holder_auth.signature" in str(err.value.trailing_metadata()) or (
        "64 bytes" in err.value.details()
    )
    res = a.TransferBundle(req)
    assert res.transferred.owner == friend and res.remainder.owner == acct

    # A claim over the API, signed.
    claim = H.Intent(
        node_id=A,
        account=acct,
        operation=H.RETIRE,
        moves=((ids[1], 0),),
        beneficiary="Escola 7",
        purpose="scope2",
        request_id="c-1",
        expires_at_ms=H.now_ms() + 60_000,
    )
    creq = api.RetireBundleRequest(
        request_id="c-1", bundle_id=ids[1], beneficiary="Escola 7", purpose="scope2"
    )
    with pytest.raises(grpc.RpcError) as err:
        a.RetireBundle(creq)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    creq.holder_auth.CopyFrom(_auth(key, claim))
    assert a.RetireBundle(creq).beneficiary == "Escola 7"

    # Cross-node over the federation's mutual TLS.
    to = f"{B}/{far}"
    out = api.TransferBundleRequest(request_id="o-1", bundle_id=ids[2], to_account=to)
    with pytest.raises(grpc.RpcError) as err:
        a.TransferBundle(out)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    out.holder_auth.CopyFrom(
        _auth(
            key,
            H.Intent(
                node_id=A,
                account=acct,
                operation=H.TRANSFER_OUT,
                moves=((ids[2], 0),),
                destination=to,
                request_id="o-1",
                expires_at_ms=H.now_ms() + 60_000,
            ),
        )
    )
    moved = a.TransferBundle(out)
    assert moved.transfer.state == fed.TRANSFER_STATE_COMMITTED
    assert b.GetBundle(api.GetBundleRequest(id=ids[2], purpose=OPS)).owner == far
    assert a.TransferBundle(out).transfer.id == moved.transfer.id  # replay: the same transfer


@pytest.fixture(scope="module")
def clinet(tmp_path_factory):
    net = FedNet(tmp_path_factory.mktemp("holder-cli"), [(A, "CO-ANT"), (B, "ES")])
    net.connect_all()
    net.start_all()
    yield net
    net.stop_all()


def test_cli_signs_with_the_holder_key(clinet, tmp_path):
    a, b = clinet[A], clinet[B]
    wallet = tmp_path / "wallet"
    made = subprocess.run(
        [*CLI, "keys", "holder-new", "--out", str(wallet)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    pub = (wallet / H.PUBLIC_KEY_FILE).read_text().strip()
    keyfile = str(wallet / H.PRIVATE_KEY_FILE)
    on_a = a.js("account", "create", "--holder-key", str(wallet / H.PUBLIC_KEY_FILE))
    on_b = b.js("account", "create", "--holder-key", pub)
    acct, far = on_a["account"]["id"], on_b["account"]["id"]
    a.issue_hours(2)
    a.close()
    bundles = a.js("bundles", "--status", "active")
    bid, other = bundles[0]["id"], bundles[1]["id"]
    a.cli("transfer", bid, "--to", acct)  # custodial producer -> the holder
    a.cli("transfer", other, "--to", acct)

    refused = a.cli("transfer", bid, "--to", f"{B}/{far}", ok=False)
    assert refused.returncode == PermissionDenied.exit_code
    assert "holder's signature" in refused.stderr
    done = a.js("transfer", bid, "--to", f"{B}/{far}", "--sign-with", keyfile)
    assert done["transfer"]["state"] == "committed"
    b.close()
    assert b.js("bundles", "--owner", far)[0]["id"] == bid

    # Claim on B and split locally on A, both signed; unsigned retire refused.
    no = b.cli("retire", bid, "--beneficiary", "x", "--purpose", "y", ok=False)
    assert no.returncode == PermissionDenied.exit_code
    receipt = b.js(
        "retire",
        bid,
        "--beneficiary",
        "Escuela",
        "--purpose",
        "scope2",
        "--wh",
        "5",
        "--sign-with",
        keyfile,
    )
    claimed = receipt["bundle"]
    assert claimed["serial_end"] - claimed["serial_start"] == 5
    assert receipt["beneficiary"] == "Escuela"
    producer = next(x for x in a.js("accounts") if x["id"] != acct)["id"]
    split = a.js("transfer", other, "--to", producer, "--wh", "3", "--sign-with", keyfile)
    moved = split["transferred"]
    assert moved["serial_end"] - moved["serial_start"] == 3 and moved["owner"] == producer
    assert split["remainder"]["owner"] == acct
