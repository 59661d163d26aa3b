"""Repository of what a node accounts for, read for its holdings statement (docs/federation.md).

Three ordered, streamed reads over the caller's connection: the bundles whose serials are
accounted here (by issuer, then start), the ranges of PREPARED incoming transfers (same order)
and the issuer's custody rows (by start).  Rows are yielded in pages so a node with millions of
bundles never holds them all at once; :mod:`eap.node.domain.holdings` merges adjacent ranges as
they come.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from sqlalchemy import Connection, select, text

from eap.node.records.enums import Status
from eap.node.store import run_repos
from eap.node.store import schema as t
from eap.node.store.transfer_repos import IN

#: Rows fetched per round trip while streaming.
PAGE = 2000
_STREAM = {"yield_per": PAGE}

#: Bundle statuses that are holdings, and the statement list each goes to.  SPLIT parents and
#: EXPORTED copies are not holdings: their serials are accounted by the children / the
#: destination.
KIND_OF_STATUS = {
    int(Status.ACTIVE): "active",
    int(Status.RETIRED): "retired",
    int(Status.EXPIRED): "retired",
    int(Status.WITHDRAWN): "retired",
    int(Status.EXPORT_PENDING): "exporting",
}


def snapshot(conn: Connection) -> None:
    """Make the reads of this (fresh) transaction one snapshot: on PostgreSQL, REPEATABLE READ
    (its default, READ COMMITTED, would let a transfer commit between two reads); a SQLite read
    transaction is one snapshot already.  Must be the transaction's first statement."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))


def held(conn: Connection) -> Iterator[tuple[str, int, int, str]]:
    """``(issuer, start, end, kind)`` of every bundle accounted here, by issuer then start;
    ``kind`` is ``active``, ``retired`` or ``exporting`` (:data:`KIND_OF_STATUS`)."""
    c = t.bundles.c
    q = (select(c.issuer, c.serial_start, c.serial_end, c.status)
         .where(c.status.in_(list(KIND_OF_STATUS)))
         .order_by(c.issuer, c.serial_start, c.serial_end))
    rows = ((r.issuer, int(r.serial_start), int(r.serial_end), KIND_OF_STATUS[int(r.status)])
            for r in conn.execute(q, execution_options=_STREAM))
    yield from heapq.merge(rows, _fresh(conn))


def _fresh(conn: Connection) -> Iterator[tuple[str, int, int, str]]:
    """This node's records still in their issuance runs (ACTIVE), in the same order."""
    for run in run_repos.iter_runs(conn):
        idx = run_repos.fresh_indexes(conn, run)
        serials, ends = run.serials.tolist(), run.ends.tolist()
        for i in idx:
            yield run.issuer, serials[i], ends[i], "active"


def importing(conn: Connection, state: str = "prepared") -> Iterator[tuple[str, int, int]]:
    """``(issuer, start, end)`` of incoming transfers in ``state`` (reserved, not live yet),
    by issuer then start."""
    c = t.transfers.c
    q = (select(c.issuer, c.serial_start, c.serial_end)
         .where(c.direction == IN, c.state == state, c.issuer.is_not(None),
                c.serial_start.is_not(None), c.serial_end.is_not(None))
         .order_by(c.issuer, c.serial_start, c.serial_end))
    for r in conn.execute(q, execution_options=_STREAM):
        yield r.issuer, int(r.serial_start), int(r.serial_end)


def custody(conn: Connection) -> Iterator[tuple[int, int, str, bool]]:
    """``(start, end, holder, retired)`` of this issuer's custody rows, by start."""
    c = t.custody.c
    q = select(c.serial_start, c.serial_end, c.holder, c.retired).order_by(c.serial_start)
    for r in conn.execute(q, execution_options=_STREAM):
        yield int(r.serial_start), int(r.serial_end), r.holder, bool(r.retired)
