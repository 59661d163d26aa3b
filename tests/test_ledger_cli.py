"""``eap-node ledger``: balances, entries, credit lines and the invariant check."""

from __future__ import annotations

import json

from test_cli import js, run

from eap.node.domain import settlement_backends
from eap.node.domain.node import Node

PEER_ACCT = "barcelona.example/acct_" + "f" * 26


def test_credit_line_then_balances_entries_and_check(tmp_path):
    home = tmp_path / "node"
    run(home, "init", "--node-id", "medellin.example", "--zone", "CO-ANT")
    acct = js(home, "account", "create")["account"]["id"]
    refused = run(home, "ledger", "credit-line", acct, "--currency", "EUR", "--minor=-1", ok=False)
    assert refused.returncode == 2 and "minor" in refused.stderr
    line = js(
        home,
        "ledger",
        "credit-line",
        f"medellin.example/{acct}",
        "--currency",
        "EUR",
        "--minor",
        "500",
    )
    assert line == {
        "account": acct,
        "currency": "EUR",
        "kind": "member",
        "balance_minor": 0,
        "credit_line_minor": 500,
    }
    node = Node.open(home)
    try:
        receipt = settlement_backends.execute(
            node,
            {
                "instruction_id": "medellin.example/2026-01-01/r/0",
                "round_id": "medellin.example/2026-01-01/r",
                "side": "debit",
                "payer": f"medellin.example/{acct}",
                "payee": PEER_ACCT,
                "amount_minor": 320,
                "currency": "EUR",
            },
        )
    finally:
        node.close()
    balances = {b["account"]: b["balance_minor"] for b in js(home, "ledger", "balances")}
    assert balances == {acct: -320, "clearing:barcelona.example": 320}
    [entry] = js(home, "ledger", "entries", "--round", "medellin.example/2026-01-01/r")
    assert entry["entry_id"] == receipt["reference"]
    assert js(home, "ledger", "entries", "--round", "other") == []
    assert "clearing:barcelona.example" in run(home, "ledger", "balances").stdout
    assert json.loads(run(home, "ledger", "check", "--json").stdout) == {"ok": True, "problems": []}
