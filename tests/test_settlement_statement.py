"""The statement of a settlement round (eap.node.domain.settlement_round): deterministic under
any order of views and obligations, balanced, reconciled bilaterally, overflow refused."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eap.node.domain import settlement_round as sr
from eap.node.errors import InvalidArgument, OutOfRange
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


def as_columns(view: pb.SettlementView) -> pb.SettlementView:
    """The same view with its obligations sent as ``columns``."""
    out = pb.SettlementView(round_id=view.round_id, node_id=view.node_id, period=view.period,
                            at_ms=view.at_ms)
    obs = list(view.obligations)
    if obs:
        out.columns.CopyFrom(sr.build_columns(
            [o.id for o in obs], [o.payer for o in obs], [o.payee for o in obs],
            [o.amount_minor for o in obs], [o.currency for o in obs], [o.period for o in obs]))
    return out


@settings(max_examples=60, deadline=None)
@given(books(), st.integers(0, 2**32), st.sets(st.sampled_from(NODES)))
def test_columns_and_messages_give_the_same_statement_bytes(views, seed, columnar):
    """A view sent as columns and the same view sent as messages: byte-identical statements,
    whichever views are columnar and in whatever order the messages come."""
    expected = sr.statement_bytes(sr.compute(round_id=ROUND, period=PERIOD,
                                             coordinator="a.example", views=views))
    mixed = {n: as_columns(v) if n in columnar else v
             for n, v in shuffled(views, seed).items()}
    got = sr.statement_bytes(sr.compute(round_id=ROUND, period=PERIOD,
                                        coordinator="a.example", views=mixed))
    assert got == expected
    rows = sr.view_rows(as_columns(views[NODES[0]]))
    assert rows.ids == sorted(o.id for o in views[NODES[0]].obligations)


def _columnar() -> pb.SettlementView:
    a, b = NODES[0], NODES[1]
    obs = [pb.Obligation(id=f"a.example/t{i}", payer=party(a, i % 3), payee=party(b, 0),
                         amount_minor=10 + i, currency="EUR", period=PERIOD) for i in range(4)]
    return as_columns(pb.SettlementView(round_id=ROUND, node_id=a, period=PERIOD,
                                        obligations=obs))


def _bad_int32(values) -> bytes:
    return np.asarray(values, "<i4").tobytes()


@pytest.mark.parametrize("spoil, why", [
    (lambda c: setattr(c, "count", 5), "ids must hold count = 5"),
    (lambda c: c.ids.append("a.example/t9"), "ids must hold count = 4"),
    (lambda c: setattr(c, "payer", c.payer[:-4]), "payer must hold 4 int32"),
    (lambda c: setattr(c, "amount_minor", c.amount_minor + b"\0"), "amount_minor must hold 4"),
    (lambda c: setattr(c, "payee", _bad_int32([0, 0, 0, 9])), "payee has an index outside"),
    (lambda c: setattr(c, "currency", _bad_int32([0, -1, 0, 0])), "currency has an index"),
    (lambda c: setattr(c, "period", _bad_int32([0, 0, 0, 1])), "period has an index"),
    (lambda c: setattr(c, "amount_minor", np.asarray([1, 0, 2, 3], "<i8").tobytes()),
     "amount_minor must be > 0"),
    (lambda c: setattr(c, "amount_minor", np.asarray([1, -5, 2, 3], "<i8").tobytes()),
     "amount_minor must be > 0"),
    (lambda c: c.ids.__setitem__(1, "a.example/t3"), "ids must be sorted and unique"),
    (lambda c: c.ids.__setitem__(1, "a.example/t0"), "ids must be sorted and unique"),
    (lambda c: c.ids.__setitem__(3, "a.example/t9" + "x" * 300), "longer than 200"),
    (lambda c: c.parties.append("x" * 201), "parties has an entry longer"),
    (lambda c: c.currencies.extend(["USD"] * 4), "currencies has 5 entries"),
])
def test_malformed_columns_are_refused(spoil, why):
    view = _columnar()
    sr.view_rows(view)  # well formed
    spoil(view.columns)
    with pytest.raises(InvalidArgument) as err:
        sr.reconcile({NODES[0]: view}, PERIOD)
    assert why in err.value.message


def test_a_view_with_both_forms_is_refused():
    view = _columnar()
    view.obligations.add(id="a.example/t0", payer=party(NODES[0], 0), payee=party(NODES[1], 0),
                         amount_minor=1, currency="EUR", period=PERIOD)
    with pytest.raises(InvalidArgument, match="both"):
        sr.view_rows(view)
