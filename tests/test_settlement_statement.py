"""The statement of a settlement round (eap.node.domain.settlement_round): deterministic under
any order of views and obligations, balanced, reconciled bilaterally, overflow refused."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap.node.domain import settlement_round as sr
from eap.node.errors import OutOfRange
from eap.v1 import types_pb2 as pb

NODES = ("a.example", "b.example", "c.example")
ROUND = "a.example/2024-01-01/r"
PERIOD = "2024-01-01"


def party(node: str, i: int) -> str:
    return f"{node}/acct_{'abcdefgh'[i]}"


@st.composite
def books(draw):
    """Views of three nodes: local and cross-node obligations (both sides), plus one-sided
    and disagreeing ones."""
    views = {n: pb.SettlementView(round_id=ROUND, node_id=n, period=PERIOD) for n in NODES}
    for k in range(draw(st.integers(0, 40))):
        n1, n2 = draw(st.sampled_from(NODES)), draw(st.sampled_from(NODES))
        payer = party(n1, draw(st.integers(0, 3)))
        payee = party(n2, draw(st.integers(0, 3)))
        if payer == payee:
            continue
        o = pb.Obligation(id=f"{n1}/t{k}", payer=payer, payee=payee,
                          amount_minor=draw(st.integers(1, 10**12)),
                          currency=draw(st.sampled_from(("EUR", "USD", "COP"))), period=PERIOD)
        kind = draw(st.sampled_from(("agreed", "agreed", "one-sided", "differ")))
        views[n1].obligations.append(o)
        if n1 != n2 and kind != "one-sided":
            other = pb.Obligation()
            other.CopyFrom(o)
            if kind == "differ":
                other.amount_minor += 1
            views[n2].obligations.append(other)
    return views


def shuffled(views: dict, seed: int) -> dict:
    rng = random.Random(seed)
    keys = list(views)
    rng.shuffle(keys)
    out = {}
    for k in keys:
        v = pb.SettlementView()
        v.CopyFrom(views[k])
        obligations = list(v.obligations)
        rng.shuffle(obligations)
        del v.obligations[:]
        v.obligations.extend(obligations)
        out[k] = v
    return out


@settings(max_examples=60, deadline=None)
@given(books(), st.integers(0, 2**32))
def test_statement_is_deterministic_and_balanced(views, seed):
    stmt = sr.compute(round_id=ROUND, period=PERIOD, coordinator="a.example", views=views)
    data = sr.statement_bytes(stmt)
    again = sr.compute(round_id=ROUND, period=PERIOD, coordinator="a.example",
                       views=shuffled(views, seed))
    assert sr.statement_bytes(again) == data
    assert list(stmt.participants) == sorted(NODES)
    totals: dict[str, int] = {}
    for p in stmt.positions:
        assert p.net_minor != 0
        totals[p.currency] = totals.get(p.currency, 0) + p.net_minor
    assert all(v == 0 for v in totals.values())
    for c in stmt.currencies:
        parties = sum(1 for p in stmt.positions if p.currency == c.currency)
        moves = [i for i in stmt.instructions if i.currency == c.currency]
        assert len(moves) <= max(0, parties - 1)
        assert c.net_minor == sum(i.amount_minor for i in moves) <= c.gross_minor
    assert [i.id for i in stmt.instructions] == \
        [f"{ROUND}/{k}" for k in range(len(stmt.instructions))]
    held = {o.id for o in stmt.held_out}
    assert stmt.obligations + len(held) == len({o.id for v in views.values()
                                               for o in v.obligations})


def test_reconciliation_rules():
    a, b = NODES[0], NODES[1]
    cross = pb.Obligation(id="a.example/t1", payer=party(b, 0), payee=party(a, 0),
                          amount_minor=100, currency="EUR", period=PERIOD)
    local = pb.Obligation(id="a.example/trade/1", payer=party(a, 1), payee=party(a, 0),
                          amount_minor=5, currency="EUR", period=PERIOD)
    foreign = pb.Obligation(id="c.example/t9", payer=party("c.example", 0),
                            payee=party(b, 1), amount_minor=7, currency="EUR", period=PERIOD)
    bad = pb.Obligation(id="a.example/t2", payer=party(a, 1), payee=party(b, 0),
                        amount_minor=3, currency="eur", period=PERIOD)
    views = {a: pb.SettlementView(node_id=a, obligations=[cross, local, foreign, bad]),
             b: pb.SettlementView(node_id=b, obligations=[cross, bad])}
    rec = sr.reconcile(views, PERIOD)
    assert set(rec.agreed) == {cross.id, local.id}
    assert rec.reasons == {foreign.id: "stated by a node that is party to neither side",
                           bad.id: "malformed (amount, currency, period or parties)"}
    only_a = sr.reconcile({a: views[a], b: pb.SettlementView(node_id=b)}, PERIOD)
    assert only_a.reasons[cross.id] == "not stated by b.example"


def test_overflow_is_out_of_range():
    big = 2**63 - 1
    views = {NODES[0]: pb.SettlementView(node_id=NODES[0], obligations=[
        pb.Obligation(id=f"a.example/trade/{i}", payer=party(NODES[0], 0),
                      payee=party(NODES[0], 1), amount_minor=big, currency="EUR",
                      period=PERIOD) for i in (1, 2)])}
    with pytest.raises(OutOfRange):
        sr.compute(round_id=ROUND, period=PERIOD, coordinator="a.example", views=views)
