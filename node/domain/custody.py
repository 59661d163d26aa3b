"""Custody: the issuer is the authority of record for its own serials (docs/custody.md).

Each issuer keeps, for every serial it issued, the node holding it (``custody`` table).  A range
of a third party's serials moves between nodes only when its issuer moves the custody
(:func:`move`, answering the source's MoveCustody) and signs a :class:`CustodyRecord` of the
move; the destination activates an import only with that record.  When the issuer is the
source, the move is local to its decision (:func:`move_local`); when it is the destination, it
checks its custody when preparing (:func:`check_return`) and takes the range back on commit
(:func:`take_back`).  Retirements of a third party's serials are reported to their issuer
(:func:`report_retirement`, through the outbox) and marked in its custody
(:func:`record_retirement`).

Every function runs in the caller's transaction; nothing here talks to a peer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from eap.node.domain import cells, provenance
from eap.node.errors import EapError, FailedPrecondition
from eap.node.store import custody_repos as cr
from eap.node.store import transfer_repos as tr
from eap.node.telemetry.ops import traceparent
from eap.v1 import federation_pb2 as fed
from eap.v1 import types_pb2 as pb

#: Outbox message kinds of this module (beside the transfer engine's prepare/commit/abort).
CUSTODY, RETIRE = "custody", "retire"


def move(conn: Connection, *, me: str, keys: Any, origin: str, req: fed.CustodyRequest,
         trusted: bool, busy: bool = False, now_ms: int) -> fed.CustodyAnswer:
    """The issuer's answer to a MoveCustody it has not answered before (recorded as final).

    Moves ``[serial_start, serial_end)`` from ``origin`` to ``req.to_node`` if ``origin``
    holds all of it (not retired), the request has not expired, the destination is a trusted
    peer, and the serials are not ``busy`` (being imported by the issuer itself); refuses
    otherwise.
    """
    s, e = req.serial_start, req.serial_end
    reason = None
    if now_ms >= req.expires_at_ms:
        reason = "the custody request arrived after the transfer's expiry"
    elif not trusted:
        reason = f"{req.to_node[:128]!r} is not on the issuer's trust list"
    elif req.to_node in (origin, me):
        reason = "the destination must be another node than the source and the issuer"
    elif busy:
        reason = f"serials {s}-{e} are being transferred back to the issuer {me}"
    else:
        held = cr.holder_of(conn, s, e, lock=True)
        if held is None:
            reason = f"serials {s}-{e} were not issued as one custody range by {me}"
        elif held[0] != origin:
            reason = f"serials {s}-{e} are not held by {origin} (the issuer's custody)"
        elif held[1]:
            reason = f"serials {s}-{e} were retired at {origin}"
    if reason is not None:
        cr.put_move(conn, transfer_id=req.transfer_id, origin=origin, to_node=req.to_node[:253],
                    serial_start=s, serial_end=e, outcome=cr.REFUSED, reason=reason[:500],
                    record=None, at_ms=now_ms)
        return fed.CustodyAnswer(transfer_id=req.transfer_id,
                                 outcome=fed.CUSTODY_OUTCOME_REFUSED, reason=reason[:500])
    signed = _move_and_sign(conn, me=me, keys=keys, tid=req.transfer_id, start=s, end=e,
                            frm=origin, to=req.to_node, now_ms=now_ms)
    cr.put_move(conn, transfer_id=req.transfer_id, origin=origin, to_node=req.to_node,
                serial_start=s, serial_end=e, outcome=cr.MOVED, reason=None,
                record=signed.SerializeToString(), at_ms=now_ms)
    return fed.CustodyAnswer(transfer_id=req.transfer_id, outcome=fed.CUSTODY_OUTCOME_MOVED,
                             custody=signed)


def replay(row: Any) -> fed.CustodyAnswer:
    """The recorded answer to a MoveCustody asked before."""
    if row.outcome == cr.MOVED:
        return fed.CustodyAnswer(transfer_id=row.transfer_id,
                                 outcome=fed.CUSTODY_OUTCOME_MOVED,
                                 custody=pb.Signed.FromString(bytes(row.record)))
    return fed.CustodyAnswer(transfer_id=row.transfer_id, outcome=fed.CUSTODY_OUTCOME_REFUSED,
                             reason=row.reason or "")


def move_local(conn: Connection, *, me: str, keys: Any, tid: str, start: int, end: int,
               to: str, cell: str, now_ms: int) -> pb.Signed:
    """The issuer is the source: move its own serials to ``to`` inside its commit decision
    (``cell``: the exported bundle's, which is its record's).

    Raises:
        EapError: its custody does not have the range here (the store is inconsistent).
    """
    rows = cr.overlapping(conn, start, end, lock=True)
    held = cr.holding(rows, start, end)
    if held != (me, False):
        raise EapError(f"custody of {me}/{start}-{end} is {held}, not held here; "
                       "refusing to export it")
    return _move_and_sign(conn, me=me, keys=keys, tid=tid, start=start, end=end, frm=me, to=to,
                          now_ms=now_ms, cell=cell, rows=rows)


def check_return(conn: Connection, *, me: str, origin: str, start: int, end: int) -> str | None:
    """The issuer is the destination: why it refuses its own serials back from ``origin``."""
    held = cr.holder_of(conn, start, end, lock=True)
    if held is None:
        return f"serials {start}-{end} were not issued as one custody range by {me}"
    if held[0] != origin:
        return f"serials {start}-{end} are not held by {origin} (custody: {held[0]})"
    if held[1]:
        return f"serials {start}-{end} were retired at {origin}"
    return None


def take_back(conn: Connection, *, me: str, origin: str, tid: str, start: int, end: int,
              now_ms: int) -> None:
    """The issuer is the destination and the transfer committed: custody comes home.

    Raises:
        FailedPrecondition: its custody does not have the range at ``origin`` (any more).
    """
    why = check_return(conn, me=me, origin=origin, start=start, end=end)
    if why is not None:
        raise FailedPrecondition(f"transfer {tid}: {why}")
    cr.assign(conn, start, end, holder=me, retired=False, ref=tid, at_ms=now_ms)


def report_retirement(conn: Connection, claim_id: str, bundle: Any, at_ms: int) -> None:
    """Queue the report of a retirement of another issuer's serials (same transaction)."""
    report = fed.RetirementReport(claim_id=claim_id, issuer=bundle.issuer,
                                  serial_start=bundle.serial_start,
                                  serial_end=bundle.serial_end, retired_at_ms=at_ms)
    tr.outbox_put(conn, transfer_id=claim_id, peer=bundle.issuer, kind=RETIRE,
                  payload=report.SerializeToString(), now_ms=at_ms, next_attempt_at_ms=0,
                  traceparent=traceparent())


