"""Reconciling holdings statements (eap.node.domain.reconcile): pure interval arithmetic.

Random honest federations close; an injected duplicate, loss, unissued holding or custody
mismatch is found, with its Wh, whatever the serials' magnitude (up to 2^62).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eap.node.domain.reconcile import MAX_SERIAL, reconcile
from eap.v1 import types_pb2 as pb

NODES = ("a", "b", "c")
#: What a piece of an issued range can be: held by one node (active / retired), or in flight
#: (source EXPORT_PENDING and/or destination PREPARED).
STATES = ("active", "retired", "exporting", "importing", "both")


def entry(stmts: dict[str, pb.HoldingsStatement], node: str, issuer: str) -> pb.IssuerHoldings:
    stmt = stmts.setdefault(node, pb.HoldingsStatement(node_id=node))
    for h in stmt.issuers:
        if h.issuer == issuer:
            return h
    return stmt.issuers.add(issuer=issuer)


@st.composite
def federations(draw):
    """``(statements, pieces)``: pieces are ``(issuer, start, end, state, holder, other)``."""
    stmts = {n: pb.HoldingsStatement(node_id=n, issuers=[pb.IssuerHoldings(issuer=n)])
             for n in NODES}
    pieces = []
    for issuer in NODES:
        at = draw(st.integers(0, MAX_SERIAL // 2))
        for _ in range(draw(st.integers(0, 4))):
            at += draw(st.integers(0, 10**15))  # gaps between issued records
            cuts = sorted(draw(st.lists(st.integers(1, 10**12), min_size=1, max_size=5)))
            start = at
            for cut in cuts:
                end = at + cut
                if end <= start:
                    continue
                state = draw(st.sampled_from(STATES))
                holder = draw(st.sampled_from(NODES))
                other = draw(st.sampled_from([n for n in NODES if n != holder]))
                pieces.append((issuer, start, end, state, holder, other))
                start = end
            at = start
    for issuer, s, e, state, holder, other in pieces:
        own = entry(stmts, issuer, issuer)
        if state in ("active", "retired"):
            getattr(entry(stmts, holder, issuer), state).add(start=s, end=e)
            custodian = holder
        else:
            if state in ("exporting", "both"):
                entry(stmts, holder, issuer).exporting.add(start=s, end=e)
            if state in ("importing", "both"):
                entry(stmts, other, issuer).importing.add(start=s, end=e)
            custodian = draw(st.sampled_from([holder, other]))
        own.custody.add(start=s, end=e, holder=custodian,
                        retired=state == "retired" and holder != issuer and draw(st.booleans()))
        own.issued_wh += e - s
    return stmts, pieces


def totals(pieces, issuer):
    out = {"active": 0, "retired": 0, "in_flight": 0}
    for i, s, e, state, *_ in pieces:
        if i == issuer:
            out[state if state in ("active", "retired") else "in_flight"] += e - s
    return out


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(federations())
def test_honest_federations_close(fed):
    stmts, pieces = fed
    books = reconcile(stmts)
    assert set(books) == set(NODES)
    for issuer, b in books.items():
        assert b.ok, b.problems
        want = totals(pieces, issuer)
        assert (b.active_wh, b.retired_wh, b.in_flight_wh) == (
            want["active"], want["retired"], want["in_flight"])
        assert b.issued_wh == b.active_wh + b.retired_wh + b.in_flight_wh
        assert b.missing_wh == b.conflicting_wh == 0


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(federations(), st.data())
def test_a_duplicate_is_found(fed, data):
    stmts, pieces = fed
    live = [p for p in pieces if p[3] != "importing"]
    if not live:
        return
    issuer, s, e, *_ = data.draw(st.sampled_from(live))
    lo = data.draw(st.integers(s, e - 1))
    hi = data.draw(st.integers(lo + 1, e))
    where = data.draw(st.sampled_from(NODES))  # the same node twice is a duplicate too
    entry(stmts, where, issuer).active.add(start=lo, end=hi)
    b = reconcile(stmts)[issuer]
    assert not b.ok and b.conflicting_wh == hi - lo
    assert any("two places" in p and where in p for p in b.problems)
    assert b.missing_wh == 0


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(federations(), st.data())
def test_a_loss_is_found(fed, data):
    stmts, pieces = fed
    held = [p for p in pieces if p[3] in ("active", "retired", "exporting")]
    if not held:
        return
    issuer, s, e, state, holder, _ = data.draw(st.sampled_from(held))
    h = entry(stmts, holder, issuer)
    ranges = getattr(h, state)
    kept = [(r.start, r.end) for r in ranges if (r.start, r.end) != (s, e)]
    del ranges[:]
    for a, z in kept:
        ranges.add(start=a, end=z)
    b = reconcile(stmts)[issuer]
    assert not b.ok and b.missing_wh == e - s and b.conflicting_wh == 0
    assert any("missing" in p for p in b.problems)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(federations(), st.sampled_from(NODES), st.sampled_from(NODES))
def test_serials_never_issued_are_found(fed, issuer, where):
    stmts, _ = fed
    end = MAX_SERIAL
    entry(stmts, where, issuer).active.add(start=end - 10, end=end)  # beyond any custody
    b = reconcile(stmts)[issuer]
    assert not b.ok and b.conflicting_wh == 10
    assert any("never issued" in p for p in b.problems)


def test_custody_must_name_the_holder_and_retired_stays_retired():
    own = pb.IssuerHoldings(issuer="a", issued_wh=30, custody=[
        pb.CustodyRange(start=0, end=10, holder="b"),
        pb.CustodyRange(start=10, end=20, holder="c", retired=True),
        pb.CustodyRange(start=20, end=30, holder="c")])
    stmts = {
        "a": pb.HoldingsStatement(node_id="a", issuers=[own]),
        "b": pb.HoldingsStatement(node_id="b", issuers=[pb.IssuerHoldings(
            issuer="a", retired=[pb.SerialRange(start=20, end=30)])]),
        "c": pb.HoldingsStatement(node_id="c", issuers=[pb.IssuerHoldings(
            issuer="a", active=[pb.SerialRange(start=0, end=20)])]),
    }
    b = reconcile(stmts)["a"]
    assert not b.ok and b.missing_wh == b.conflicting_wh == 0
    assert b.issued_wh == b.active_wh + b.retired_wh == 30
    text = "\n".join(b.problems)
    assert "a/0-10 (10 Wh) is active at c but the issuer's custody says b holds it" in text
    assert "a/10-20 (10 Wh) is active at c but was reported retired" in text
    assert "a/20-30 (10 Wh) is retired at b but the issuer's custody says c" in text


def test_in_flight_counts_once_and_two_imports_conflict():
    own = pb.IssuerHoldings(issuer="a", issued_wh=10,
                            custody=[pb.CustodyRange(start=0, end=10, holder="b")])
    imp = pb.IssuerHoldings(issuer="a", importing=[pb.SerialRange(start=0, end=10)])
    stmts = {"a": pb.HoldingsStatement(node_id="a", issuers=[own]),
             "b": pb.HoldingsStatement(node_id="b", issuers=[imp])}
    b = reconcile(stmts)["a"]
    assert b.ok and b.in_flight_wh == 10
    stmts["c"] = pb.HoldingsStatement(node_id="c", issuers=[imp])
    b = reconcile(stmts)["a"]
    assert not b.ok and b.conflicting_wh == 10 and b.in_flight_wh == 10


def test_an_issuer_without_statement_cannot_be_checked():
    held = pb.IssuerHoldings(issuer="z", active=[pb.SerialRange(start=5, end=9)])
    b = reconcile({"a": pb.HoldingsStatement(node_id="a", issuers=[held])})["z"]
    assert not b.ok and b.active_wh == 4 and b.issued_wh == 0
    assert "no statement from the issuer z" in b.problems[0]


def test_invalid_ranges_and_wrong_issued_total_are_problems():
    own = pb.IssuerHoldings(issuer="a", issued_wh=11, active=[pb.SerialRange(start=9, end=3)],
                            custody=[pb.CustodyRange(start=0, end=10, holder="a")])
    b = reconcile({"a": pb.HoldingsStatement(node_id="a", issuers=[own])})["a"]
    assert not b.ok and b.missing_wh == 10
    assert any("invalid active range 9-3" in p for p in b.problems)
    assert any("states 11 Wh issued" in p for p in b.problems)
