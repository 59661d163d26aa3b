"""``eap-node audit`` against two running ``eap-node serve`` processes (mutual TLS): the
statements travel over the federation protocol; an unreachable peer fails the audit (exit 5)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from eap.node.federation.localnet import LocalFederation

CLI = [sys.executable, "-m", "eap.node"]
A, B = "a.example", "b.example"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-cli")
    with LocalFederation.create(root, [(A, "ES"), (B, "NL")]) as federation:
        federation.start()
        yield federation


def _audit(net, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "audit", "--home", str(net[A].home), *args],
                          capture_output=True, text=True, timeout=120)


def test_audit_over_the_federation(net):
    proc = _audit(net, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["ok"] and report["auditor"] == A
    assert [(s["node_id"], s["verified"]) for s in report["statements"]] == [(A, True),
                                                                            (B, True)]
    assert [i["issuer"] for i in report["issuers"]] == [A, B]
    text = _audit(net)
    assert text.returncode == 0 and "the books close" in text.stdout


def test_an_unreachable_peer_fails_the_audit(net):
    net[B].stop()
    proc = _audit(net, "--json")
    assert proc.returncode == 5, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert not report["ok"]
    assert any(B in p and "unreachable" in p for p in report["problems"])
    proc = _audit(net, "--json", "--skip", B)
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"]
