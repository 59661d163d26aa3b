"""Issuer side of custody over the federation: the MoveCustody and ReportRetirement handlers.

Thin: parse and check the payload, then one transaction of :mod:`eap.node.domain.custody`.
Both are idempotent by their key (transfer id, claim id): the first answer is recorded in the
same transaction as the change and replayed to duplicates.  The source side (asking for the
move inside a transfer, reporting retirements) is the transfer engine's outbox
(:mod:`eap.node.federation.transfers`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy.exc import IntegrityError

from eap.node.domain import custody
from eap.node.domain.rules import NODE_ID_RE
from eap.node.errors import Aborted, PermissionDenied, invalid
from eap.node.federation import crashpoints
from eap.node.federation.peers import TrustList
from eap.node.store import custody_repos as cr
from eap.node.store import transfer_repos as tr
from eap.v1 import federation_pb2 as fed

log = logging.getLogger(__name__)

PT_CUSTODY_REQUEST = fed.CustodyRequest.DESCRIPTOR.full_name
PT_CUSTODY_ANSWER = fed.CustodyAnswer.DESCRIPTOR.full_name
PT_RETIREMENT = fed.RetirementReport.DESCRIPTOR.full_name
PT_RETIREMENT_ACK = fed.RetirementAck.DESCRIPTOR.full_name

_TRANSFER_ID = re.compile(r"^(?P<node>[a-z0-9.-]{1,128})/[A-Za-z0-9-]{1,64}$")
_CLAIM_ID = re.compile(r"^(?P<node>[a-z0-9.-]{1,128})/claim/\d{1,19}$")
_MAX_SERIAL = 2**62


class CustodyService:
    """The custody RPCs of one issuer node."""

    def __init__(self, node: Any, trust: TrustList | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.me: str = node.node_id
        self.trust = trust or TrustList(node.store, node.node_id)
        self._clock = clock

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def on_move_custody(self, envelope: Any) -> tuple[str, bytes]:
        """MoveCustody from a transfer's source (docs/custody.md §3).

        Raises:
            InvalidArgument: malformed request (nothing recorded).
            PermissionDenied: the transfer is not the caller's, or this node is not the issuer.
        """
        req = _parse(fed.CustodyRequest, envelope.payload)
        m = _TRANSFER_ID.match(req.transfer_id or "")
        if m is None:
            raise invalid("transfer_id", "must be <source node>/<id>")
        if m.group("node") != envelope.origin:
            raise PermissionDenied(f"transfer {req.transfer_id} is not {envelope.origin}'s")
        if req.issuer != self.me:
            raise PermissionDenied(f"{self.me} is not the issuer of {req.issuer[:128]!r} serials")
        _check_range(req.serial_start, req.serial_end)
        if not NODE_ID_RE.match(req.to_node or ""):
            raise invalid("to_node", "must be a node id")
        trusted = self.trust.get(req.to_node) is not None
        for _ in range(3):
            try:
                with self.node.store.transaction() as conn:
                    row = cr.get_move(conn, req.transfer_id)
                    if row is not None:
                        if row.origin != envelope.origin:
                            raise PermissionDenied(f"transfer {req.transfer_id} is not "
                                                   f"{envelope.origin}'s")
                        answer = custody.replay(row)
                    else:
                        busy = bool(tr.importing(conn, self.me, req.serial_start,
                                                 req.serial_end, "prepared"))
                        answer = custody.move(conn, me=self.me, keys=self.node.keys,
                                              origin=envelope.origin, req=req, trusted=trusted,
                                              busy=busy, now_ms=self.now_ms())
                        log.info("custody %s: %s/%d-%d from %s to %s: %s%s",
                                 req.transfer_id, self.me, req.serial_start, req.serial_end,
                                 envelope.origin, req.to_node,
                                 fed.CustodyOutcome.Name(answer.outcome),
                                 f" ({answer.reason})" if answer.reason else "")
                        crashpoints.hit("issuer.in_custody_txn")
                crashpoints.hit("issuer.after_custody_commit")
                return PT_CUSTODY_ANSWER, answer.SerializeToString()
            except IntegrityError:  # a concurrent duplicate recorded it first: replay it
                continue
        raise Aborted(f"custody for {req.transfer_id}: concurrent duplicates; retry")

    def on_report_retirement(self, envelope: Any) -> tuple[str, bytes]:
        """ReportRetirement from a node that retired serials of this issuer."""
        rep = _parse(fed.RetirementReport, envelope.payload)
        m = _CLAIM_ID.match(rep.claim_id or "")
        if m is None:
            raise invalid("claim_id", "must be <node>/claim/<seq>")
        if m.group("node") != envelope.origin:
            raise PermissionDenied(f"claim {rep.claim_id} is not {envelope.origin}'s")
        if rep.issuer != self.me:
            raise PermissionDenied(f"{self.me} is not the issuer of {rep.issuer[:128]!r} serials")
        _check_range(rep.serial_start, rep.serial_end)
        for _ in range(3):
            try:
                with self.node.store.transaction() as conn:
                    row = cr.get_report(conn, rep.claim_id)
                    if row is not None:
                        ack = fed.RetirementAck(claim_id=row.claim_id,
                                                recorded=bool(row.recorded),
                                                reason=row.reason or "")
                    else:
                        ack = custody.record_retirement(conn, origin=envelope.origin,
                                                        report=rep, now_ms=self.now_ms())
                        if not ack.recorded:
                            log.warning("retirement %s reported by %s conflicts with custody: %s",
                                        rep.claim_id, envelope.origin, ack.reason)
                return PT_RETIREMENT_ACK, ack.SerializeToString()
            except IntegrityError:
                continue
        raise Aborted(f"retirement {rep.claim_id}: concurrent duplicates; retry")


def _parse(cls, payload: bytes):
    try:
        return cls.FromString(payload)
    except DecodeError as exc:
        raise invalid("payload", f"not a {cls.DESCRIPTOR.full_name}") from exc


def _check_range(start: int, end: int) -> None:
    if not 0 <= start < end <= _MAX_SERIAL:
        raise invalid("serial_start", "serial range must satisfy 0 <= start < end <= 2^62")
