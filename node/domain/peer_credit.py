"""Credit limits, settlement thresholds and running balances per peer node (Interledger-style).

This node's balance with peer node P in a currency is what P's accounts owe this node's
accounts, net: ``receivable - payable`` over the unsettled cross-node obligations with P
(``settled_round`` NULL), plus the prices of priced trades still in flight out to P (locked,
not decided: they may yet commit).

* The **credit limit** bounds that balance: a priced trade to a buyer on P is refused
  (FAILED_PRECONDITION) at its start when ``balance + price > limit``, and refused outright
  when no limit is set for (P, currency).  The check and the transfer row share one
  transaction (and the limit row is locked on PostgreSQL), so concurrent trades cannot
  overshoot together.
* The **settlement threshold**: when a commit leaves ``|balance| >= threshold`` (threshold > 0),
  a row is inserted into ``settlement_requests`` in that same transaction (one open request per
  peer and period); the settlement worker takes it and runs the period's round.

Both nodes of a trade keep their own books: the destination records the same obligation as a
payable and checks its own threshold for the source.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection

from eap.node.domain.obligations import MAX_PRICE_MINOR, price_currency_violation
from eap.node.domain.rules import NODE_ID_RE, Checker
from eap.node.errors import FailedPrecondition, FieldViolation, NotFound
from eap.node.records.models import Serialisable
from eap.node.store import Store, peer_repos
from eap.node.store import obligation_repos as ob


@dataclass
class PeerBalance(Serialisable):
    """This node's running balance with one peer node in one currency (``eap.v1.PeerBalance``)."""

    peer: str
    currency: str
    #: 0 = none set: priced trades to the peer are refused.
    credit_limit_minor: int = 0
    #: 0 = never request a settlement round.
    settle_threshold_minor: int = 0
    #: What the peer's accounts owe this node's accounts (unsettled obligations).
    receivable_minor: int = 0
    #: What this node's accounts owe the peer's accounts (unsettled obligations).
    payable_minor: int = 0
    #: Prices of priced trades in flight out to the peer (not decided yet).
    in_flight_minor: int = 0
    #: receivable - payable + in flight.
    balance_minor: int = 0


def _balance(peer: str, currency: str, limits, totals) -> PeerBalance:
    rec, pay, flight = totals or (0, 0, 0)
    return PeerBalance(
        peer=peer, currency=currency,
        credit_limit_minor=int(limits.credit_limit_minor) if limits else 0,
        settle_threshold_minor=int(limits.settle_threshold_minor) if limits else 0,
        receivable_minor=rec, payable_minor=pay, in_flight_minor=flight,
        balance_minor=rec - pay + flight)


def balance(conn: Connection, me: str, peer: str, currency: str, *,
            lock: bool = False) -> PeerBalance:
    """The balance with ``peer`` in ``currency`` (``lock``: hold its limits row)."""
    limits = ob.get_limits(conn, peer, currency, lock=lock)
    totals = ob.peer_totals(conn, me, peer=peer, currency=currency).get((peer, currency))
    return _balance(peer, currency, limits, totals)


def balances(store: Store, me: str) -> list[PeerBalance]:
    """One balance per (peer, currency) with limits or obligations, sorted."""
    with store.read() as conn:
        limits = {(r.peer, r.currency): r for r in ob.all_limits(conn)}
        totals = ob.peer_totals(conn, me)
    keys = sorted(set(limits) | set(totals))
    return [_balance(p, c, limits.get((p, c)), totals.get((p, c))) for p, c in keys]


def set_limits(store: Store, me: str, *, peer: str, currency: str, credit_limit_minor: int,
               settle_threshold_minor: int, now_ms: int | None = None) -> PeerBalance:
    """Set this node's credit limit and settlement threshold towards ``peer`` in ``currency``.

    Raises:
        InvalidArgument: malformed peer, unknown currency, amounts outside 0..2**62.
        NotFound: ``peer`` is not on the trust list.
    """
    check = Checker()
    check.text(peer, "peer", max_len=128, pattern=NODE_ID_RE, hint="a DNS-like node id")
    why = price_currency_violation(currency)
    if why:
        check.fail("currency", why)
    check.int_range(credit_limit_minor, "credit_limit_minor", 0, MAX_PRICE_MINOR, "minor units")
    check.int_range(settle_threshold_minor, "settle_threshold_minor", 0, MAX_PRICE_MINOR,
                    "minor units")
    check.require(peer != me, "peer", "is this node")
    check.done()
    at = int(time.time() * 1000) if now_ms is None else now_ms
    with store.transaction() as conn:
        if peer_repos.get_peer(conn, peer) is None:
            raise NotFound(f"{peer} is not on this node's trust list",
                           [FieldViolation("peer", "not a peer")])
        ob.put_limits(conn, peer=peer, currency=currency, credit_limit_minor=credit_limit_minor,
                      settle_threshold_minor=settle_threshold_minor, at_ms=at)
        return balance(conn, me, peer, currency)


def check_credit(conn: Connection, me: str, peer: str, currency: str, price_minor: int) -> None:
    """Refuse (FAILED_PRECONDITION) a priced trade that would take what ``peer`` owes this node
    past the credit limit, or any priced trade to a peer without a limit in ``currency``."""
    b = balance(conn, me, peer, currency, lock=True)
    if b.credit_limit_minor <= 0:
        raise FailedPrecondition(
            f"no credit limit set for {peer} in {currency} (balance {b.balance_minor:,}): "
            f"priced trades to it are refused; set one with `eap-node peer limits {peer} "
            f"--credit-limit N --settle-threshold N --currency {currency}`",
            [FieldViolation("price_minor", "no credit limit for this peer and currency")])
    if b.balance_minor + price_minor > b.credit_limit_minor:
        raise FailedPrecondition(
            f"credit limit with {peer} exceeded: balance {b.balance_minor:,} + price "
            f"{price_minor:,} > limit {b.credit_limit_minor:,} {currency} (minor units)",
            [FieldViolation("price_minor", "over the peer's credit limit")])


def after_commit(conn: Connection, me: str, peer: str, currency: str, period: str,
                 now_ms: int) -> bool:
    """In the transaction of a committed cross-node trade: request a settlement round of
    ``period`` with ``peer`` when the balance is at or past the threshold."""
    b = balance(conn, me, peer, currency)
    if b.settle_threshold_minor <= 0 or abs(b.balance_minor) < b.settle_threshold_minor:
        return False
    return ob.request_settlement(
        conn, period=period, peer=peer, at_ms=now_ms,
        reason=f"balance {b.balance_minor:,} {currency} with {peer} reached the settlement "
               f"threshold {b.settle_threshold_minor:,}")
