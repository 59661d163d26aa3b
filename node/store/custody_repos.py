"""Repository of custody and provenance (docs/custody.md).

Issuer side: ``custody`` (where each range of this node's serials is held), ``custody_moves``
(every MoveCustody asked, with its final answer) and ``retirement_reports``.  Holder side:
``provenance`` (the proof of each bundle that came from another node).  Every function takes
an open connection in the caller's unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, select, text, update
from sqlalchemy.engine import Row

from eap.node.store import run_repos
from eap.node.store import schema as t

MOVED, REFUSED = "moved", "refused"
#: Advisory lock serialising custody changes on PostgreSQL (SQLite writers are serial).
_CUSTODY_LOCK = 0x4541505F43555354  # "EAP_CUST"


# -- custody (issuer side) -----------------------------------------------------------------------


def add_range(conn: Connection, start: int, end: int, holder: str, at_ms: int) -> None:
    """Custody of freshly issued serials ``[start, end)``: held by ``holder`` (the issuer)."""
    if start < end:
        conn.execute(insert(t.custody).values(serial_start=start, serial_end=end, holder=holder,
                                              retired=False, ref=None, updated_at_ms=at_ms))


def overlapping(conn: Connection, start: int, end: int, *, lock: bool = False) -> list[Row]:
    """Custody rows meeting ``[start, end)``, by start."""
    c = t.custody.c
    if lock and conn.dialect.name == "postgresql":
        # Moves delete and re-insert rows: a row lock would let a waiter find its row gone.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CUSTODY_LOCK})
    first = select(c.serial_start).where(c.serial_start <= start).order_by(
        c.serial_start.desc()).limit(1).scalar_subquery()
    q = select(t.custody).where(
        or_(c.serial_start == first, and_(c.serial_start > start, c.serial_start < end))
    ).order_by(c.serial_start)
    return [r for r in conn.execute(q).all() if r.serial_end > start]


def holder_of(conn: Connection, start: int, end: int, *,
              lock: bool = False) -> tuple[str, bool] | None:
    """``(holder, retired)`` when one holder has all of ``[start, end)`` in one state, else None
    (serials never issued, or split among holders)."""
    return holding(overlapping(conn, start, end, lock=lock), start, end)


def holding(rows: Sequence[Row], start: int, end: int) -> tuple[str, bool] | None:
    """:func:`holder_of` over rows :func:`overlapping` returned."""
    if not rows or rows[0].serial_start > start:
        return None
    at, found = rows[0].serial_start, {(r.holder, bool(r.retired)) for r in rows}
    for r in rows:
        if r.serial_start != at:
            return None
        at = r.serial_end
    if at < end or len(found) != 1:
        return None
    return found.pop()


def assign(conn: Connection, start: int, end: int, *, holder: str, retired: bool, ref: str,
           at_ms: int, rows: Sequence[Row] | None = None) -> None:
    """Set holder and state of ``[start, end)`` (covered by custody rows, as :func:`holder_of`
    checked), splitting rows at the ends.  ``rows``: :func:`overlapping`'s, if just read."""
    c = t.custody.c
    new: list[dict[str, Any]] = []
    for r in rows if rows is not None else overlapping(conn, start, end, lock=True):
        lo, hi = r.serial_start, r.serial_end
        a, b = max(lo, start), min(hi, end)
        if lo < a:  # the row keeps its left part in place; the moved part is a new row
            conn.execute(update(t.custody).where(c.serial_start == lo).values(serial_end=a))
            new.append({"serial_start": a, "serial_end": b, "holder": holder, "retired": retired,
                        "ref": ref, "updated_at_ms": at_ms})
        else:  # the row starts the moved part: it becomes it
            conn.execute(update(t.custody).where(c.serial_start == lo).values(
                serial_end=b, holder=holder, retired=retired, ref=ref, updated_at_ms=at_ms))
        if b < hi:
            new.append({"serial_start": b, "serial_end": hi, "holder": r.holder,
                        "retired": bool(r.retired), "ref": r.ref, "updated_at_ms": at_ms})
    if new:
        conn.execute(insert(t.custody), new)


def all_ranges(conn: Connection) -> Sequence[Row]:
    """Every custody row, by start."""
    return conn.execute(select(t.custody).order_by(t.custody.c.serial_start)).all()


