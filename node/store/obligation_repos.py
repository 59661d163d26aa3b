"""Repository of payment obligations, peer limits and settlement requests (migration 0006).

Like every repository, each function takes an open connection inside the caller's unit of
work: an obligation is recorded in the transaction of its trade's side of the commit, a
settlement request in the same transaction as the obligation that crossed the threshold.

For the settlement rounds:

* :func:`unsettled` reads a period's unsettled obligations, parties qualified
  (``<node>/acct_...``), sorted by obligation id;
* :func:`mark_settled` marks obligations settled by a round, once (never re-marks one);
* :func:`open_requests` / :func:`take_requests` read and take the settlement requests that
  trades inserted when a peer balance reached its threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, select, update

from eap.node.records.parties import qualified
from eap.node.store import schema as t

_o = t.obligations.c
_l = t.peer_limits.c
_r = t.settlement_requests.c
_tr = t.transfers.c



@dataclass(frozen=True)
class ObligationRow:
    """One obligation as the federation sees it (``eap.v1.Obligation``)."""

    obligation_id: str
    payer: str
    payee: str
    amount_minor: int
    currency: str
    period: str
    #: The other node of a cross-node trade (None for a local one).
    peer: str | None = None
    transfer_id: str | None = None
    settled_round: str | None = None


def node_id_of(conn: Connection) -> str:
    return conn.execute(select(t.meta.c.value).where(t.meta.c.key == "node_id")).scalar_one()


def insert_obligation(conn: Connection, **values: Any) -> None:
    conn.execute(insert(t.obligations).values(**values))


def has_obligation(conn: Connection, obligation_id: str) -> bool:
    return conn.execute(
        select(_o.id).where(_o.obligation_id == obligation_id)
    ).first() is not None


def _rows(conn: Connection, q, node_id: str | None) -> list[ObligationRow]:
    me = node_id or node_id_of(conn)
    return [
        ObligationRow(
            obligation_id=r.obligation_id, payer=qualified(me, r.payer),
            payee=qualified(me, r.payee), amount_minor=int(r.amount_minor),
            currency=r.currency, period=r.period, peer=r.peer, transfer_id=r.transfer_id,
            settled_round=r.settled_round,
        )
        for r in conn.execute(q.order_by(_o.obligation_id))
    ]


def unsettled(conn: Connection, period: str, *, currency: str | None = None,
              peer: str | None = None, node_id: str | None = None) -> list[ObligationRow]:
    """The period's obligations no round settled yet, parties qualified, by obligation id.

    ``peer`` keeps only the cross-node trades with that node; ``node_id`` (this node's id)
    saves reading it from ``meta``.
    """
    q = select(t.obligations).where(_o.period == period, _o.settled_round.is_(None))
    if currency:
        q = q.where(_o.currency == currency)
    if peer:
        q = q.where(_o.peer == peer)
    return _rows(conn, q, node_id)


def by_ids(conn: Connection, obligation_ids: Sequence[str], *,
           node_id: str | None = None) -> list[ObligationRow]:
    """The obligations with these ids (settled or not), parties qualified."""
    if not obligation_ids:
        return []
    return _rows(conn, select(t.obligations).where(_o.obligation_id.in_(list(obligation_ids))),
                 node_id)


def mark_settled(conn: Connection, obligation_ids: Iterable[str], round_id: str) -> int:
    """Mark these obligations settled by ``round_id``; returns how many this call marked.

    Only unsettled ones change: an obligation is settled by exactly one round (compare the
    count with ``len(obligation_ids)`` to detect one settled already).
    """
    ids = list(obligation_ids)
    done = 0
    for i in range(0, len(ids), 500):
        done += conn.execute(
            update(t.obligations)
            .where(_o.obligation_id.in_(ids[i:i + 500]), _o.settled_round.is_(None))
            .values(settled_round=round_id)
        ).rowcount
    return done


def all_obligations(conn: Connection, period: str | None, currency: str | None):
    """Raw rows (``eap-node net``), oldest first."""
    q = select(t.obligations)
    if period:
        q = q.where(_o.period == period)
    if currency:
        q = q.where(_o.currency == currency)
    return conn.execute(q.order_by(_o.id)).all()


# -- peer limits and balances ----------------------------------------------------------------


def get_limits(conn: Connection, peer: str, currency: str, *, lock: bool = False):
    q = select(t.peer_limits).where(_l.peer == peer, _l.currency == currency)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return conn.execute(q).first()


def put_limits(conn: Connection, *, peer: str, currency: str, credit_limit_minor: int,
               settle_threshold_minor: int, at_ms: int) -> None:
    values = {"credit_limit_minor": credit_limit_minor,
              "settle_threshold_minor": settle_threshold_minor, "updated_at_ms": at_ms}
    done = conn.execute(update(t.peer_limits)
                        .where(_l.peer == peer, _l.currency == currency).values(**values))
    if done.rowcount == 0:
        conn.execute(insert(t.peer_limits).values(peer=peer, currency=currency, **values))


def all_limits(conn: Connection) -> list:
    return conn.execute(select(t.peer_limits).order_by(_l.peer, _l.currency)).all()


def peer_totals(conn: Connection, node_id: str, *, peer: str | None = None,
                currency: str | None = None) -> dict[tuple[str, str], list[int]]:
    """``{(peer, currency): [receivable, payable, in flight]}`` of unsettled cross-node
    obligations and of priced transfers still preparing out to the peer.

    Receivable: the peer's accounts owe this node's (this node's account is the payee);
    payable: the other way round.
    """
    ours = _o.payee.startswith(f"{node_id}/", autoescape=True)
    q = (select(_o.peer, _o.currency,
                func.coalesce(func.sum(case((ours, _o.amount_minor), else_=0)), 0),
                func.coalesce(func.sum(case((ours, 0), else_=_o.amount_minor)), 0))
         .where(_o.peer.is_not(None), _o.settled_round.is_(None))
         .group_by(_o.peer, _o.currency))
    f = (select(_tr.peer, _tr.currency, func.coalesce(func.sum(_tr.price_minor), 0))
         .where(_tr.direction == "out", _tr.state == "preparing", _tr.price_minor.is_not(None))
         .group_by(_tr.peer, _tr.currency))
    if peer:
        q, f = q.where(_o.peer == peer), f.where(_tr.peer == peer)
    if currency:
        q, f = q.where(_o.currency == currency), f.where(_tr.currency == currency)
    out: dict[tuple[str, str], list[int]] = {}
    for p, c, rec, pay in conn.execute(q):
        out[(p, c)] = [int(rec), int(pay), 0]
    for p, c, flight in conn.execute(f):
        out.setdefault((p, c), [0, 0, 0])[2] = int(flight)
    return out


# -- settlement requests ---------------------------------------------------------------------


def request_settlement(conn: Connection, *, period: str, peer: str, reason: str,
                       at_ms: int) -> bool:
    """Ask for a settlement round of ``period`` with ``peer``, unless one is open already
    (not yet taken); returns whether a row was inserted."""
    open_ = conn.execute(
        select(_r.id).where(_r.period == period, _r.peer == peer, _r.taken_at_ms.is_(None))
    ).first()
    if open_ is not None:
        return False
    conn.execute(insert(t.settlement_requests).values(
        period=period, peer=peer, reason=reason[:512], at_ms=at_ms))
    return True


def open_requests(conn: Connection, limit: int = 100) -> list:
    """Settlement requests not taken yet, oldest first."""
    return conn.execute(select(t.settlement_requests).where(_r.taken_at_ms.is_(None))
                        .order_by(_r.id).limit(limit)).all()


def take_requests(conn: Connection, ids: Iterable[int], at_ms: int) -> int:
    """Take these requests (a round is running for them); returns how many this call took."""
    ids = list(ids)
    if not ids:
        return 0
    return conn.execute(update(t.settlement_requests)
                        .where(and_(_r.id.in_(ids), _r.taken_at_ms.is_(None)))
                        .values(taken_at_ms=at_ms)).rowcount


def all_requests(conn: Connection) -> list:
    return conn.execute(select(t.settlement_requests).order_by(_r.id)).all()
