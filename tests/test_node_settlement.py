"""Priced trades become obligations; netting is exact, settles everything, detects overflow."""

from __future__ import annotations

import pytest

from eap.node.domain.settlement import net
from eap.node.errors import InvalidArgument, OutOfRange
from eap.node.records.enums import Purpose, Status


@pytest.fixture
def market(node, solar, meter_csv):
    owner, _ = solar
    node.import_readings(meter_csv, request_id="i")
    node.issue(request_id="s")
    a, b = (node.create_account(request_id=f"acct-{x}").account.id for x in "ab")
    bundles = node.list_bundles(
        purpose=Purpose.OPERATIONS, owner=owner, status=int(Status.ACTIVE), page_size=50
    ).items
    return node, owner, a, b, sorted(bundles, key=lambda x: -x.wh)


def test_trades_net_to_settlement_instructions(market):
    node, seller, a, b, bundles = market
    node.transfer(
        bundles[0].id, to_account=a, wh=10, price_minor=1_000, currency="EUR", request_id="t1"
    )
    node.transfer(bundles[1].id, to_account=b, price_minor=2_500, currency="EUR", request_id="t2")
    bought = node.list_bundles(purpose=Purpose.OPERATIONS, owner=a).items[0]
    node.transfer(bought.id, to_account=b, wh=5, price_minor=700, currency="EUR", request_id="t3")
    node.transfer(
        bundles[2].id, to_account=a, wh=1, price_minor=90_000, currency="COP", request_id="t4"
    )
    res = net(node.store)
    assert res.obligations == 4
    pos = {(p.party, p.currency): p.net_minor for p in res.positions}
    assert pos[(seller, "EUR")] == 3_500 and pos[(a, "EUR")] == -300
    assert pos[(b, "EUR")] == -3_200 and pos[(a, "COP")] == -90_000
    for cur in ("EUR", "COP"):
        assert sum(v for (_, c), v in pos.items() if c == cur) == 0
    # Applying the instructions brings every position to zero, with <= parties - 1 payments.
    after = dict(pos)
    for p in res.instructions:
        after[(p.payer, p.currency)] += p.amount_minor
        after[(p.payee, p.currency)] -= p.amount_minor
    assert all(v == 0 for v in after.values())
    assert sum(p.currency == "EUR" for p in res.instructions) <= 2
    assert res.gross_minor == {"EUR": 4_200, "COP": 90_000}
    assert res.efficiency["EUR"] == pytest.approx(1 - 3_500 / 4_200, abs=1e-6)


def test_replayed_trade_records_one_obligation(market):
    node, _, a, _, bundles = market
    for _ in range(2):
        node.transfer(
            bundles[0].id, to_account=a, wh=3, price_minor=10, currency="EUR", request_id="same"
        )
    assert net(node.store).obligations == 1


def test_bad_prices_change_nothing(market):
    node, seller, a, _, bundles = market
    with pytest.raises(InvalidArgument):
        node.transfer(bundles[0].id, to_account=a, price_minor=5, currency="euro", request_id="x")
    with pytest.raises(InvalidArgument):
        node.transfer(bundles[0].id, to_account=a, price_minor=0, currency="EUR", request_id="y")
    assert node.get_bundle(bundles[0].id).owner == seller
    assert net(node.store).obligations == 0


def test_netting_overflow_is_out_of_range(market):
    node, _, a, _, bundles = market
    for i in range(2):  # the buyer owes 2 x 2**62 = 2**63: one past int64
        node.transfer(
            bundles[i].id, to_account=a, price_minor=2**62, currency="EUR", request_id=f"o{i}"
        )
    with pytest.raises(OutOfRange):
        net(node.store)
