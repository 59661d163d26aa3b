"""Green Button Connect plugin against a local HTTPS data custodian serving the real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eap.node.errors import ConfigError, InvalidArgument
from eap.node.meters import GreenButtonSource

SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "greenbutton"
LOCAL = Path(__file__).parent / "data" / "greenbutton"
# The custodian serves a full-year feed, which only the shared data has.
if not SHARED.is_dir():
    pytest.skip(
        f"shared test data absent: {SHARED} (see the project README on ../shared/data)",
        allow_module_level=True,
    )

from gbc_server import PREFIX, Custodian, make_ca, serve  # noqa: E402

from eap.plugins.greenbutton_connect import (  # noqa: E402
    ConnectConfig,
    GreenButtonConnect,
    pull_into_node,
)

COASTAL = SHARED / "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml"
NINE_DAYS = LOCAL / "TestGBDataHourlyNineDaysBinnedDaily.xml"
CONTAINERIZED = LOCAL / "electric_containerized.xml"
GAS = LOCAL / "gas_direct.xml"
GBD = "https://services.greenbuttondata.org/DataCustodian/espi/1_1/resource"
CLIENT_ID, SECRET = "eap-node-test", "s3cret-client"
T_2013 = 1_356_998_400  # 2013-01-01: every block of the 2011 files is published
T_MID_2011 = 1_310_688_000  # 2011-07-15


@pytest.fixture(scope="module")
def custodian(tmp_path_factory):
    folder = tmp_path_factory.mktemp("custodian")
    production = folder / "coastal-production.xml"
    # the same meter as a producer's feed: reverse flow, under a ReadingType of its own (the
    # custodian serves ReadingType resources by id, across subscriptions)
    production.write_text(
        COASTAL.read_text()
        .replace("<flowDirection>1</flowDirection>", "<flowDirection>19</flowDirection>")
        .replace("/ReadingType/07", "/ReadingType/19")
    )
    c = Custodian(
        {"5": [COASTAL], "3": [CONTAINERIZED], "gas": [GAS], "multi": [NINE_DAYS, CONTAINERIZED],
         "pv": [production]},
        CLIENT_ID, SECRET,
    )  # fmt: skip
    ca, cert, key = make_ca(folder)
    server, thread = serve(c, cert, key)
    c.base_url = f"https://127.0.0.1:{server.server_port}{PREFIX}"
    c.token_url = f"https://127.0.0.1:{server.server_port}/oauth/token"
    c.ca = ca
    c.production = production
    yield c
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def custodian_reset(custodian):
    custodian.fail_next.clear()
    custodian.requests.clear()
    custodian.token_grants.clear()
    custodian.refused_tokens = 0
    return custodian


def table(c, home: Path, **extra) -> dict:
    secret = home / "gbc-secret"
    if not secret.exists():
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, SECRET.encode())
        os.close(fd)
    return {
        "base_url": c.base_url, "token_url": c.token_url, "client_id": CLIENT_ID,
        "client_secret_file": "gbc-secret", "ca_file": str(c.ca),
        "subscriptions": ["5", "3", "gas", "multi", "pv"], "max_results": 5, "backoff_s": 0.001,
        **extra,
    }  # fmt: skip


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def client(c, tmp_path: Path, now: int = T_2013, **extra):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True, mode=0o700)
    sleeps: list[float] = []
    cfg = ConnectConfig.from_table(table(c, home, **extra), home)
    gbc = GreenButtonConnect(cfg, clock=Clock(now), sleep=sleeps.append)
    gbc.sleeps = sleeps
    return gbc


def rows(readings) -> list[tuple]:
    return [tuple(r) for r in readings]


def test_full_pull_is_exactly_the_file_then_nothing_new(custodian_reset, tmp_path) -> None:
    c = custodian_reset
    gbc = client(c, tmp_path)
    pull = gbc.pull("5")
    want = GreenButtonSource().read(COASTAL)
    assert len(pull.readings) == len(want) == 8760
    assert rows(pull.readings) == rows(want)
    assert pull.readings.meters == (f"{GBD}/RetailCustomer/5/UsagePoint/1",)
    assert pull.interval_blocks == 12
    # 12 blocks at max-results=5: three pages, followed through rel="next"
    ib = [q for p, q in c.requests if p.endswith("/IntervalBlock")]
    assert len(ib) == 3 and "start-index=6" in ib[1] and "start-index=11" in ib[2]
    assert pull.usage_points[0].tz_offset_s == -28800  # LocalTimeParameters: Pacific
    assert c.token_grants == ["client_credentials"]
    gbc.commit(pull)
    again = gbc.pull("5")
    assert (len(again.readings), again.interval_blocks) == (0, 0)
    assert again.published_min == T_2013
    assert oct(os.stat(gbc.config.state_dir / "cursors.json").st_mode & 0o777) == "0o600"
    assert oct(os.stat(gbc.config.state_dir / "token.json").st_mode & 0o777) == "0o600"
    gbc.close()


def test_a_later_window_brings_only_the_new_intervals(custodian_reset, tmp_path) -> None:
    gbc = client(custodian_reset, tmp_path, now=T_MID_2011)
    first = gbc.pull("5")
    gbc.commit(first)
    assert first.interval_blocks == 6  # published 2011-02-01 .. 2011-07-01
    gbc.clock.now = T_2013
    second = gbc.pull("5")
    assert second.published_min == T_MID_2011
    assert second.interval_blocks == 6
    assert int(second.readings.interval_start.min()) >= int(first.readings.interval_end.max())
    want = GreenButtonSource().read(COASTAL)
    assert sorted(rows(first.readings) + rows(second.readings)) == rows(want)
    gbc.close()


def test_server_errors_are_retried_with_backoff(custodian_reset, tmp_path) -> None:
    c = custodian_reset
    c.fail_next.extend([500, 503])
    gbc = client(c, tmp_path)
    pull = gbc.pull("3")
    assert len(pull.readings) == 8
    assert len(gbc.sleeps) == 2 and gbc.sleeps[1] > gbc.sleeps[0] * 0.9
    c.fail_next.extend([500] * 10)
    with pytest.raises(Exception, match="failed 5 times") as e:
        gbc.pull("3")
    assert e.value.transient
    c.fail_next.clear()
    gbc.close()


def test_expired_token_is_replaced(custodian_reset, tmp_path) -> None:
    c = custodian_reset
    gbc = client(c, tmp_path)
    gbc.pull("3")
    c.expire_all()  # the client's token still looks valid to it
    assert len(gbc.pull("3").readings) == 8
    assert c.refused_tokens == 1
    assert c.token_grants == ["client_credentials", "client_credentials"]
    gbc.close()


def test_refresh_token_grant_refreshes_on_expiry(custodian_reset, tmp_path) -> None:
    c = custodian_reset
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    refresh = home / "gbc-refresh"
    fd = os.open(refresh, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, c.grant_refresh_token().encode())
    os.close(fd)
    gbc = client(c, tmp_path, grant="refresh_token", refresh_token_file="gbc-refresh")
    assert len(gbc.pull("3").readings) == 8
    assert c.token_grants == ["refresh_token"]
    gbc.close()
    # a stored token past its expiry: refreshed (with the rotated refresh token) before use
    token_file = gbc.config.state_dir / "token.json"
    token = json.loads(token_file.read_text())
    token["expires_at"] = 1
    token_file.write_text(json.dumps(token))
    gbc2 = client(c, tmp_path, grant="refresh_token", refresh_token_file="gbc-refresh")
    assert len(gbc2.pull("3").readings) == 8
    assert c.token_grants == ["refresh_token", "refresh_token"]
    assert c.refused_tokens == 0
    assert json.loads(token_file.read_text())["refresh_token"] != token["refresh_token"]
    gbc2.close()


def test_gas_subscription_is_refused_clearly(custodian_reset, tmp_path) -> None:
    gbc = client(custodian_reset, tmp_path)
    with pytest.raises(InvalidArgument) as e:
        gbc.pull("gas")
    assert "no electricity usage point" in e.value.message
    [v] = e.value.violations
    assert "gas (ServiceCategory kind 1), not electricity" in v.description
    assert "/v1/BillingAccount/1234567890/UsagePoint/NET_USAGE" in v.description
    # its readings were never asked for
    assert not any("MeterReading" in p for p, _ in custodian_reset.requests)
    gbc.close()


def test_several_usage_points(custodian_reset, tmp_path) -> None:
    gbc = client(custodian_reset, tmp_path, now=1_420_070_400)
    pull = gbc.pull("multi")
    nine = f"{GBD}/RetailCustomer/2/UsagePoint/2"
    abridged = f"{GBD}/RetailCustomer/3/UsagePoint/1"
    assert set(pull.readings.meters) == {nine, abridged}
    per = pull.readings.per_meter()
    assert per[nine] == (216, 199_563)
    assert per[abridged] == (8, 4086)
    gbc.close()


def test_config_is_checked(custodian, tmp_path) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    t = table(custodian, home)
    with pytest.raises(ConfigError, match="https"):
        ConnectConfig.from_table({**t, "base_url": "http://x/"}, home)
    with pytest.raises(ConfigError, match="subscriptions"):
        ConnectConfig.from_table({**t, "subscriptions": []}, home)
    os.chmod(home / "gbc-secret", 0o644)
    gbc = GreenButtonConnect(ConnectConfig.from_table(t, home))
    with pytest.raises(ConfigError):
        gbc.pull("3")  # a secret others may read is refused


def test_meter_pull_imports_into_the_node(custodian_reset, node, tmp_path) -> None:
    from click.testing import CliRunner

    from eap.node import cli

    c = custodian_reset
    owner = node.create_account(request_id="acct", label="pv").account.id
    node.register_device(
        request_id="dev", local_ref="pv-1", capacity_w=20_000, source="solar",
        technology="photovoltaic", commissioned_on="2010-05-01", latitude=37.0,
        longitude=-122.0, zone="CO-ANT", owner=owner,
        meter_id=f"{GBD}/RetailCustomer/5/UsagePoint/1", attestation_evidence="agreement 117",
    )  # fmt: skip
    home = node.config.home
    node.config.extra["meters"] = {"greenbutton_connect": table(c, home)}
    node.config.save()
    gbc = GreenButtonConnect(ConnectConfig.from_node(node.config), clock=Clock(T_2013))
    [(pull, result)] = pull_into_node(node, gbc, ["pv"], request_id="pull-1")
    want = GreenButtonSource().read(c.production)
    assert (result.readings, result.wh) == (8760, want.total_wh())
    assert pull.readings.kind == "production"
    assert gbc.cursors() == {"pv": T_2013}
    gbc.close()
    # the CLI: nothing published since the cursor (real clock: the window is 2013 .. now)
    run = CliRunner().invoke(
        cli.main, ["meter", "pull", "--subscription", "pv", "--home", str(home), "--json"]
    )
    cli._NODES.clear()
    assert run.exit_code == 0, run.output
    [out] = json.loads(run.output)
    assert out["interval_blocks"] == 0
    assert out["import"]["readings"] == 0
