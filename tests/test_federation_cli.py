"""``eap-node certs | descriptor | peer`` as an operator runs them, from scratch to a trust list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "eap.node"]


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture
def homes(tmp_path: Path):
    ca = tmp_path / "ca"
    run("certs", "init-ca", "--dir", str(ca))
    out = {}
    for name, zone in (("medellin", "CO-ANT"), ("barcelona", "ES")):
        home = tmp_path / name
        run("init", "--node-id", f"{name}.example", "--zone", zone, "--home", str(home),
            "--federation-listen", "127.0.0.1:17444")
        run("certs", "issue", "--ca", str(ca), "--home", str(home))
        out[name] = home
    return ca, out


def test_certs_descriptor_and_trust_list(homes, tmp_path: Path):
    ca, h = homes
    tls = h["medellin"] / "tls"
    assert (tls / "node.key").stat().st_mode & 0o777 == 0o600
    assert {p.name for p in tls.iterdir()} >= {"node.crt", "node.key", "ca.crt"}
    assert (ca / "ca.key").stat().st_mode & 0o777 == 0o600
    again = run("certs", "issue", "--ca", str(ca), "--home", str(h["medellin"]), ok=False)
    assert again.returncode == 4  # AlreadyExists: never overwritten without --overwrite

    desc_file = tmp_path / "barcelona.json"
    made = run("descriptor", "--out", str(desc_file), "--home", str(h["barcelona"]))
    fingerprint = made.stderr.split("fingerprint ")[1].split()[0]
    desc = json.loads(desc_file.read_text())
    assert desc["node_id"] == "barcelona.example" and desc["endpoint"] == "127.0.0.1:17444"
    assert desc["protocol_versions"] == ["eap.v1"] and "batches.v1" in desc["capabilities"]
    assert desc["tls_ca_fingerprint"].startswith("SHA256:")
    assert desc["signature"]["key_id"] == desc["public_keys"][0]["key_id"]

    med = ["--home", str(h["medellin"])]
    wrong = run("peer", "add", str(desc_file), "--fingerprint", "SHA256:" + "A" * 43, *med,
                ok=False)
    assert wrong.returncode == 9 and "fingerprint" in wrong.stderr
    assert json.loads(run("peer", "list", "--json", *med).stdout) == []

    tampered = tmp_path / "tampered.json"
    tampered.write_text(desc_file.read_text().replace("127.0.0.1:17444", "10.6.6.6:17444"))
    bad = run("peer", "add", str(tampered), *med, ok=False)
    assert bad.returncode == 9 and "invalid signature" in bad.stderr

    added = json.loads(run("peer", "add", str(desc_file), "--fingerprint", fingerprint,
                           "--json", *med).stdout)
    assert added["status"] == "trusted" and added["fingerprint"] == fingerprint
    dup = run("peer", "add", str(desc_file), *med, ok=False)
    assert dup.returncode == 4
    run("peer", "add", str(desc_file), "--update", "--endpoint", "127.0.0.1:17445", *med)
    peers = json.loads(run("peer", "list", "--json", *med).stdout)
    assert [(p["node_id"], p["endpoint"], p["cursor"]) for p in peers] == [
        ("barcelona.example", "127.0.0.1:17445", 0)]
    table = run("peer", "list", *med).stdout
    assert "barcelona.example" in table and "trusted" in table

    run("peer", "remove", "barcelona.example", *med)
    assert run("peer", "remove", "barcelona.example", *med, ok=False).returncode == 3
    pinned = json.loads(run("peer", "add", "--node-id", "barcelona.example", "--endpoint",
                            "127.0.0.1:17444", "--fingerprint", fingerprint, "--json",
                            *med).stdout)
    assert pinned["status"] == "pending" and pinned["key_ids"] == []
    missing = run("peer", "add", "--node-id", "x.example", *med, ok=False)
    assert missing.returncode == 2 and "--endpoint" in missing.stderr


def test_peer_from_another_ca_is_flagged(homes, tmp_path: Path):
    _, h = homes
    run("certs", "init-ca", "--dir", str(tmp_path / "other-ca"))
    run("init", "--node-id", "amsterdam.example", "--zone", "NL", "--home",
        str(tmp_path / "ams"))
    run("certs", "issue", "--ca", str(tmp_path / "other-ca"), "--home", str(tmp_path / "ams"))
    out = tmp_path / "ams.json"
    run("descriptor", "--out", str(out), "--home", str(tmp_path / "ams"))
    added = run("peer", "add", str(out), "--home", str(h["medellin"]))
    assert "does not hold" in added.stderr  # warned: TLS to it would fail until its CA is added
