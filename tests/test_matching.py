"""Hourly matching and Scope 2 figures (eap.node.domain.matching): the arithmetic on hand-made
inputs and its invariants, then a node's real claims through the domain, the CLI and gRPC."""

from __future__ import annotations

import json

import grpc
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from eap.node.domain.matching import (
    ClaimedRecord,
    PoolStats,
    build,
    compute,
    load_by_hour,
)
from eap.node.errors import PermissionDenied
from eap.node.records.enums import Purpose, Source, Status
from eap.node.records.models import Principal

H = 3600
T0 = 1_717_200_000 // H * H  # a whole hour (2024-06-01)


def _claim(hour, wh, source=Source.SOLAR, carbon=0, issuer="a.example"):
    return ClaimedRecord(T0 + hour * H, wh, int(source), carbon, "CO-ANT", issuer)


def test_worked_example():
    """Two hours: the first half covered by solar and the rest at the residual mix, the second
    covered by more gas than the load needs."""
    claims = [
        _claim(0, 600),
        _claim(1, 2000, Source.GAS, 400_000, issuer="b.example"),
    ]
    pool = {
        T0: PoolStats(
            issued_wh=10_000,
            issued_mgwh=10_000 * 200_000,
            unclaimed_wh=4_000,
            unclaimed_mgwh=4_000 * 500_000,
        ),
        T0 + H: PoolStats(issued_wh=5_000, issued_mgwh=5_000 * 300_000),
    }
    r = compute(
        node_id="n",
        subject="acct",
        zone="CO-ANT",
        start=T0,
        end=T0 + 2 * H,
        load={T0: 1000, T0 + H: 1500},
        claims=claims,
        pool=pool,
    )
    h0, h1 = r.hours
    assert (h0.cfe_wh, h0.matched_cfe_wh, h0.cfe_score) == (600, 600, 0.6)
    assert h0.market_g == pytest.approx(400 * 500_000 / 1e6)  # 400 Wh at the residual
    assert h0.location_g == pytest.approx(1000 * 200_000 / 1e6)
    assert h0.residual_basis == "zone-hour"
    assert (h1.cfe_wh, h1.cfe_score) == (0, 0.0)
    assert h1.market_g == pytest.approx(1500 * 400_000 / 1e6)  # only the load's share counts
    assert h1.residual_basis == "zone-period"  # nothing unclaimed that hour: period residual
    assert r.cfe_score == pytest.approx(600 / 2500)
    assert [(f.source, f.wh) for f in r.flows] == [("a.example", 600), ("b.example", 2000)]
    d = r.to_dict()
    assert d["summary"]["load_wh"] == 2500 and len(d["hours"]) == 2
    assert d["score_by_hour_of_day"][T0 // H % 24] == pytest.approx(0.6)


def test_load_from_claims_spreads_consumption_over_its_hours():
    c = ClaimedRecord(T0, 7, int(Source.WIND), 0, "Z", "a", T0, T0 + 2 * H)
    r = compute(
        node_id="n", subject="a", zone="Z", start=T0, end=T0 + 2 * H, load=None, claims=[c], pool={}
    )
    assert [h.load_wh for h in r.hours] == [4, 3] and r.load_basis == "claims"


hours = st.integers(0, 47)
claim_st = st.builds(
    _claim,
    hours,
    st.integers(1, 10_000),
    st.sampled_from(list(Source)[1:]),
    st.integers(0, 2_000_000),
    st.sampled_from(["a.example", "b.example"]),
)


@settings(max_examples=150, deadline=None)
@given(
    claims=st.lists(claim_st, max_size=30),
    load=st.dictionaries(hours, st.integers(0, 20_000)),
    pool=st.dictionaries(
        hours,
        st.tuples(st.integers(0, 50_000), st.integers(0, 2_000_000), st.integers(0, 50_000)),
    ),
)
def test_invariants(claims, load, pool):
    stats = {
        T0 + h * H: PoolStats(w, w * ci, min(u, w), min(u, w) * ci)
        for h, (w, ci, u) in pool.items()
    }
    loads = {T0 + h * H: wh for h, wh in load.items()}
    r = compute(
        node_id="n",
        subject="s",
        zone="Z",
        start=T0,
        end=T0 + 48 * H,
        load=loads,
        claims=claims,
        pool=stats,
    )
    assert len(r.hours) == 48
    assert r.load_wh == sum(loads.values())
    assert r.claimed_wh == sum(c.wh for c in claims)
    assert sum(f.wh for f in r.flows) == r.claimed_wh
    for h in r.hours:
        assert 0 <= h.matched_cfe_wh <= min(h.cfe_wh, h.load_wh)
        assert 0.0 <= h.cfe_score <= 1.0
        assert h.market_g >= 0 and h.location_g >= 0
        # Market-based never exceeds the load at the worst intensity in play.
        worst = max([h.residual_mg_per_kwh] + [c.carbon_mg for c in claims if c.hour == h.hour])
        assert h.market_g <= h.load_wh * worst / 1e6 + 1e-6
    assert 0.0 <= r.cfe_score <= 1.0
    assert sum(r.by_hour_of_day()) <= 24


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10 * H), st.integers(1, 3 * H), st.integers(0, 10**6)), max_size=20
    )
)
def test_load_by_hour_conserves_wh(intervals):
    rows = [(T0 + s, T0 + s + d, wh) for s, d, wh in intervals]
    load = load_by_hour(rows)
    assert sum(load.values()) == sum(wh for *_, wh in rows)
    assert all(h % H == 0 for h in load)


