"""Bulk onboarding: ``eap-node device import`` and ``RegisterDevices``, all or nothing, every
check of ``device register``; CLI output prints user data literally."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from support import write_csv

from eap.node.api.server import build_server
from eap.node.api.status import field_violations
from eap.node.errors import AlreadyExists, InvalidArgument, NotFound
from eap.node.records.enums import Purpose
from eap.v1 import node_api_pb2 as api
from eap.v1 import node_api_pb2_grpc
from eap.v1 import types_pb2 as pb

HEADER = "ref,capacity_w,source,technology,commissioned,lat,lon,zone,owner,meter_id,attestation"


def _row(i: int, owner: str, **over) -> dict:
    row = dict(
        ref=f"roof-{i}",
        capacity_w=5000,
        source="solar",
        technology="photovoltaic",
        commissioned="2020-05-01",
        lat=6.2,
        lon=-75.5,
        zone="CO-ANT",
        owner=owner,
        meter_id=f"m-{i}",
        attestation=f"agreement {i}",
    )
    row.update(over)
    return row


def _csv(path: Path, rows: list[dict]) -> Path:
    lines = [HEADER] + [",".join(str(r[k]) for k in HEADER.split(",")) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _devices(node) -> list:
    return list(node.stream_devices(purpose=Purpose.OPERATIONS))


def test_import_registers_every_row_like_device_register(node, tmp_path):
    owner = node.create_account(request_id="o").account.id
    res = node.import_devices(
        _csv(tmp_path / "d.csv", [_row(i, owner) for i in range(50)]), request_id="imp"
    )
    assert res.devices == 50
    devs = {d.local_ref: d for d in _devices(node)}
    assert len(devs) == 50 and devs["roof-7"].meter_id == "m-7"
    # the same pseudonym and derived fields as a single registration would give
    single = node.register_device(
        request_id="one",
        local_ref="roof-single",
        capacity_w=5000,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-05-01",
        latitude=6.2,
        longitude=-75.5,
        zone="CO-ANT",
        owner=owner,
        meter_id="m-single",
        attestation_evidence="agreement x",
    )
    for field in ("cell", "renewable_ppm", "attested_by", "zone", "source", "technology"):
        assert getattr(devs["roof-3"], field) == getattr(single, field), field
    assert node.status().devices == 51
    # idempotent replay; the same key with another file is refused
    again = node.import_devices(tmp_path / "d.csv", request_id="imp")
    assert again == res
    with pytest.raises(InvalidArgument):
        node.import_devices(_csv(tmp_path / "e.csv", [_row(99, owner)]), request_id="imp")


def test_json_lines_have_the_same_keys(node, tmp_path):
    owner = node.create_account(request_id="o").account.id
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(_row(i, owner)) for i in range(5)) + "\n")
    assert node.import_devices(path, request_id="j").devices == 5


@pytest.mark.parametrize(
    ("over", "field", "error"),
    [
        (dict(capacity_w="abc"), "capacity_w", InvalidArgument),
        (dict(capacity_w=0), "capacity_w", InvalidArgument),
        (dict(source="coal?"), "source", InvalidArgument),
        (dict(lat=95), "lat", InvalidArgument),
        (dict(commissioned="2999-01-01"), "commissioned", InvalidArgument),
        (dict(ref="bad ref!"), "ref", InvalidArgument),
        (dict(attestation="x"), "attestation", InvalidArgument),  # operator-signed needs 3+
        (dict(owner="acct_" + "a" * 26), "owner", NotFound),
        (dict(meter_id="m-0"), "meter_id", InvalidArgument),  # repeats row 0 of the file
    ],
)
def test_one_bad_row_refuses_the_file_and_stores_nothing(node, tmp_path, over, field, error):
    owner = node.create_account(request_id="o").account.id
    rows = [_row(i, owner) for i in range(20)]
    rows[13] = {**_row(13, owner), **over}
    with pytest.raises((InvalidArgument, NotFound)) as err:
        node.import_devices(_csv(tmp_path / "d.csv", rows), request_id="bad")
    assert isinstance(err.value, error | InvalidArgument)
    assert any(v.field.startswith(f"devices[13].{field}") for v in err.value.violations), (
        err.value.violations
    )
    # One problem, one line: a plugin's refusal is reported by its fields, not twice.
    assert len(err.value.violations) == 1, err.value.violations
    assert _devices(node) == [] and node.status().devices == 0


def test_rows_already_registered_are_refused(node, tmp_path):
    owner = node.create_account(request_id="o").account.id
    node.import_devices(_csv(tmp_path / "a.csv", [_row(1, owner)]), request_id="a")
    with pytest.raises((AlreadyExists, InvalidArgument)) as err:
        node.import_devices(
            _csv(tmp_path / "b.csv", [_row(2, owner), _row(1, owner)]), request_id="b"
        )
    fields = {v.field for v in err.value.violations}
    assert {"devices[1].ref", "devices[1].meter_id"} <= fields
    assert len(_devices(node)) == 1


def _cli(home, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "eap.node", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def cli_home(tmp_path):
    from support import make_node

    node = make_node(tmp_path / "home")
    owner = node.create_account(request_id="o").account.id
    home = node.config.home
    node.close()
    return home, owner


def test_cli_report_names_rows_literally_and_exits_non_zero(cli_home, tmp_path):
    home, owner = cli_home
    rows = [
        _row(0, owner),
        _row(1, owner, ref="[/x]", meter_id="[bold]m"),
        _row(2, owner, capacity_w="[red]1[/red]"),
    ]
    path = _csv(tmp_path / "d.csv", rows)
    out = _cli(home, "device", "import", str(path))
    assert out.returncode != 0
    assert "row 2: ref:" in out.stderr and "row 3: capacity_w: must be an integer" in out.stderr
    js = _cli(home, "device", "import", str(path), "--json")
    report = json.loads(js.stdout)
    assert js.returncode != 0 and report["ok"] is False
    assert {"row": 2, "field": "ref", "reason": report["rejected"][0]["reason"]} in (
        report["rejected"]
    )
    assert _cli(home, "devices", "--json").stdout == ""  # nothing stored
    ok = _cli(home, "device", "import", str(_csv(tmp_path / "ok.csv", [_row(5, owner)])))
    assert ok.returncode == 0 and "registered 1 devices" in ok.stdout


def test_cli_prints_bracketed_data_literally(cli_home, tmp_path):
    home, owner = cli_home
    label = _cli(home, "account", "create", "--label", "[bold]co-op[/x]")
    assert label.returncode == 0
    listing = _cli(home, "accounts")
    assert "[bold]co-op[/x]" in listing.stdout
    dev = _cli(
        home,
        "device",
        "register",
        "--ref",
        "roof-1",
        "--capacity-w",
        "250",
        "--source",
        "solar",
        "--technology",
        "photovoltaic",
        "--commissioned",
        "2020-05-01",
        "--lat",
        "6.2",
        "--lon",
        "-75.5",
        "--zone",
        "CO-ANT",
        "--owner",
        owner,
        "--meter-id",
        "[/x]",
        "--attestation",
        "[bold]doc[/bold]",
    )
    assert dev.returncode == 0, dev.stderr
    rows = [("2024-01-01 00:00:00", "2024-01-01 01:00:00", "[/x]", 100)]
    assert _cli(home, "meter", "import", str(write_csv(tmp_path / "a.csv", rows))).returncode == 0
    rows = [("2024-01-01 00:00:00", "2024-01-01 01:00:00", "[/x]", 120)]
    again = _cli(home, "meter", "import", str(write_csv(tmp_path / "b.csv", rows)))
    assert again.returncode != 0
    # the meter and the time are shown as given, not eaten as markup
    assert "readings[[/x]@1704067200]" in again.stderr and "stored reading has 100 Wh" in (
        again.stderr
    )


def test_meter_import_with_no_registered_meter_fails_naming_them(cli_home, tmp_path):
    home, _owner = cli_home
    rows = [
        ("2024-01-01 00:00:00", "2024-01-01 01:00:00", "meter-A", 100),
        ("2024-01-01 00:00:00", "2024-01-01 01:00:00", "meter-[B]", 100),
    ]
    out = _cli(home, "meter", "import", str(write_csv(tmp_path / "a.csv", rows)))
    assert out.returncode != 0
    assert "meter-A" in out.stderr and "meter-[B]" in out.stderr
    assert json.loads(_cli(home, "status", "--json").stdout)["readings"] == 0


def test_register_devices_rpc_is_all_or_nothing_with_field_details(node):
    owner = node.create_account(request_id="o").account.id
    server, port = build_server(node, "127.0.0.1:0")
    server.start()

    def reg(i, **over):
        d = dict(
            local_ref=f"r-{i}",
            capacity_w=250,
            source=pb.ENERGY_SOURCE_SOLAR,
            technology=pb.TECHNOLOGY_PHOTOVOLTAIC,
            commissioned_on="2020-05-01",
            latitude=6.2,
            longitude=-75.5,
            zone="CO-ANT",
            owner=owner,
            meter_id=f"m-{i}",
        )
        d.update(over)
        return api.DeviceRegistration(
            device=pb.Device(**d),
            attestation=pb.Attestation(scheme="operator-signed", evidence="doc-1"),
        )

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = node_api_pb2_grpc.NodeApiStub(ch)
            md = (("authorization", f"Bearer {node.config.api_token()}"),)
            bad = [reg(i) for i in range(10)] + [reg(10, capacity_w=-1, zone="??")]
            with pytest.raises(grpc.RpcError) as err:
                stub.RegisterDevices(
                    api.RegisterDevicesRequest(request_id="b", devices=bad), metadata=md
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            fields = {f for f, _ in field_violations(err.value)}
            assert {"devices[10].device.capacity_w", "devices[10].device.zone"} <= fields
            assert _devices(node) == []
            ok = stub.RegisterDevices(
                api.RegisterDevicesRequest(request_id="g", devices=[reg(i) for i in range(10)]),
                metadata=md,
            )
            assert ok.devices == 10 and len(_devices(node)) == 10
            with pytest.raises(grpc.RpcError) as err:
                stub.RegisterDevices(
                    api.RegisterDevicesRequest(request_id="g2", devices=[reg(1)]), metadata=md
                )
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS or (
                err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            )
    finally:
        server.stop(0).wait()
