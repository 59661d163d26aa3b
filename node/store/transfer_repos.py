"""Repository of cross-node transfers: the transfer log, its outbox and its inbox.

Every function takes an open connection inside the caller's unit of work, like
:mod:`eap.node.store.repos`, so a state change, the bundle it moves and the message it owes a
peer commit together (DESIGN §6).
"""

from __future__ import annotations

import contextlib
import heapq
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    func,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Row

from eap.node.records.enums import Status
from eap.node.store import run_repos
from eap.node.store import schema as t
from eap.node.store.engine import Store

OUT, IN = "out", "in"


@contextlib.contextmanager
def lazy_transaction(store: Store) -> Iterator[Connection]:
    """A transaction whose commit is not forced to disk before it returns.

    It survives a crash of the process (the write is in the operating system's hands), not
    necessarily a power failure.  For writes the protocol can redo: recording a peer's
    acknowledgement, or the destination's commit of a prepared import.  A later forced commit
    flushes it too (SQLite's WAL and PostgreSQL's WAL are written in order).
    """
    engine = store.engine
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            raw = conn.connection.dbapi_connection
            raw.execute("PRAGMA synchronous=NORMAL")  # only outside a transaction
            try:
                with conn.begin():
                    yield conn
            finally:
                raw.execute("PRAGMA synchronous=FULL")
        else:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield conn


_tr = t.transfers.c
_ob = t.transfer_outbox.c
_ib = t.transfer_inbox.c


# -- transfer log ------------------------------------------------------------------------------


# Statements of the hot path are built once, with bind parameters: SQLAlchemy then skips
# building and keying a new construct on every call (most of a transfer's CPU time).
_INSERT_TRANSFER = t.transfers.insert()
_GET_TRANSFER = select(t.transfers).where(_tr.id == bindparam("tid"))
_GET_TRANSFER_LOCKED = _GET_TRANSFER.with_for_update()
_STATE_UPDATES: dict[tuple[str, ...], Any] = {}


