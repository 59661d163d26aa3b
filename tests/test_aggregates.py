"""Regulator aggregates (privacy, part 3): per zone, hour and source, no household isolable.

A small town: six solar roofs and one wind turbine in CO-ANT, one lone roof in CO-BOY.  Cells
with fewer than k (5) devices or holders are suppressed; differencing two windows, two zones or
totals against cells reveals nothing below k; the DP noise has the scale epsilon promises.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics

import grpc
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from support import write_csv

from eap.node.api.server import build_server
from eap.node.api.status import field_violations
from eap.node.cli import main
from eap.node.domain import aggregates
from eap.node.errors import InvalidArgument, PermissionDenied
from eap.node.records.enums import Purpose
from eap.node.records.models import Principal
from eap.node.store.aggregate_repos import DeviceHour
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb

T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
T1, T2, T3 = T0 + 3600, T0 + 7200, T0 + 10800
REGULATOR = Principal("regulator")


def _iso(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class Town:
    def __init__(self, node, tmp_path):
        self.node = node
        self.owners: dict[str, str] = {}
        rows = []

        def device(ref, source, tech, zone, hours):
            acct = node.create_account(request_id=f"o-{ref}", label=f"household {ref}")
            self.owners[ref] = acct.account.id
            node.register_device(
                request_id=f"d-{ref}",
                local_ref=ref,
                capacity_w=2000,
                source=source,
                technology=tech,
                commissioned_on="2020-01-01",
                latitude=6.2,
                longitude=-75.5,
                zone=zone,
                owner=acct.account.id,
                meter_id=f"m-{ref}",
                attestation_evidence="grid agreement",
            )
            rows.extend((_iso(t), _iso(t + 3600), f"m-{ref}", wh) for t, wh in hours)

        for i in range(1, 7):
            hours = [(T0, 1000 + i)]
            if i <= 3:
                hours.append((T1, 500))
            if i <= 5:
                hours.append((T2, 600))
            device(f"s{i}", "solar", "photovoltaic", "CO-ANT", hours)
        device("w1", "wind", "onshore_wind", "CO-ANT", [(T0, 800)])
        device("h", "solar", "photovoltaic", "CO-BOY", [(T0, 700)])
        node.import_readings(write_csv(tmp_path / "town.csv", rows), request_id="imp")
        node.issue(request_id="iss")
        self.buyers = [node.create_account(request_id=f"b{i}").account.id for i in range(1, 7)]
        # T0: six sellers to six buyers, who claim it all; T2: five sellers to one buyer;
        # T1: one claim.
        for i in range(1, 7):
            b = self.bundle(f"s{i}", T0)
            node.transfer(b.id, to_account=self.buyers[i - 1], request_id=f"t0-{i}")
            node.retire(b.id, beneficiary=f"school {i}", purpose="p", request_id=f"c0-{i}")
        for i in range(1, 6):
            b = self.bundle(f"s{i}", T2)
            node.transfer(b.id, to_account=self.buyers[0], request_id=f"t2-{i}")
        node.retire(self.bundle("s1", T1).id, beneficiary="me", purpose="p", request_id="c1")

    def bundle(self, ref: str, hour: int):
        items = self.node.list_bundles(
            purpose=Purpose.OPERATIONS, owner=self.owners[ref], page_size=100
        ).items
        return next(b for b in items if b.interval_start == hour)

    def report(self, zone="CO-ANT", start=T0, end=T3, **kw):
        return self.node.aggregates(zone=zone, start=start, end=end, principal=REGULATOR, **kw)


@pytest.fixture
def town(node, tmp_path):
    return Town(node, tmp_path)


def _cells(report) -> dict[tuple[str, int, str], int | None]:
    return {
        (c.metric, c.hour, c["source"] if isinstance(c, dict) else c.as_dict()["source"]): c.wh
        for c in report.cells
    }


def test_cells_below_k_are_suppressed_and_marked(town):
    r = town.report()
    cells = _cells(r)
    assert cells[("issued", T0, "solar")] == sum(1000 + i for i in range(1, 7))
    assert cells[("issued", T1, "solar")] is None  # three roofs
    assert cells[("issued", T2, "solar")] == 5 * 600  # exactly k
    assert cells[("issued", T0, "wind")] is None  # one turbine
    assert cells[("transferred", T0, "solar")] == sum(1000 + i for i in range(1, 7))
    assert cells[("transferred", T2, "solar")] is None  # five sellers, but one buyer
    assert cells[("claimed", T0, "solar")] == sum(1000 + i for i in range(1, 7))
    assert cells[("claimed", T1, "solar")] is None
    suppressed = [c for c in r.cells if c.suppressed]
    assert len(suppressed) == r.suppressed == 4 and all(c.wh is None for c in suppressed)
    # totals add published cells only: no suppressed value is a difference away
    assert r.totals() == {"issued": 6021 + 3000, "transferred": 6021, "claimed": 6021}
    # raising k suppresses the exactly-k cell too; lowering it below the node's is refused
    assert _cells(town.report(k=6))[("issued", T2, "solar")] is None
    with pytest.raises(InvalidArgument) as err:
        town.report(k=2)
    assert err.value.violations[0].field == "k"


def test_differencing_windows_reveals_nothing_below_k(town):
    """The lone hour T1 (three roofs) sits between two published hours: every pair of
    windows differs by whole cells, each suppressed or made of k or more devices."""
    hours = [T0, T1, T2, T3]
    for i, a in enumerate(hours):
        for b in hours[i + 1 :]:
            wide = town.report(start=a, end=b)
            for c in wide.cells:
                narrow_with_cell = town.report(start=c.hour, end=c.hour + 3600)
                same = [
                    x
                    for x in narrow_with_cell.cells
                    if (x.metric, x.source) == (c.metric, c.source)
                ]
                assert same == [c]  # a cell is the same whatever window contains it
    before = town.report(start=T0, end=T1).totals()
    after = town.report(start=T0, end=T2).totals()
    assert after == before  # adding the T1 hour of three households changes no total


def test_zone_differencing_and_lone_household(town):
    boy = town.report(zone="CO-BOY")
    assert boy.cells and all(c.suppressed for c in boy.cells) and boy.totals()["issued"] == 0
    ant = town.report(zone="CO-ANT")
    assert 700 not in {c.wh for c in ant.cells}
    # no pattern, prefix or union can be asked for: zones match exactly
    for zone in ("CO-%", "CO", "co-ant", "CO-ANT' OR 1=1"):
        try:
            r = town.report(zone=zone)
        except InvalidArgument:
            continue
        assert r.cells == []


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 12), st.integers(2, 8))
def test_a_cell_is_published_iff_k_distinct_devices(n, k):
    rows = [DeviceHour(T0, 1, f"dev_{i}", 100 + i) for i in range(n)]
    cells = aggregates._cells("issued", rows, k, {}, None)
    wh, ok = cells[(T0, 1)]
    assert ok == (n >= k) and wh == sum(100 + i for i in range(n))
    # one device's many rows count once
    rows = [DeviceHour(T0, 1, "dev_same", 10) for _ in range(n)]
    assert aggregates._cells("issued", rows, k, {}, None)[(T0, 1)][1] is False


def test_dp_contributions_are_clamped_per_device_hour():
    rows = [DeviceHour(T0, 1, f"dev_{i}", 5000) for i in range(5)]
    rows += [DeviceHour(T0, 1, "dev_0", 5000, "a", "b")]  # moved twice: still one device-hour
    caps = {"dev_1": 300}  # 300 W -> at most 300 Wh in an hour
    wh, ok = aggregates._cells("issued", rows, 5, caps, 1000)[(T0, 1)]
    assert ok and wh == 1000 + 300 + 3 * 1000


def test_dp_noise_scale_matches_epsilon(town):
    eps, bound = 1.5, 2000
    scale = bound / (eps / 3)
    # OpenDP's own privacy map: one metric at this scale is eps/3-DP for one device-hour
    assert aggregates.privacy_loss(scale, bound) == pytest.approx(eps / 3)
    draws = aggregates.laplace_noise(6000, scale)
    # discrete Laplace with scale b: mean |X| ~ b (here b >> 1); generous bounds, no seed
    assert 0.85 * scale < statistics.fmean(abs(x) for x in draws) < 1.15 * scale
    assert abs(statistics.fmean(draws)) < 0.1 * scale
    r = town.report(epsilon=eps, bound_wh=bound)
    assert r.epsilon == eps and r.noise_scale == pytest.approx(scale)
    assert "Laplace" in r.mechanism and r.as_dict()["mechanism"] == r.mechanism
    cells = _cells(r)
    # still suppressed under noise; published ones are non-negative integers
    assert cells[("issued", T1, "solar")] is None and cells[("issued", T0, "wind")] is None
    assert all(isinstance(v, int) and v >= 0 for v in cells.values() if v is not None)
    for bad in (-1.0, 0.001, 11.0):
        with pytest.raises(InvalidArgument):
            town.report(epsilon=bad)


def test_who_may_read_aggregates(town):
    node = town.node
    holder = Principal("account", town.owners["s1"])
    with pytest.raises(PermissionDenied):
        node.aggregates(zone="CO-ANT", start=T0, end=T1, principal=holder)
    # the regulator reads aggregates only
    with pytest.raises(PermissionDenied):
        node.list_devices(purpose=Purpose.TRANSPARENCY, principal=REGULATOR)
    with pytest.raises(InvalidArgument):
        node.list_devices(purpose=Purpose.REGULATION, principal=Principal.operator())
    with pytest.raises(InvalidArgument) as err:
        node.aggregates(zone="CO-ANT", start=T0 + 60, end=T1, principal=REGULATOR)
    assert err.value.violations[0].field == "from"
    assert node.aggregates(zone="CO-ANT", start=T0, end=T1).k == 5  # operator


def test_aggregates_over_grpc_with_the_regulator_token(town):
    node = town.node
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = node_api_pb2_grpc.NodeApiStub(channel)
        reg = (("authorization", f"Bearer {node.config.create_regulator_token()}"),)
        req = api.GetAggregatesRequest(
            purpose=api.READ_PURPOSE_REGULATION, zone="CO-ANT", from_unix=T0, to_unix=T3
        )
        rep = stub.GetAggregates(req, metadata=reg)
        assert rep.k == 5 and rep.mechanism == "none" and rep.suppressed_cells == 4
        assert rep.total_issued_wh == 9021 and rep.total_claimed_wh == 6021
        wind = [c for c in rep.cells if c.source == pb.ENERGY_SOURCE_WIND]
        assert [(c.suppressed, c.wh) for c in wind] == [(True, 0)]
        with pytest.raises(grpc.RpcError) as err:
            stub.ListDevices(
                api.ListDevicesRequest(purpose=api.READ_PURPOSE_TRANSPARENCY), metadata=reg
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        holder = node.create_account(request_id="h-token").token
        with pytest.raises(grpc.RpcError) as err:
            stub.GetAggregates(req, metadata=(("authorization", f"Bearer {holder}"),))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        bad = api.GetAggregatesRequest(
            purpose=api.READ_PURPOSE_REGULATION,
            zone="CO-ANT",
            from_unix=T0 + 1,
            to_unix=T3,
            k=1,
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.GetAggregates(bad, metadata=reg)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert {f for f, _ in field_violations(err.value)} == {"from_unix", "k"}
        noisy = stub.GetAggregates(
            api.GetAggregatesRequest(
                purpose=api.READ_PURPOSE_REGULATION,
                zone="CO-ANT",
                from_unix=T0,
                to_unix=T3,
                epsilon=1.0,
            ),
            metadata=reg,
        )
        assert noisy.epsilon == 1.0 and noisy.noise_scale == pytest.approx(30000.0)
        assert "OpenDP" in noisy.mechanism
    finally:
        channel.close()
        server.stop(0).wait()


def test_cli_aggregates(town):
    home = str(town.node.config.home)
    runner = CliRunner()
    args = ["aggregates", "--zone", "CO-ANT", "--from", _iso(T0), "--to", str(T3), "--home", home]
    out = runner.invoke(main, [*args, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["suppressed_cells"] == 4 and data["totals_published_wh"]["issued"] == 9021
    text = runner.invoke(main, args)
    assert "suppressed" in text.output and "6,021 Wh" in text.output
    bad = runner.invoke(main, [*args, "--k", "1"])
    assert bad.exit_code != 0 and "k" in bad.output
    assert runner.invoke(main, ["aggregates", "--help"]).exit_code == 0
    assert runner.invoke(main, ["regulator-token", "--help"]).exit_code == 0
