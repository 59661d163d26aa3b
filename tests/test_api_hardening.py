"""Findings of the attacker's review (issue #7) against the local gRPC API and the CLI."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import insert

from eap.node.api.server import build_server
from eap.node.api.status import field_violations
from eap.node.domain.rules import MAX_READING_WH
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