def insert_transfer(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(_INSERT_TRANSFER, values)


def get_transfer(conn: Connection, transfer_id: str, *, lock: bool = False) -> Row | None:
    q = _GET_TRANSFER_LOCKED if lock and conn.dialect.name == "postgresql" else _GET_TRANSFER
    return conn.execute(q, {"tid": transfer_id}).first()


def _state_update(keys: tuple[str, ...], conditional: bool):
    key = (*keys, "?" if conditional else "")
    stmt = _STATE_UPDATES.get(key)
    if stmt is None:
        where = [_tr.id == bindparam("_tid")]
        if conditional:
            where.append(_tr.state == bindparam("_expect"))
        stmt = update(t.transfers).where(*where).values({k: bindparam(k) for k in keys})
        _STATE_UPDATES[key] = stmt
    return stmt


def set_transfer_state(conn: Connection, transfer_id: str, *, expect: str, **values) -> bool:
    """Conditional state change: succeeds only from state ``expect`` (one winner under races)."""
    stmt = _state_update(tuple(sorted(values)), True)
    done = conn.execute(stmt, {"_tid": transfer_id, "_expect": expect, **values})
    return done.rowcount == 1


def update_transfer(conn: Connection, transfer_id: str, **values) -> None:
    conn.execute(_state_update(tuple(sorted(values)), False), {"_tid": transfer_id, **values})


def list_transfers(
    conn: Connection,
    *,
    direction: str | None,
    state: str | None,
    after: tuple[int, str] | None,
    limit: int,
) -> Sequence[Row]:
    """Oldest first; ``after`` = ``(created_at_ms, id)`` of the last row of the previous page."""
    q = select(t.transfers)
    if after is not None:
        q = q.where(
            tuple_(_tr.created_at_ms, _tr.id) > tuple_(literal(after[0]), literal(after[1]))
        )
    if direction:
        q = q.where(_tr.direction == direction)
    if state:
        q = q.where(_tr.state == state)
    return conn.execute(q.order_by(_tr.created_at_ms, _tr.id).limit(limit)).all()


def overdue_outbound(conn: Connection, state: str, now_ms: int, limit: int) -> list[str]:
    """Ids of outgoing transfers still in ``state`` whose expiry has passed."""
    rows = conn.execute(
        select(_tr.id)
        .where(_tr.direction == OUT, _tr.state == state, _tr.expires_at_ms <= now_ms)
        .order_by(_tr.expires_at_ms)
        .limit(limit)
    )
    return [r[0] for r in rows]


def in_doubt_inbound(conn: Connection, state: str, now_ms: int, limit: int) -> Sequence[Row]:
    """Incoming transfers in ``state`` whose next in-doubt check is due."""
    return conn.execute(
        select(t.transfers)
        .where(_tr.direction == IN, _tr.state == state, _tr.next_check_at_ms <= now_ms)
        .order_by(_tr.next_check_at_ms)
        .limit(limit)
    ).all()


def overlapping(
    conn: Connection, issuer: str, start: int, end: int, limit: int = 200
) -> Sequence[Row]:
    """``(id, serial_start, serial_end, status)`` of every bundle of ``issuer`` here that
    overlaps ``[start, end)``, whatever its status (ancestors, descendants, copies)."""
    c = t.bundles.c
    rows = list(conn.execute(
        select(c.id, c.serial_start, c.serial_end, c.status)
        .where(c.issuer == issuer, c.serial_start < end, c.serial_end > start)
        .limit(limit)
    ).all())
    # and this node's own records still in their issuance runs (ACTIVE, no row yet)
    for run in run_repos.in_range(conn, issuer, start, end):
        if len(rows) >= limit:
            break
        lo = int(np.searchsorted(run.ends, start, side="right"))
        hi = int(np.searchsorted(run.serials, end, side="left"))
        gone = run_repos.shadowed(conn, run)
        picked = [i for i in range(lo, hi) if i not in gone][: limit - len(rows)]
        rows += [Overlap(b.id, b.serial_start, b.serial_end, b.status)
                 for b in run.bundles(picked)]
    return rows


class Overlap(NamedTuple):
    id: str
    serial_start: int
    serial_end: int
    status: int


def account_exists(conn: Connection, account_id: str) -> bool:
    return (
        conn.execute(select(t.accounts.c.id).where(t.accounts.c.id == account_id)).first()
        is not None
    )


def importing(conn: Connection, issuer: str, start: int, end: int, state: str) -> Sequence[Row]:
    """Incoming transfers in ``state`` (prepared) that reserve part of ``[start, end)``."""
    return conn.execute(
        select(_tr.id)
        .where(
            _tr.direction == IN,
            _tr.state == state,
            _tr.issuer == issuer,
            _tr.serial_start < end,
            _tr.serial_end > start,
        )
        .limit(5)
    ).all()


def lock_range_issuer(conn: Connection, issuer: str) -> None:
    """Serialise prepares of one issuer's serials (PostgreSQL; SQLite writers are serial)."""
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(f"eap-transfer-range:{issuer}".encode())
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def peer_record_covering(conn: Connection, issuer: str, start: int, end: int) -> Row | None:
    """The issuer's published record containing ``[start, end)``, if its batches were synced."""
    c = t.peer_records.c
    return conn.execute(
        select(t.peer_records)
        .where(c.issuer == issuer, c.serial_start <= start, c.serial_end >= end)
        .order_by(c.serial_start.desc())
        .limit(1)
    ).first()


def totals(conn: Connection) -> dict[str, int]:
    """Wh moved by committed transfers: ``wh_exported`` (out) and ``wh_imported`` (in)."""
    rows = conn.execute(
        select(_tr.direction, func.coalesce(func.sum(_tr.wh), 0))
        .where(_tr.state == "committed")
        .group_by(_tr.direction)
    ).all()
    by = {d: int(w) for d, w in rows}
    return {"wh_exported": by.get(OUT, 0), "wh_imported": by.get(IN, 0)}


# -- outbox ------------------------------------------------------------------------------------


_INSERT_OUTBOX = t.transfer_outbox.insert()
_OUTBOX_UNACKED = (select(t.transfer_outbox)
                   .where(_ob.transfer_id == bindparam("tid"), _ob.acked_at_ms.is_(None))
                   .order_by(_ob.id))
_OUTBOX_ACK = (update(t.transfer_outbox)
               .where(_ob.id == bindparam("mid"), _ob.acked_at_ms.is_(None))
               .values(acked_at_ms=bindparam("at"), last_error=bindparam("note")))
_OUTBOX_RETRY = (update(t.transfer_outbox)
                 .where(_ob.id == bindparam("mid"), _ob.acked_at_ms.is_(None))
                 .values(attempts=bindparam("attempts"),
                         next_attempt_at_ms=bindparam("next_at"), last_error=bindparam("error")))


def outbox_put(conn: Connection, *, transfer_id: str, peer: str, kind: str, payload: bytes,
               now_ms: int, next_attempt_at_ms: int, traceparent: str | None = None) -> int:
    """Queue a message; returns its id.  ``traceparent``: the trace it belongs to."""
    done = conn.execute(_INSERT_OUTBOX, {
        "transfer_id": transfer_id, "peer": peer, "kind": kind, "payload": payload,
        "attempts": 0, "next_attempt_at_ms": next_attempt_at_ms, "created_at_ms": now_ms,
        "traceparent": traceparent})
    return int(done.inserted_primary_key[0])


def outbox_unacked(conn: Connection, transfer_id: str) -> Sequence[Row]:
    return conn.execute(_OUTBOX_UNACKED, {"tid": transfer_id}).all()


def outbox_claim_due(
    conn: Connection, now_ms: int, lease_until_ms: int, limit: int
) -> Sequence[Row]:
    """Claim up to ``limit`` unacknowledged messages that are due, until ``lease_until_ms``.

    Another sender (an inline CLI call, another node process) does not pick a claimed message
    until its lease ends; if it does anyway, the receiving handlers are idempotent.
    """
    due = and_(_ob.acked_at_ms.is_(None), _ob.next_attempt_at_ms <= now_ms)
    ids = select(_ob.id).where(due).order_by(_ob.next_attempt_at_ms).limit(limit)
    if conn.dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    return conn.execute(
        update(t.transfer_outbox)
        .where(_ob.id.in_(ids.scalar_subquery()), due)
        .values(next_attempt_at_ms=lease_until_ms)
        .returning(*t.transfer_outbox.c)
    ).all()


def outbox_ack(conn: Connection, message_id: int, now_ms: int, note: str | None = None) -> bool:
    done = conn.execute(_OUTBOX_ACK, {"mid": message_id, "at": now_ms, "note": note})
    return done.rowcount == 1


def outbox_retry(conn: Connection, message_id: int, *, attempts: int, next_attempt_at_ms: int,
                 error: str) -> None:
    conn.execute(_OUTBOX_RETRY, {"mid": message_id, "attempts": attempts,
                                 "next_at": next_attempt_at_ms, "error": error[:500]})


def outbox_backlog(conn: Connection) -> dict[str, int]:
    """Unacknowledged messages by kind (for status and tests)."""
    rows = conn.execute(
        select(_ob.kind, func.count()).where(_ob.acked_at_ms.is_(None)).group_by(_ob.kind)
    ).all()
    return {k: int(n) for k, n in rows}


def outbox_unacked_for(conn: Connection, transfer_ids: Sequence[str]) -> dict[str, list[Row]]:
    """Unacknowledged messages of several transfers, by transfer id."""
    out: dict[str, list[Row]] = {}
    ids = list(transfer_ids)
    for i in range(0, len(ids), 500):
        rows = conn.execute(
            select(t.transfer_outbox)
            .where(_ob.transfer_id.in_(ids[i : i + 500]), _ob.acked_at_ms.is_(None))
            .order_by(_ob.id)
        ).all()
        for row in rows:
            out.setdefault(row.transfer_id, []).append(row)
    return out


# -- inbox -------------------------------------------------------------------------------------


_INBOX_GET = select(_ib.response).where(_ib.transfer_id == bindparam("tid"),
                                        _ib.kind == bindparam("kind"))
_INBOX_PUT = t.transfer_inbox.insert()


def inbox_get(conn: Connection, transfer_id: str, kind: str) -> bytes | None:
    row = conn.execute(_INBOX_GET, {"tid": transfer_id, "kind": kind}).first()
    return bytes(row[0]) if row else None


def inbox_put(conn: Connection, *, transfer_id: str, kind: str, origin: str, response: bytes,
              now_ms: int) -> None:
    conn.execute(_INBOX_PUT, {"transfer_id": transfer_id, "kind": kind, "origin": origin,
                              "response": response, "received_at_ms": now_ms})




# -- conservation ------------------------------------------------------------------------------

#: Statuses whose serials are accounted to this node: live, locked for export, or final here.
HELD = (Status.ACTIVE, Status.EXPORT_PENDING, Status.RETIRED, Status.EXPIRED, Status.WITHDRAWN)


def held_ranges(conn: Connection) -> Sequence[Row]:
    """``(issuer, serial_start, serial_end, status, id)`` of every bundle whose serials are
    accounted here (see :data:`HELD`)."""
    c = t.bundles.c
    rows = conn.execute(
        select(c.issuer, c.serial_start, c.serial_end, c.status, c.id)
        .where(c.status.in_([int(s) for s in HELD]))
        .order_by(c.issuer, c.serial_start, c.serial_end)
    ).all()
    fresh = [
        (b.issuer, b.serial_start, b.serial_end, b.status, b.id)
        for run in run_repos.iter_runs(conn)
        for b in run.bundles(run_repos.fresh_indexes(conn, run))
    ]
    return list(heapq.merge(rows, fresh, key=lambda r: (r[0], r[1], r[2])))


def issued_ranges(conn: Connection, node_id: str) -> Sequence[Row]:
    """``(serial_start, serial_end)`` of every bundle this node issued (before any split)."""
    c = t.bundles.c
    rows = conn.execute(
        select(c.serial_start, c.serial_end)
        .where(c.issuer == node_id, c.parent_id.is_(None), c.batch_seq.is_not(None))
        .order_by(c.serial_start)
    ).all()
    # records in issuance runs, but those with a row (listed above already)
    fresh = [
        (int(run.serials[i]), int(run.ends[i]))
        for run in run_repos.iter_runs(conn, issuer=node_id)
        for i in run_repos.fresh_indexes(conn, run)
    ]
    return list(heapq.merge(rows, fresh))


__all__ = [name for name in globals() if not name.startswith("_")]