# -- a node's real claims -------------------------------------------------------------------------


def _csv(rows) -> bytes:
    import datetime as dt

    def ts(unix):
        return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    lines = [
        "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator"
    ]
    lines += [f"{ts(s)},{ts(s + H)},{m},{wh},NET" for m, s, wh in rows]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def claimed(node):
    """A solar and a gas device, 4 hours each issued; a retailer claims, for a consumer, all
    the solar of hours 0-1 and 300 Wh of gas in hour 2."""
    coop = node.create_account(request_id="a1", label="co-op").account.id
    retailer = node.create_account(request_id="a2", label="retailer").account.id
    consumer = node.create_account(request_id="a3", label="customer").account.id
    for ref, src, tech, meter, ci in (
        ("pv", "solar", "photovoltaic", "m-pv", 0),
        ("gas", "gas", "combined_cycle", "m-gas", 450_000),
    ):
        node.register_device(
            request_id=f"d-{ref}",
            local_ref=ref,
            capacity_w=5000,
            source=src,
            technology=tech,
            commissioned_on="2020-01-01",
            latitude=6.25,
            longitude=-75.58,
            zone="CO-ANT",
            owner=coop,
            meter_id=meter,
            carbon_mg=ci,
            attestation_evidence="agreement",
        )
    rows = [("m-pv", T0 + h * H, 1000 + h) for h in range(4)]
    rows += [("m-gas", T0 + h * H, 2000) for h in range(4)]
    node.import_readings_bytes(_csv(rows), filename="prod.csv", request_id="imp")
    node.issue(request_id="iss")
    bundles = node.list_bundles(
        purpose=Purpose.OPERATIONS, owner=coop, status=int(Status.ACTIVE), page_size=100
    ).items
    for b in bundles:
        node.transfer(b.id, to_account=retailer, request_id=f"t-{b.id}")
    held = {
        (b.interval_start, b.source): b
        for b in node.list_bundles(
            purpose=Purpose.OPERATIONS, owner=retailer, status=int(Status.ACTIVE), page_size=100
        ).items
    }
    for h in (0, 1):
        node.retire(
            held[(T0 + h * H, int(Source.SOLAR))].id,
            beneficiary=consumer,
            purpose="scope2",
            request_id=f"c{h}",
        )
    node.retire(
        held[(T0 + 2 * H, int(Source.GAS))].id,
        wh=300,
        beneficiary=consumer,
        purpose="scope2",
        request_id="c2",
    )
    return consumer, retailer


def test_report_from_a_nodes_claims(node, claimed):
    consumer, _ = claimed
    load = {T0 + h * H: 1500 for h in range(4)}
    r = build(node, account=consumer, start=T0, end=T0 + 4 * H, load=load)
    assert [h.claimed_wh for h in r.hours] == [1000, 1001, 300, 0]
    assert [h.matched_cfe_wh for h in r.hours] == [1000, 1001, 0, 0]
    assert r.cfe_score == pytest.approx(2001 / 6000)
    # Hour 2: 300 Wh of gas at its intensity, 1200 Wh at the residual: what nobody claimed
    # that hour (solar 1002 Wh at 0 and gas 1700 Wh at 450 g/kWh).
    residual = 1700 * 450_000 / (1002 + 1700)
    assert r.hours[2].residual_mg_per_kwh == pytest.approx(residual)
    assert r.hours[2].market_g == pytest.approx((300 * 450_000 + 1200 * residual) / 1e6)
    # Location-based: the zone's average of all issued records of the hour.
    loc = 2000 * 450_000 / (1002 + 2000)
    assert r.hours[2].location_g == pytest.approx(1500 * loc / 1e6)
    assert r.flows[0].source == node.node_id and r.flows[0].wh == 2301
    # Without a load file the claims' own consumption intervals are the load.
    own = build(node, account=consumer, start=T0, end=T0 + 4 * H)
    assert own.load_basis == "claims" and own.cfe_score == pytest.approx(2001 / 2301)