def issued_cell(conn: Connection, issuer: str, start: int, end: int) -> str | None:
    """Cell of the issued record (an issued bundle, no parent) covering ``[start, end)``."""
    b = t.bundles.c
    row = conn.execute(
        select(b.cell).where(b.issuer == issuer, b.parent_id.is_(None), b.batch_seq.is_not(None),
                             b.serial_start <= start, b.serial_end >= end)
        .order_by(b.serial_start.desc()).limit(1)).first()
    if row is not None:
        return row.cell
    # a record still in its issuance run (every record of a run has the run's cell)
    run = run_repos.run_at(conn, issuer, start)
    return run.cell if run is not None and end <= run.serial_end else None


# -- custody moves and retirement reports (issuer side inboxes) ----------------------------------


def get_move(conn: Connection, transfer_id: str) -> Row | None:
    return conn.execute(select(t.custody_moves).where(
        t.custody_moves.c.transfer_id == transfer_id)).first()


def put_move(conn: Connection, **values: Any) -> None:
    conn.execute(insert(t.custody_moves).values(**values))


def get_report(conn: Connection, claim_id: str) -> Row | None:
    return conn.execute(select(t.retirement_reports).where(
        t.retirement_reports.c.claim_id == claim_id)).first()


def put_report(conn: Connection, **values: Any) -> None:
    conn.execute(insert(t.retirement_reports).values(**values))


def conflicting_reports(conn: Connection) -> Sequence[Row]:
    """Retirement reports that did not match the custody (kept for the audit)."""
    r = t.retirement_reports.c
    return conn.execute(select(t.retirement_reports).where(r.recorded.is_(False))
                        .order_by(r.at_ms)).all()


# -- provenance (holder side) ----------------------------------------------------------------------


_GET_PROVENANCE = select(t.provenance).where(t.provenance.c.bundle_id == bindparam("b"))
_INSERT_PROVENANCE = insert(t.provenance)
_UPDATE_PROVENANCE = update(t.provenance).where(t.provenance.c.bundle_id == bindparam("b"))


def get_provenance(conn: Connection, bundle_id: str) -> Row | None:
    return conn.execute(_GET_PROVENANCE, {"b": bundle_id}).first()


def put_provenance(conn: Connection, bundle_id: str, proof: bytes,
                   custody: bytes | None, *, new: bool = False) -> None:
    """Store a bundle's proof; ``new``: the caller knows no row exists yet."""
    if new or get_provenance(conn, bundle_id) is None:
        conn.execute(_INSERT_PROVENANCE, {"bundle_id": bundle_id, "proof": proof,
                                          "custody": custody})
    else:  # the bundle came back: its newest provenance
        conn.execute(_UPDATE_PROVENANCE, {"b": bundle_id, "proof": proof, "custody": custody})


# -- batches ---------------------------------------------------------------------------------------


_KNOWN_ROOT = select(t.peer_batches.c.merkle_root).where(
    t.peer_batches.c.issuer == bindparam("i"), t.peer_batches.c.seq == bindparam("s"))


def known_root(conn: Connection, issuer: str, seq: int) -> bytes | None:
    """The Merkle root of an issuer's batch seq as this node synced it (None if not synced)."""
    row = conn.execute(_KNOWN_ROOT, {"i": issuer, "s": seq}).first()
    return bytes(row.merkle_root) if row else None


_BATCH_SEQ_OF = select(t.bundles.c.batch_seq).where(t.bundles.c.id == bindparam("b"))
_OWN_BATCH = select(t.batches).where(t.batches.c.seq == bindparam("s"))


def batch_seq_of(conn: Connection, bundle_id: str) -> int | None:
    """The issuance batch of a bundle issued here (None for splits and imports)."""
    seq = conn.execute(_BATCH_SEQ_OF, {"b": bundle_id}).scalar()
    if seq is not None:
        return int(seq)
    key = run_repos.parse_id(bundle_id)
    return None if key is None else run_repos.batch_seq_at(conn, *key)


def own_batch(conn: Connection, seq: int) -> Row | None:
    return conn.execute(_OWN_BATCH, {"s": seq}).first()
