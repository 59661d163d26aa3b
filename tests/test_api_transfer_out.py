"""``NodeApi.TransferBundle`` to ``NODE_ID/ACCOUNT``: a cross-node transfer started through the
local gRPC API of a running ``eap-node serve``, between two node processes over mutual TLS."""

from __future__ import annotations

import grpc
import pytest

from eap.node.api.server import build_server
from eap.node.federation import conservation
from eap.node.federation.localnet import LocalFederation
from eap.v1 import federation_pb2 as fed
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb

A, B = "a.example", "b.example"
OPS = api.READ_PURPOSE_OPERATIONS
CSV = (
    "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator\n"
    + "".join(
        f"2025-06-21 {h:02d}:00:00,2025-06-21 {h + 1:02d}:00:00,m-1,{900 + h},NET\n"
        for h in range(4)
    )
)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-xfer")
    with LocalFederation.create(root, [(A, "ES"), (B, "NL")]) as federation:
        federation.start()
        yield federation


@pytest.fixture(scope="module")
def setup(net):
    """Four issued bundles on A (owner ``seller``, with its account token), a buyer on B."""
    a, b = net[A].api(), net[B].api()
    seller = a.CreateAccount(api.CreateAccountRequest(request_id="seller"))
    buyer = b.CreateAccount(api.CreateAccountRequest(request_id="buyer")).account.id
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
                owner=seller.account.id,
                meter_id="m-1",
            ),
            attestation=pb.Attestation(scheme="operator-signed", evidence="grid connection 1"),
        )
    )
    a.ImportReadings(
        api.ImportReadingsRequest(request_id="imp", content=CSV.encode(), filename="m.csv")
    )
    a.IssueRecords(api.IssueRecordsRequest(request_id="iss"))
    bundles = a.ListBundles(api.ListBundlesRequest(purpose=OPS)).bundles
    assert len(bundles) == 4
    return seller, buyer, [x.id for x in bundles]


def _wh(b: pb.RecordBundle) -> int:
    return b.serial_end - b.serial_start


def _conserved(net) -> None:
    report = conservation.check({n.node_id: n.store() for n in net})
    assert report.ok, report.describe()


def test_partial_then_whole_transfer_over_the_api(net, setup):
    _, buyer, ids = setup
    a, b = net[A].api(), net[B].api()
    res = a.TransferBundle(
        api.TransferBundleRequest(
            request_id="x1", bundle_id=ids[0], to_account=f"{B}/{buyer}", wh=250
        )
    )
    t = res.transfer
    assert t.id.startswith(f"{A}/") and t.to == f"{B}/{buyer}" and t.wh == 250
    assert t.state == fed.TRANSFER_STATE_COMMITTED and t.settled, t
    assert _wh(res.transferred) == 250 and res.HasField("remainder")
    assert _wh(res.transferred) + _wh(res.remainder) == 900
    there = b.GetBundle(api.GetBundleRequest(id=res.transferred.id, purpose=OPS))
    assert there.status == pb.BUNDLE_STATUS_ACTIVE and there.owner == buyer
    here = a.GetBundle(api.GetBundleRequest(id=res.transferred.id, purpose=OPS))
    assert here.status == pb.BUNDLE_STATUS_EXPORTED and here.held_by == B
    rest = a.GetBundle(api.GetBundleRequest(id=res.remainder.id, purpose=OPS))
    assert rest.status == pb.BUNDLE_STATUS_ACTIVE

    whole = a.TransferBundle(
        api.TransferBundleRequest(request_id="x2", bundle_id=ids[1], to_account=f"{B}/{buyer}")
    )
    assert whole.transfer.state == fed.TRANSFER_STATE_COMMITTED and whole.transfer.settled
    assert whole.transferred.id == ids[1] and not whole.HasField("remainder")
    assert b.GetBundle(api.GetBundleRequest(id=ids[1], purpose=OPS)).owner == buyer
    status_a = a.GetStatus(api.GetStatusRequest())
    status_b = b.GetStatus(api.GetStatusRequest())
    assert status_a.wh_exported == status_b.wh_imported == 250 + _wh(whole.transferred)
    _conserved(net)