def test_report_reads_are_the_operators_or_the_accounts_own(node, claimed):
    consumer, retailer = claimed
    build(node, account=consumer, start=T0, end=T0 + H, principal=Principal("account", consumer))
    with pytest.raises(PermissionDenied):
        build(
            node, account=consumer, start=T0, end=T0 + H, principal=Principal("account", retailer)
        )


def test_cli_report_html_and_json(node, claimed, tmp_path):
    from eap.node import cli

    consumer, _ = claimed
    home = node.config.home
    load = tmp_path / "load.csv"
    load.write_bytes(_csv([("customer-meter", T0 + h * H, 1500) for h in range(4)]))
    out = tmp_path / "r" / "report.html"
    res = CliRunner().invoke(
        cli.main,
        [
            "report",
            "--home",
            str(home),
            "--account",
            consumer,
            "--consumption",
            str(load),
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["summary"]["load_wh"] == 6000 and data["load_basis"] == "file"
    assert data["summary"]["matched_cfe_wh"] == 2001
    page = out.read_text()
    assert "<script" in page and "https://" not in page.split("</script>")[-1]
    for div in ("plot-supply", "plot-score", "plot-emissions", "plot-flows"):
        assert f'id="{div}"' in page
    bad = CliRunner().invoke(
        cli.main, ["report", "--home", str(home), "--account", "nobody", "--json"]
    )
    assert bad.exit_code != 0 and "nobody" in bad.output


def test_cli_report_from_a_green_button_load(node, tmp_path):
    from eap.node import cli
    from eap.node.meters import sample_greenbutton_path

    res = CliRunner().invoke(
        cli.main,
        [
            "report",
            "--home",
            str(node.config.home),
            "--consumption",
            str(sample_greenbutton_path()),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["summary"]["load_wh"] > 0 and data["summary"]["claimed_wh"] == 0
    assert data["summary"]["cfe_score"] == 0.0


def test_grpc_report_and_its_errors(node, claimed):
    from eap.node.api.convert import matching_report_from
    from eap.node.api.server import build_server
    from eap.v1 import node_api_pb2 as api
    from eap.v1 import node_api_pb2_grpc

    consumer, _ = claimed
    other = node.create_account(request_id="a9", label="someone else")
    server, port = build_server(node, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = node_api_pb2_grpc.NodeApiStub(channel)
            md = (("authorization", f"Bearer {node.config.api_token()}"),)
            req = api.GetMatchingReportRequest(
                account=consumer,
                start_unix=T0,
                end_unix=T0 + 4 * H,
                load=[api.HourlyLoad(hour_unix=T0 + h * H, wh=1500) for h in range(4)],
            )
            msg = stub.GetMatchingReport(req, metadata=md)
            rep = matching_report_from(msg)
            assert rep.matched_cfe_wh == 2001 and rep.load_wh == 6000
            assert (
                rep.to_dict()
                == build(
                    node,
                    account=consumer,
                    start=T0,
                    end=T0 + 4 * H,
                    load={T0 + h * H: 1500 for h in range(4)},
                ).to_dict()
            )
            with pytest.raises(grpc.RpcError) as err:
                stub.GetMatchingReport(req, metadata=(("authorization", f"Bearer {other.token}"),))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            bad = api.GetMatchingReportRequest(
                account=consumer,
                start_unix=T0,
                end_unix=T0 + H,
                load=[api.HourlyLoad(hour_unix=T0 + 5, wh=1)],
            )
            with pytest.raises(grpc.RpcError) as err:
                stub.GetMatchingReport(bad, metadata=md)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:
                stub.GetMatchingReport(
                    api.GetMatchingReportRequest(account=consumer, start_unix=T0 + H, end_unix=T0),
                    metadata=md,
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(0).wait()
