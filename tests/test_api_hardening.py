"""Findings of the attacker's review (issue #7) against the local gRPC API and the CLI."""

from __future__ import annotations

import logging

import grpc
import pytest
from fednet import FedNet
from sqlalchemy import insert

from eap.node.api.guard import ThrottledLog
from eap.node.api.server import build_server
from eap.node.api.status import field_violations
from eap.node.crypto import load_tls_material, peer_channel_options
from eap.node.domain.rules import MAX_READING_WH
from eap.node.federation.server import build_server as build_fed_server
from eap.node.federation.settings import FederationSettings
from eap.node.store import schema as t
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc

INT64_MAX = 2**63 - 1
CSV_HEADER = (
    "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator"
)


def _csv(*rows: tuple[str, int]) -> bytes:
    """An hourly CSV for meter ``1``: ``(start hour, Wh)`` rows."""
    lines = [CSV_HEADER]
    for hour, wh in rows:
        h = int(hour)
        lines.append(f"2024-01-01 {h:02d}:00:00,2024-01-01 {h + 1:02d}:00:00,1,{wh},NET")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def served(node):
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield node, channel
    channel.close()
    server.stop(0).wait()


def _call(channel, token: str):
    stub = node_api_pb2_grpc.NodeApiStub(channel)
    md = (("authorization", f"Bearer {token}"),)

    def call(method: str, request):
        return getattr(stub, method)(request, metadata=md)

    return call


def _refused(call, method: str, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(method, request)
    return err.value


# -- 1. meter values that overflow int64 arithmetic -----------------------------------------------


@pytest.mark.parametrize("wh", [INT64_MAX, 2**62, MAX_READING_WH + 1, 251])
def test_out_of_range_meter_reading_is_invalid_argument_and_changes_nothing(served, solar, wh):
    node, channel = served
    call = _call(channel, node.config.api_token())
    before = call("GetStatus", api.GetStatusRequest())
    req = api.ImportReadingsRequest(request_id=f"i{wh}", content=_csv((0, 10), (1, wh)),
                                    filename="m.csv")
    err = _refused(call, "ImportReadings", req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err)] == ["readings[1@1704070800].wh"]
    after = call("GetStatus", api.GetStatusRequest())
    assert after == before and after.readings == 0 and after.wh_metered == 0


def test_reading_at_the_capacity_bound_is_accepted(served, solar):
    node, channel = served
    call = _call(channel, node.config.api_token())
    res = call("ImportReadings",
               api.ImportReadingsRequest(request_id="i", content=_csv((0, 250)), filename="m.csv"))
    assert res.readings == 1 and res.wh == 250


def test_status_survives_stored_totals_past_int64(served, solar):
    """A node that stored such readings before the fix still answers GetStatus, saturated."""
    node, channel = served
    _, dev = solar
    with node.store.transaction() as conn:
        conn.execute(insert(t.readings), [
            {"device_id": dev.id, "interval_start": 3600 * k, "interval_end": 3600 * (k + 1),
             "wh": INT64_MAX, "issued_wh": 0}
            for k in range(2)
        ])
    st = _call(channel, node.config.api_token())("GetStatus", api.GetStatusRequest())
    assert st.readings == 2 and st.wh_metered == INT64_MAX


# -- 3. malformed request bodies -------------------------------------------------------------------

GARBAGE = b"\x0a\x05ab"  # a length-delimited field cut short: no message decodes from it


def _raw_unary(channel, method: str):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def _guard_records(caplog) -> list:
    return [r for r in caplog.records if r.name == "eap.node.api.guard" or r.exc_info]


@pytest.mark.parametrize("method", ["GetStatus", "TransferBundle", "ImportReadings"])
def test_malformed_body_is_invalid_argument_logged_once_without_traceback(
    served, caplog, method
):
    _node, channel = served
    call = _raw_unary(channel, f"/eap.v1.NodeApi/{method}")
    caplog.set_level(logging.INFO)
    for _ in range(20):  # unauthenticated, as an attacker flooding the log would call
        with pytest.raises(grpc.RpcError) as err:
            call(GARBAGE, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed request body" in err.value.details()
    lines = _guard_records(caplog)
    assert len(lines) == 1 and lines[0].exc_info is None, lines
    assert f"/eap.v1.NodeApi/{method}" in lines[0].getMessage()
    assert "\n" not in lines[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("grpc")]


def test_well_formed_calls_still_pass_the_guard(served):
    node, channel = served
    st = _call(channel, node.config.api_token())("GetStatus", api.GetStatusRequest())
    assert st.node_id == node.node_id
    raw = _raw_unary(channel, "/eap.v1.NodeApi/GetStatus")
    with pytest.raises(grpc.RpcError) as err:  # decodes fine, so authentication runs
        raw(b"", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_throttled_log_counts_what_it_suppressed(caplog):
    now = [100.0]
    throttle = ThrottledLog(logging.getLogger("eap.test.throttle"), 60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="eap.test.throttle")
    assert throttle.warning("/m", "first")
    assert not any(throttle.warning("/m", "again") for _ in range(5))
    assert throttle.warning("/other", "other method")  # one budget per key
    now[0] += 61
    assert throttle.warning("/m", "later")
    assert [r.getMessage() for r in caplog.records] == [
        "first",
        "other method",
        "later (5 more since the last report)",
    ]


@pytest.fixture(scope="module")
def fed_pair(tmp_path_factory):
    net = FedNet(tmp_path_factory.mktemp("pair"), [("a.example", "CO-ANT"), ("b.example", "ES")])
    net.connect_all()
    yield net
    net.stop_all()


def test_federation_answers_malformed_bodies_with_invalid_argument(fed_pair, caplog):
    a, b = fed_pair["a.example"], fed_pair["b.example"]
    settings = FederationSettings.load(a.node.config)
    server, port, _ = build_fed_server(a.node, settings=settings, listen="127.0.0.1:0")
    server.start()
    tls = load_tls_material(b.tls_dir)
    channel = grpc.secure_channel(f"127.0.0.1:{port}", tls.channel_credentials(),
                                  options=peer_channel_options("a.example"))
    caplog.set_level(logging.INFO)
    try:
        hello = _raw_unary(channel, "/eap.v1.Federation/Hello")
        pull = channel.unary_stream("/eap.v1.Federation/PullBatches",
                                    request_serializer=None, response_deserializer=None)
        for _ in range(10):
            with pytest.raises(grpc.RpcError) as err:
                hello(GARBAGE, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:
                list(pull(GARBAGE, timeout=10))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
        server.stop(0).wait()
    lines = [r for r in caplog.records if "malformed" in r.getMessage() or r.exc_info]
    assert len(lines) == 2 and not any(r.exc_info for r in lines), lines
    assert not [r for r in caplog.records if r.name.startswith("grpc")]