def record_retirement(conn: Connection, *, origin: str, report: fed.RetirementReport,
                      now_ms: int) -> fed.RetirementAck:
    """The issuer marks a reported retirement in its custody (or keeps it as a conflict)."""
    s, e = report.serial_start, report.serial_end
    held = cr.holder_of(conn, s, e, lock=True)
    if held == (origin, False):
        cr.assign(conn, s, e, holder=origin, retired=True, ref=report.claim_id, at_ms=now_ms)
        reason = None
    elif held == (origin, True):
        reason = f"serials {s}-{e} were already reported retired at {origin}"
    else:
        reason = (f"serials {s}-{e} are not held by {origin} in the issuer's custody "
                  f"({held[0] if held else 'not one range'})")
    cr.put_report(conn, claim_id=report.claim_id, origin=origin, serial_start=s, serial_end=e,
                  recorded=reason is None, reason=reason, at_ms=now_ms)
    return fed.RetirementAck(claim_id=report.claim_id, recorded=reason is None,
                             reason=reason or "")


def _move_and_sign(conn: Connection, *, me: str, keys: Any, tid: str, start: int, end: int,
                   frm: str, to: str, now_ms: int, cell: str | None = None,
                   rows: Any = None) -> pb.Signed:
    cr.assign(conn, start, end, holder=to, retired=False, ref=tid, at_ms=now_ms, rows=rows)
    if cell is None:
        cell = cr.issued_cell(conn, me, start, end) or ""
    record = pb.CustodyRecord(issuer=me, serial_start=start, serial_end=end, transfer_id=tid,
                              from_node=frm, to_node=to, cell=cell, moved_at_ms=now_ms)
    return provenance.sign(keys, me, provenance.CUSTODY_TAG, record.SerializeToString())


def check_record(rec: pb.CustodyRecord, *, tid: str, issuer: str, start: int, end: int,
                 frm: str, to: str) -> str | None:
    """Why a verified custody record is not the one of this transfer, or None."""
    if (rec.transfer_id, rec.issuer, rec.serial_start, rec.serial_end, rec.from_node,
            rec.to_node) != (tid, issuer, start, end, frm, to):
        return (f"custody record is for {rec.transfer_id[:200]} {rec.issuer[:128]}/"
                f"{rec.serial_start}-{rec.serial_end} {rec.from_node[:128]} -> "
                f"{rec.to_node[:128]}, not this transfer")
    return cells.cell_problem(rec.cell)
