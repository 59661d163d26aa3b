"""``eap-node trade --to NODE/ACCOUNT``, ``peer limits`` and ``peer balances`` as an operator runs
them: two ``eap-node serve`` processes over mutual TLS, the CLI in separate processes."""

from __future__ import annotations

import pytest
from fednet import FedNet, write_settings

from eap.node.store import obligation_repos as ob

A, B = "a.example", "b.example"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    net = FedNet(tmp_path_factory.mktemp("trades"), [(A, "ES"), (B, "NL")])
    for proc in net:  # no round settles behind the test's back (the threshold asks for one)
        write_settings(proc.home, "settlement", round_interval_s=3600.0)
    net.connect_all()
    net[A].issue_hours(3)
    net[A].close()
    net.start_all()
    yield net
    net.stop_all()


def _obligations(proc):
    with proc.node.store.read() as conn:
        return [(r.obligation_id, r.payer, r.payee, r.amount_minor, r.currency, r.period)
                for r in ob.all_obligations(conn, None, None)]


def test_cross_node_trade_through_the_cli(net):
    a, b = net[A], net[B]
    buyer = b.js("account", "create", "--label", "buyer")["account"]["id"]
    bundles = [x["id"] for x in a.js("bundles")]
    to = f"{B}/{buyer}"
    assert a.js("peer", "balances") == []

    # no limit towards b yet: refused, exit 5, saying so
    p = a.cli("trade", bundles[0], "--to", to, "--wh", "10", "--price-minor", "100",
              "--currency", "EUR", ok=False)
    assert p.returncode == 5 and "no credit limit" in p.stderr
    lim = a.js("peer", "limits", B, "--credit-limit", "1000", "--settle-threshold", "900",
               "--currency", "EUR")
    assert (lim["credit_limit_minor"], lim["settle_threshold_minor"]) == (1000, 900)
    p = a.cli("peer", "limits", "nobody.example", "--credit-limit", "1", "--currency", "EUR",
              ok=False)
    assert p.returncode == 3

    # bad money: exit 2 (INVALID_ARGUMENT), nothing moves
    for price, cur in (("100", "EURO"), ("100", "ABC"), ("-5", "EUR"), (str(2**62 + 1), "EUR"),
                       (str(2**70), "EUR")):
        p = a.cli("trade", bundles[0], "--to", to, "--wh", "10", f"--price-minor={price}",
                  "--currency", cur, ok=False)
        assert p.returncode == 2, (price, cur, p.stderr)
        assert ("currency" if cur != "EUR" else "price_minor") in p.stderr
    assert a.js("transfers") == []

    out = a.js("trade", bundles[0], "--to", to, "--wh", "10", "--price-minor", "950",
               "--currency", "EUR")
    tid = out["transfer"]["id"]
    assert out["transfer"]["state"] == "committed"
    assert (out["transfer"]["price_minor"], out["transfer"]["currency"]) == (950, "EUR")
    b.close()
    a.close()
    mine, theirs = _obligations(a), _obligations(b)
    assert mine == theirs and len(mine) == 1
    assert mine[0][:5] == (tid, f"{B}/{buyer}", mine[0][2], 950, "EUR")
    assert mine[0][2].startswith(f"{A}/acct_")

    (bal,) = a.js("peer", "balances")
    assert (bal["peer"], bal["receivable_minor"], bal["balance_minor"]) == (B, 950, 950)
    (bal,) = b.js("peer", "balances")
    assert (bal["peer"], bal["payable_minor"], bal["balance_minor"]) == (A, 950, -950)
    assert "peer balances" in a.cli("peer", "balances").stdout
    with a.node.store.read() as conn:  # 950 >= 900: a settlement round was requested
        (req,) = ob.all_requests(conn)
    assert req.peer == B and req.period == mine[0][5]

    # over the limit: exit 5, naming limit and balance; nothing changes
    p = a.cli("trade", bundles[1], "--to", to, "--wh", "10", "--price-minor", "51",
              "--currency", "EUR", ok=False)
    assert p.returncode == 5 and "limit 1,000" in p.stderr and "balance 950" in p.stderr
    assert len(a.js("transfers")) == 1
    a.close()
