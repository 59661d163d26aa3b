"""Settlement rounds, their signatures and the execution queue (docs/settlement.md)."""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, text, update

from eap.node.store import schema as t
from eap.node.store.engine import insert_if_absent

R = t.settlement_rounds
S = t.settlement_signatures
E = t.settlement_executions
O = t.obligations  # noqa: E741


def global_id(node_id: str, row: Any) -> str:
    """An obligation's federation-wide id (``"<node>/trade/<n>"`` for a row recorded before
    obligation ids existed)."""
    return row.obligation_id or f"{node_id}/trade/{row.id}"


def unsettled(conn: Connection, period: str):
    """This node's obligations of ``period`` no round settled yet, by id: the columns a
    settlement view needs (``id``, ``obligation_id``, parties, amount, currency, period)."""
    q = (select(O.c.id, O.c.obligation_id, O.c.payer, O.c.payee, O.c.amount_minor,
                O.c.currency, O.c.period)
         .where(O.c.period == period, O.c.settled_round.is_(None)).order_by(O.c.id))
    return conn.execute(q).all()


def unsettled_columns(conn: Connection, node_id: str, period: str
                      ) -> tuple[list[str], list[str], list[str], list[int], list[str], list[str]]:
    """This node's obligations of ``period`` no round settled yet, in one query, column by
    column: (global ids, payers, payees, amounts, currencies, periods) as stored (parties
    not qualified yet), in ``obligation_id`` order."""
    q = (select(O.c.obligation_id, O.c.payer, O.c.payee, O.c.amount_minor, O.c.currency,
                O.c.period, O.c.id)
         .where(O.c.period == period, O.c.settled_round.is_(None)).order_by(O.c.obligation_id))
    rows = conn.execute(q).all()
    if not rows:
        return [], [], [], [], [], []
    ids, payers, payees, amounts, currencies, periods, pks = (list(c) for c in zip(*rows,
                                                                                  strict=True))
    if not all(ids):  # a row without its federation-wide id (none since 0006)
        ids = [i or f"{node_id}/trade/{pk}" for i, pk in zip(ids, pks, strict=True)]
    return ids, payers, payees, amounts, currencies, periods


def settled_elsewhere(conn: Connection, node_id: str, period: str, round_id: str,
                      ids: Sequence[str]) -> tuple[str, str] | None:
    """The first of ``ids`` (sorted) settled by a round other than ``round_id``, with that
    round; None when there is none.  Reads only the period's rows settled by other rounds."""
    rows = conn.execute(select(O.c.id, O.c.obligation_id, O.c.settled_round)
                        .where(O.c.period == period, O.c.settled_round.is_not(None),
                               O.c.settled_round != round_id)).all()
    hits = []
    for r in rows:
        gid = global_id(node_id, r)
        k = bisect.bisect_left(ids, gid)
        if k < len(ids) and ids[k] == gid:
            hits.append((gid, r.settled_round))
    return min(hits) if hits else None


def mark_settled_ids(conn: Connection, period: str, ids: Sequence[str], round_id: str) -> int:
    """Mark the unsettled obligations of ``period`` whose ``obligation_id`` is one of ``ids``
    settled by ``round_id``, in one statement (the ids as one JSON or array parameter, not
    one bound parameter each); how many rows of ``period`` ``round_id`` settles now in all
    (compare with ``len(ids)``)."""
    ids = list(ids)
    if ids:
        if conn.dialect.name == "postgresql":
            match, value = "obligation_id = ANY(:ids)", ids
        else:
            match, value = "obligation_id IN (SELECT value FROM json_each(:ids))", \
                json.dumps(ids)
        conn.execute(text(f"UPDATE obligations SET settled_round = :round WHERE period = "
                          f":period AND settled_round IS NULL AND {match}"),
                     {"round": round_id, "period": period, "ids": value})
    return int(conn.execute(select(func.count()).select_from(O)
                            .where(O.c.period == period,
                                   O.c.settled_round == round_id)).scalar_one())


# -- rounds -----------------------------------------------------------------------------------


def get_round(conn: Connection, round_id: str, *, lock: bool = False):
    """The round's row; with ``lock``, locked until the transaction ends (PostgreSQL; SQLite
    has one writer at a time): a writer that decides on what it read (settle, sign, fail)
    does so alone, whether the other writer is a thread of this process or another
    replica."""
    q = select(R).where(R.c.round_id == round_id)
    if lock:
        q = q.with_for_update()
    return conn.execute(q).first()


def round_for_request(conn: Connection, request_id: str):
    return conn.execute(select(R).where(R.c.request_id == request_id)).first()


def insert_round(conn: Connection, *, if_absent: bool = False, **values: Any) -> bool:
    """Insert a round's row; whether it was inserted.  With ``if_absent`` a row of the same
    round id already there (another request of the round wrote it first; on PostgreSQL this
    waits for that writer's commit) leaves it as it is, instead of failing the transaction."""
    values.setdefault("participants", "[]")
    values.setdefault("obligation_ids", "[]")
    values.setdefault("problems", "[]")
    if not if_absent:
        conn.execute(insert(R).values(**values))
        return True
    return insert_if_absent(conn, R, values, key=["round_id"])


