"""The local gRPC API over a real socket: same results and errors as the domain layer."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eap.node.api.server import build_server
from eap.node.api.status import field_violations
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb

OPS = api.READ_PURPOSE_OPERATIONS


@pytest.fixture
def served(node):
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield node, channel
    channel.close()
    server.stop(0).wait()


def _stub(channel):
    return node_api_pb2_grpc.NodeApiStub(channel)


def _auth(token: str):
    return (("authorization", f"Bearer {token}"),)


def test_full_walkthrough_over_grpc(served, meter_csv):
    node, channel = served
    stub, md = _stub(channel), _auth(node.config.api_token())
    owner = stub.CreateAccount(
        api.CreateAccountRequest(request_id="a1", label="co-op"), metadata=md
    ).account.id
    buyer = stub.CreateAccount(api.CreateAccountRequest(request_id="a2"), metadata=md)
    dev = stub.RegisterDevice(
        api.RegisterDeviceRequest(
            request_id="d1",
            device=pb.Device(
                local_ref="roof-1",
                capacity_w=250,
                source=pb.ENERGY_SOURCE_SOLAR,
                technology=pb.TECHNOLOGY_PHOTOVOLTAIC,
                commissioned_on="2020-05-01",
                latitude=6.24,
                longitude=-75.58,
                zone="CO-ANT",
                owner=owner,
                meter_id="1",
            ),
            attestation=pb.Attestation(scheme="operator-signed", evidence="doc-1"),
        ),
        metadata=md,
    )
    assert dev.id.startswith("dev_") and dev.cell == "876619d92ffffff"
    imp = stub.ImportReadings(
        api.ImportReadingsRequest(
            request_id="i1", content=meter_csv.read_bytes(), filename="m.csv"
        ),
        metadata=md,
    )
    assert imp.readings == 744
    iss = stub.IssueRecords(api.IssueRecordsRequest(request_id="s1"), metadata=md)
    assert iss.wh == imp.wh and len(iss.merkle_root) == 32
    bundles = stub.ListBundles(
        api.ListBundlesRequest(purpose=OPS, owner=owner, page_size=1000), metadata=md
    ).bundles
    assert sum(b.serial_end - b.serial_start for b in bundles) == imp.wh
    big = max(bundles, key=lambda b: b.serial_end - b.serial_start)
    moved = stub.TransferBundle(
        api.TransferBundleRequest(
            request_id="t1", bundle_id=big.id, to_account=buyer.account.id, wh=25
        ),
        metadata=md,
    )
    assert moved.transferred.serial_end - moved.transferred.serial_start == 25
    assert moved.remainder.parent_id == big.id
    # The buyer spends with its own token: retires what it holds.
    receipt = stub.RetireBundle(
        api.RetireBundleRequest(
            request_id="r1",
            bundle_id=moved.transferred.id,
            beneficiary="Metro de Medellín",
            purpose="scope2-market-based",
        ),
        metadata=_auth(buyer.token),
    )
    assert receipt.bundle.status == pb.BUNDLE_STATUS_RETIRED and receipt.signature
    status = stub.GetStatus(api.GetStatusRequest(), metadata=md)
    assert status.wh_retired == 25 and status.wh_active + 25 == status.wh_issued
    # Same state through the domain layer the CLI uses.
    assert node.status().to_dict() == {
        f.name: getattr(status, f.name) for f in api.NodeStatus.DESCRIPTOR.fields
    }


def test_errors_map_to_status_with_field_violations(served, meter_csv):
    node, channel = served
    stub, md = _stub(channel), _auth(node.config.api_token())
    with pytest.raises(grpc.RpcError) as err:
        stub.RegisterDevice(
            api.RegisterDeviceRequest(
                request_id="bad", device=pb.Device(local_ref="x", capacity_w=-5, zone="nowhere")
            ),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in field_violations(err.value)}
    assert {"device.capacity_w", "device.source", "device.zone"} <= fields
    with pytest.raises(grpc.RpcError) as err:
        stub.GetBundle(api.GetBundleRequest(id="medellin.example/1-2", purpose=OPS), metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.ListBundles(api.ListBundlesRequest(), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # no purpose named
    with pytest.raises(grpc.RpcError) as err:
        stub.GetStatus(api.GetStatusRequest(), metadata=_auth("nope"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        stub.GetStatus(api.GetStatusRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        stub.ImportReadings(
            api.ImportReadingsRequest(
                request_id="j", content=b"not,a,meter\n1,2,3", filename="x.csv"
            ),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert node.status().readings == 0


def test_spending_what_is_not_there_is_failed_precondition(served, solar, meter_csv):
    node, channel = served
    stub, md = _stub(channel), _auth(node.config.api_token())
    _owner, _ = solar
    node.import_readings(meter_csv, request_id="i")
    node.issue(request_id="s")
    b = stub.ListBundles(api.ListBundlesRequest(purpose=OPS, page_size=1), metadata=md).bundles[0]
    with pytest.raises(grpc.RpcError) as err:
        stub.RetireBundle(
            api.RetireBundleRequest(
                request_id="r", bundle_id=b.id, wh=10**9, beneficiary="x", purpose="p"
            ),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert node.get_bundle(b.id).status == 1


def test_health_and_reflection(served):
    _, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    resp = health.Check(health_pb2.HealthCheckRequest(service="eap.v1.NodeApi"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = list(
        refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    names = {s.name for s in answers[0].list_services_response.service}
    assert "eap.v1.NodeApi" in names and "grpc.health.v1.Health" in names