def test_replay_returns_the_first_transfer_and_moves_nothing(net, setup):
    _, buyer, ids = setup
    a, b = net[A].api(), net[B].api()
    req = api.TransferBundleRequest(
        request_id="x3", bundle_id=ids[2], to_account=f"{B}/{buyer}", wh=2
    )
    first = a.TransferBundle(req)
    before = b.GetStatus(api.GetStatusRequest()).wh_imported
    again = a.TransferBundle(req)
    assert again.transfer.id == first.transfer.id
    assert again.transfer.state == fed.TRANSFER_STATE_COMMITTED
    assert again.transferred.id == first.transferred.id
    assert b.GetStatus(api.GetStatusRequest()).wh_imported == before
    with pytest.raises(grpc.RpcError) as err:  # same id, other content
        a.TransferBundle(
            api.TransferBundleRequest(
                request_id="x3", bundle_id=ids[2], to_account=f"{B}/{buyer}", wh=3
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _conserved(net)


def test_refusals_change_nothing(net, setup):
    _, buyer, ids = setup
    a = net[A].api()
    before = a.GetBundle(api.GetBundleRequest(id=ids[3], purpose=OPS))
    cases = [
        ("c.example/" + buyer, 0, grpc.StatusCode.FAILED_PRECONDITION),  # not a peer
        (f"{A}/{buyer}", 0, grpc.StatusCode.INVALID_ARGUMENT),  # this node itself
        (f"{B}/not-an-account", 0, grpc.StatusCode.INVALID_ARGUMENT),
        (f"{B}/{buyer}", 10**6, grpc.StatusCode.FAILED_PRECONDITION),  # more than it holds
    ]
    for i, (to, wh, code) in enumerate(cases):
        with pytest.raises(grpc.RpcError) as err:
            a.TransferBundle(
                api.TransferBundleRequest(
                    request_id=f"bad-{i}", bundle_id=ids[3], to_account=to, wh=wh
                )
            )
        assert err.value.code() == code, (to, err.value.details())
    # The destination refuses an account it does not have: the transfer aborts, range back.
    res = a.TransferBundle(
        api.TransferBundleRequest(
            request_id="bad-acct", bundle_id=ids[3], to_account=f"{B}/acct_{'a' * 26}", wh=5
        )
    )
    assert res.transfer.state == fed.TRANSFER_STATE_ABORTED and res.transfer.reason
    after = a.ListBundles(api.ListBundlesRequest(purpose=OPS, status=pb.BUNDLE_STATUS_ACTIVE))
    assert sum(
        _wh(x)
        for x in after.bundles
        if x.attributes.interval.start_unix == before.attributes.interval.start_unix
    ) == _wh(before)
    _conserved(net)


def test_account_token_moves_only_its_own_bundles(net, setup):
    seller, buyer, _ = setup
    a = net[A].api()
    other = a.CreateAccount(api.CreateAccountRequest(request_id="other"))
    live = a.ListBundles(
        api.ListBundlesRequest(purpose=OPS, owner=seller.account.id, status=pb.BUNDLE_STATUS_ACTIVE)
    ).bundles[0]
    stub = node_api_pb2_grpc.NodeApiStub(net[A].channel())
    for token, code in ((other.token, grpc.StatusCode.PERMISSION_DENIED), (seller.token, None)):
        req = api.TransferBundleRequest(
            request_id=f"tok-{code}", bundle_id=live.id, to_account=f"{B}/{buyer}", wh=1
        )
        md = (("authorization", f"Bearer {token}"),)
        if code is None:
            assert stub.TransferBundle(req, metadata=md, timeout=30).transfer.settled
        else:
            with pytest.raises(grpc.RpcError) as err:
                stub.TransferBundle(req, metadata=md, timeout=30)
            assert err.value.code() == code
    _conserved(net)


def test_without_federation_a_cross_node_transfer_is_a_failed_precondition(node):
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = node_api_pb2_grpc.NodeApiStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.TransferBundle(
                    api.TransferBundleRequest(
                        request_id="r", bundle_id="x/0-1", to_account="b.example/acct_x"
                    ),
                    metadata=(("authorization", f"Bearer {node.config.api_token()}"),),
                )
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "federation" in err.value.details()
    finally:
        server.stop(0).wait()