def update_round(conn: Connection, round_id: str, *, expect_states: Sequence[str] = (),
                 **values: Any) -> bool:
    q = update(R).where(R.c.round_id == round_id)
    if expect_states:
        q = q.where(R.c.state.in_(list(expect_states)))
    return conn.execute(q.values(**values)).rowcount == 1


def add_problem(conn: Connection, row: Any, line: str, **values: Any) -> None:
    problems = [*json.loads(row.problems or "[]"), line[:500]]
    update_round(conn, row.round_id, problems=json.dumps(problems), **values)


def rounds_in(conn: Connection, states: Sequence[str], *, coordinator: str | None = None):
    q = select(R).where(R.c.state.in_(list(states)))
    if coordinator is not None:
        q = q.where(R.c.coordinator == coordinator)
    return conn.execute(q.order_by(R.c.started_at_ms, R.c.round_id)).all()


def undelivered_finals(conn: Connection, coordinator: str):
    q = select(R).where(R.c.coordinator == coordinator, R.c.finals_pending.is_not(None),
                        R.c.finals_pending != "[]")
    return conn.execute(q.order_by(R.c.started_at_ms)).all()


def list_rounds(conn: Connection, limit: int, after: tuple[int, str] | None = None):
    """Rounds newest first; ``after`` = (started_at_ms, round_id) of the last row seen."""
    q = select(R)
    if after is not None:
        at, rid = after
        q = q.where(or_(R.c.started_at_ms < at,
                        and_(R.c.started_at_ms == at, R.c.round_id < rid)))
    return conn.execute(q.order_by(R.c.started_at_ms.desc(), R.c.round_id.desc())
                        .limit(limit)).all()


def signatures(conn: Connection, round_id: str):
    return conn.execute(select(S).where(S.c.round_id == round_id).order_by(S.c.node_id)).all()


def put_signature(conn: Connection, round_id: str, node_id: str, signed: bytes) -> None:
    have = conn.execute(select(S.c.node_id).where(S.c.round_id == round_id,
                                                  S.c.node_id == node_id)).first()
    if have is None:
        conn.execute(insert(S).values(round_id=round_id, node_id=node_id, signed=signed))


# -- executions ---------------------------------------------------------------------------------


def queue_executions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(E), rows)


def executions(conn: Connection, round_id: str):
    return conn.execute(select(E).where(E.c.round_id == round_id)
                        .order_by(E.c.instruction_id, E.c.side)).all()


def due_executions(conn: Connection, now_ms: int, limit: int):
    return conn.execute(select(E).where(E.c.state == "pending", E.c.next_attempt_at_ms <= now_ms)
                        .order_by(E.c.next_attempt_at_ms, E.c.instruction_id).limit(limit)).all()


def update_execution(conn: Connection, instruction_id: str, side: str, *,
                     expect_state: str = "pending", **values: Any) -> bool:
    res = conn.execute(update(E).where(E.c.instruction_id == instruction_id, E.c.side == side,
                                       E.c.state == expect_state).values(**values))
    return res.rowcount == 1


def mark_executed(conn: Connection, rows: list[dict[str, Any]], executed_at_ms: int) -> int:
    """Record many executed sides in one statement (``instruction_id``, ``side``,
    ``attempts``, ``backend``, ``receipt`` each); only pending ones change; how many did."""
    if not rows:
        return 0
    q = (update(E).where(E.c.instruction_id == bindparam("k_id"), E.c.side == bindparam("k_side"),
                         E.c.state == "pending")
         .values(state="executed", attempts=bindparam("k_attempts"),
                 backend=bindparam("k_backend"), receipt=bindparam("k_receipt"),
                 last_error=None, executed_at_ms=executed_at_ms))
    res = conn.execute(q, [{"k_id": r["instruction_id"], "k_side": r["side"],
                            "k_attempts": r["attempts"], "k_backend": r["backend"],
                            "k_receipt": r["receipt"]} for r in rows])
    return int(res.rowcount)


def execution_counts(conn: Connection, round_id: str) -> dict[str, int]:
    q = select(E.c.state, func.count()).where(E.c.round_id == round_id).group_by(E.c.state)
    return {state: int(n) for state, n in conn.execute(q).all()}


# -- requests -----------------------------------------------------------------------------------


def last_failed_ms(conn: Connection, coordinator: str, period: str) -> int | None:
    """When the latest failed round of ``period`` coordinated by ``coordinator`` ended."""
    return conn.execute(
        select(func.max(R.c.finished_at_ms)).where(
            R.c.coordinator == coordinator, R.c.period == period, R.c.state == "failed")
    ).scalar()


def open_requests(conn: Connection):
    rq = t.settlement_requests
    return conn.execute(select(rq).where(rq.c.taken_at_ms.is_(None)).order_by(rq.c.id)).all()


def take_requests(conn: Connection, ids: Sequence[int], at_ms: int) -> None:
    rq = t.settlement_requests
    conn.execute(update(rq).where(rq.c.id.in_(list(ids))).values(taken_at_ms=at_ms))
