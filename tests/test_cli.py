"""The ``eap-node`` CLI as a user runs it: real processes, real files, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "eap.node"]


def run(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*CLI, *args, "--home", str(home)], capture_output=True, text=True, timeout=120
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


#: Listings whose --json is JSON Lines (one object per line, streamed).
JSON_LINES = {"accounts", "devices", "bundles", "claims", "transfers"}


def js(home: Path, *args: str):
    out = run(home, *args, "--json").stdout
    if args[0] in JSON_LINES:
        return [json.loads(line) for line in out.splitlines()]
    return json.loads(out)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "node"
    run(h, "init", "--node-id", "medellin.example", "--zone", "CO-ANT", "--operator-signed")
    return h


def test_walkthrough(home: Path, meter_csv: Path):
    assert (home / "keys").stat().st_mode & 0o077 == 0
    keys = [p for p in (home / "keys").iterdir() if p.suffix == ".pem"]
    assert keys and all(p.stat().st_mode & 0o777 == 0o600 for p in keys)
    owner = js(home, "account", "create", "--label", "co-op")["account"]["id"]
    buyer = js(home, "account", "create")["account"]["id"]
    run(
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
        "1",
        "--attestation",
        "doc-1",
    )
    imp = js(home, "meter", "import", str(meter_csv))
    assert imp["readings"] == 744
    iss = js(home, "issue")
    assert iss["wh"] == imp["wh"]
    bundles = js(home, "bundles", "--owner", owner)
    big = max(bundles, key=lambda b: b["serial_end"] - b["serial_start"])
    moved = js(home, "transfer", big["id"], "--to", buyer, "--wh", "20")
    assert moved["transferred"]["owner"] == buyer and moved["remainder"]["owner"] == owner
    claim = js(
        home,
        "retire",
        moved["transferred"]["id"],
        "--beneficiary",
        "Metro",
        "--purpose",
        "scope2-market-based",
    )
    assert claim["bundle"]["status"] == "RETIRED"  # enum values named as the proto does
    st = js(home, "status")
    assert st["wh_retired"] == 20 and st["wh_active"] + 20 == st["wh_issued"] == imp["wh"]
    assert len(js(home, "claims")) == 1
    rest = moved["remainder"]["id"]
    js(home, "trade", rest, "--to", buyer, "--wh", "5", "--price-minor", "250", "--currency", "EUR")
    netted = js(home, "net")
    assert netted["instructions"] == [
        {"payer": buyer, "payee": owner, "currency": "EUR", "amount_minor": 250}
    ]
    assert {a["id"] for a in js(home, "accounts")} == {owner, buyer}
    table = run(home, "bundles", "--limit", "3").stdout
    assert "medellin.example/" in table


def test_errors_are_one_line_with_exit_codes(home: Path, tmp_path: Path):
    bad = run(home, "transfer", "medellin.example/0-5", "--to", "acct_" + "a" * 26, ok=False)
    assert bad.returncode == 3 and bad.stderr.startswith("error:")
    bad = run(
        home,
        "device",
        "register",
        "--ref",
        "r",
        "--capacity-w",
        "-1",
        "--source",
        "sun",
        "--technology",
        "photovoltaic",
        "--commissioned",
        "2020-01-01",
        "--lat",
        "0",
        "--lon",
        "0",
        "--zone",
        "CO-ANT",
        "--owner",
        "nobody",
        "--meter-id",
        "1",
        "--attestation",
        "x",
        ok=False,
    )
    assert bad.returncode == 2 and "capacity_w" in bad.stderr and "source" in bad.stderr
    bad = run(home, "meter", "import", str(tmp_path / "missing.csv"), ok=False)
    assert bad.returncode == 2
    again = run(home, "init", "--node-id", "medellin.example", "--zone", "CO-ANT", ok=False)
    assert again.returncode == 4
    nohome = run(tmp_path / "nowhere", "status", ok=False)
    assert nohome.returncode == 12 and "eap-node init" in nohome.stderr


def test_every_command_has_help():
    from eap.node.cli import main

    def walk(group, path):
        for name, cmd in group.commands.items():
            yield [*path, name]
            if hasattr(cmd, "commands"):
                yield from walk(cmd, [*path, name])

    for path in [[], *walk(main, [])]:
        proc = subprocess.run([*CLI, *path, "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "Usage:" in proc.stdout, path


def test_key_rotation_keeps_old_receipts_verifiable(home: Path):
    before = js(home, "keys", "list")
    rotated = js(home, "keys", "rotate")
    after = js(home, "keys", "list")
    assert rotated["retired"] == before[0]["key_id"]
    assert {k["key_id"] for k in after} == {rotated["retired"], rotated["active"]}
    assert [k["key_id"] for k in after if k["active"]] == [rotated["active"]]
    from eap.node.crypto import KeyRing

    ring = KeyRing.load(home / "keys")
    assert rotated["retired"] in ring.public_keys()


def test_meter_value_past_int64_arithmetic_is_refused_in_one_line(home: Path, tmp_path: Path):
    owner = js(home, "account", "create")["account"]["id"]
    register = ["device", "register", "--ref", "roof-1", "--capacity-w", "250", "--source",
                "solar", "--technology", "photovoltaic", "--commissioned", "2020-05-01", "--lat",
                "6.2", "--lon", "-75.5", "--zone", "CO-ANT", "--owner", owner, "--meter-id", "1",
                "--attestation", "doc-1"]
    run(home, *register)
    csv = tmp_path / "huge.csv"
    csv.write_text(
        "interval_start_datetime,interval_end_datetime,device_id,interval_usage,"
        "gross_net_indicator\n"
        "2024-01-01 00:00:00,2024-01-01 01:00:00,1,9223372036854775807,NET\n"
    )
    bad = run(home, "meter", "import", str(csv), ok=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error:"), bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and ".wh" in bad.stderr
    st = js(home, "status")
    assert st["readings"] == 0 and st["wh_metered"] == 0


@pytest.mark.parametrize("secret", ["api-token", "node-secret"])
def test_group_or_world_readable_home_secrets_are_refused(home: Path, secret: str):
    owner = js(home, "account", "create")["account"]["id"]
    path = home / secret
    path.chmod(0o644)
    for args in (["serve", "--listen", "127.0.0.1:0"],
                 ["device", "register", "--ref", "r", "--capacity-w", "250", "--source", "solar",
                  "--technology", "photovoltaic", "--commissioned", "2020-05-01", "--lat", "6.2",
                  "--lon", "-75.5", "--zone", "CO-ANT", "--owner", owner,
                  "--meter-id", "1", "--attestation", "doc-1"]):
        if secret == "api-token" and args[0] == "device":
            continue  # the operator's token is read by the API server only
        bad = run(home, *args, ok=False)
        assert bad.returncode == 12, bad.stderr
        assert str(path) in bad.stderr and f"chmod 600 {path}" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    path.chmod(0o400)  # owner-only is fine, read-only too
    assert js(home, "status")["node_id"] == "medellin.example"
