"""This node's holdings statement: what it accounts for of every issuer's serials.

A :class:`~eap.v1.types_pb2.HoldingsStatement` lists, per issuer, the ranges this node holds
ACTIVE, final (RETIRED, EXPIRED, WITHDRAWN), locked for an undecided export (EXPORT_PENDING)
and reserved by PREPARED incoming transfers; for the node's own serials also the Wh it issued
and its custody (where each range is held).  SPLIT parents and EXPORTED copies are not
holdings.  Ranges come sorted by start and are merged where adjacent; ranges that overlap are
listed as they are (never merged), so a duplicate inside one node stays visible to an auditor.

The statement is signed with :data:`~eap.node.domain.provenance.HOLDINGS_TAG`, bound to the
requester (``audience``) and its nonce.  :mod:`eap.node.domain.reconcile` checks a set of
statements; :mod:`eap.node.federation.audit` gathers them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from eap.node.domain import provenance
from eap.node.store import holdings_repos as hr
from eap.v1 import types_pb2 as pb

#: Longest nonce a requester may send (bytes).
MAX_NONCE = 64


def _add(ranges: Any, start: int, end: int) -> None:
    """Append ``[start, end)`` to a repeated SerialRange, merging it with an adjacent last one."""
    if ranges and ranges[-1].end == start:
        ranges[-1].end = end
    else:
        ranges.add(start=start, end=end)


def statement(conn: Connection, me: str, *, audience: str, nonce: bytes,
              at_ms: int) -> pb.HoldingsStatement:
    """The holdings of this node ``me`` as its store has them in ``conn``'s snapshot."""
    entries: dict[str, pb.IssuerHoldings] = {me: pb.IssuerHoldings(issuer=me)}

    def entry(issuer: str) -> pb.IssuerHoldings:
        found = entries.get(issuer)
        if found is None:
            found = entries[issuer] = pb.IssuerHoldings(issuer=issuer)
        return found

    for issuer, start, end, kind in hr.held(conn):
        _add(getattr(entry(issuer), kind), start, end)
    for issuer, start, end in hr.importing(conn):
        _add(entry(issuer).importing, start, end)
    own = entries[me]
    issued = 0
    for start, end, holder, retired in hr.custody(conn):
        issued += end - start
        last = own.custody[-1] if own.custody else None
        if (last is not None and last.end == start and last.holder == holder
                and last.retired == retired):
            last.end = end
        else:
            own.custody.add(start=start, end=end, holder=holder, retired=retired)
    own.issued_wh = issued
    return pb.HoldingsStatement(node_id=me, at_ms=at_ms,
                                issuers=[entries[k] for k in sorted(entries)],
                                audience=audience, nonce=nonce)


def signed(conn: Connection, me: str, keys: Any, *, audience: str, nonce: bytes,
           at_ms: int) -> pb.Signed:
    """:func:`statement`, signed by this node's active key."""
    body = statement(conn, me, audience=audience, nonce=nonce, at_ms=at_ms)
    return provenance.sign(keys, me, provenance.HOLDINGS_TAG, body.SerializeToString())


def open_statement(signed_: pb.Signed, verify_sig: provenance.SignatureCheck, *,
                   signer: str) -> pb.HoldingsStatement:
    """The verified statement of a ``Signed`` by ``signer`` (its own node id inside too).

    Raises:
        ProofError: wrong signer, bad signature, or not a statement of ``signer``.
    """
    body = provenance.open_signed(signed_, provenance.HOLDINGS_TAG, verify_sig, signer=signer)
    try:
        stmt = pb.HoldingsStatement.FromString(body)
    except Exception as exc:
        raise provenance.ProofError("holdings body is not a HoldingsStatement") from exc
    if stmt.node_id != signer:
        raise provenance.ProofError(
            f"statement of {stmt.node_id[:128]!r} signed by {signer!r}")
    return stmt
