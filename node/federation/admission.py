"""What a destination node admits: the checks an incoming transfer must pass (DESIGN §3, §6).

A peer with a valid certificate may still lie, so every field of a ``TransferPrepare`` is
checked here before anything is stored: the bundle's own rules (:func:`bundle_violation`),
the expiry, the destination account, the price, the range's provenance (a batch proof that
verifies with the issuer's key and names a batch this node knows, :func:`provenance_refusal`)
and that no serial of the range is held or being imported here (:func:`refusal`).  A commit
of another issuer's serials also needs that issuer's signed custody record of the move
(:func:`check_custody`).  The transfer engine (:mod:`.transfers`) calls these inside its
prepare and commit transactions; a refusal is stored as the transfer's ABORTED reason and
answered to the source.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from sqlalchemy import Connection

from eap.node.api import convert
from eap.node.domain import cells, custody, provenance
from eap.node.domain import obligations as obl
from eap.node.domain.rules import ACCOUNT_RE, NODE_ID_RE
from eap.node.errors import FailedPrecondition
from eap.node.records.enums import Status
from eap.node.records.models import Bundle
from eap.node.store import custody_repos as cr
from eap.node.store import transfer_repos as tr
from eap.v1 import federation_pb2 as fed
from eap.v1 import types_pb2 as pb

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BUNDLE_ID = re.compile(r"^(?P<issuer>[a-z0-9.-]{1,128})/(?P<start>\d{1,19})-(?P<end>\d{1,19})$")
#: Longest prepare lifetime a destination accepts.
MAX_TTL_S = 24 * 3600
#: Serials and Wh are at most this (so sums stay within 64 bits).
MAX_SERIAL = 2**62
#: The stored state of an admitted import waiting for the source's decision (one of
#: :mod:`.transfers`' states).
PREPARED = "prepared"


def refusal(
    conn: Connection,
    *,
    me: str,
    origin: str,
    msg: fed.TransferPrepare,
    now: int,
    sig: provenance.SignatureCheck,
) -> str | None:
    """Why this node refuses the import, or None (DESIGN §3 rules, range, account)."""
    if not msg.HasField("bundle"):
        return "no bundle"
    if msg.expires_at_ms <= now:
        return "the prepare arrived after its expiry"
    if msg.expires_at_ms > now + (MAX_TTL_S + 60) * 1000:
        return "expiry too far in the future"
    b = msg.bundle
    why = bundle_violation(b)
    if why:
        return f"bundle {b.id[:200]!r}: {why}"
    if b.held_by != origin:
        return f"the bundle is announced as held by {b.held_by!r}, not by the sender {origin}"
    parent = msg.parent_lineage_hash
    if (
        b.parent_id
        and parent
        and (
            not _HEX64.match(parent)
            or b.lineage_hash != provenance.lineage(bytes.fromhex(parent), b.id)
        )
    ):
        return "lineage hash does not chain to the parent's"
    if not ACCOUNT_RE.match(msg.to_account or ""):
        return "malformed destination account"
    if not tr.account_exists(conn, msg.to_account):
        return f"no account {msg.to_account} on {me}"
    if msg.HasField("price") or msg.seller:
        why = obl.price_violation(msg.price.amount_minor, msg.price.currency)
        why = why or obl.seller_violation(msg.seller, origin)
        if why:
            return f"priced trade: {why}"
    why = provenance_refusal(conn, me=me, origin=origin, msg=msg, sig=sig)
    if why:
        return why
    # Every row of these serials here: live/final ones hold them; an exported copy may
    # come back (same id revived); issued-here serials must have left through an export.
    rows = tr.overlapping(conn, b.issuer, b.serial_start, b.serial_end)
    held = [r for r in rows if r.status not in (Status.SPLIT, Status.EXPORTED)]
    if held:
        names = ", ".join(f"{r.id} ({Status(r.status).name})" for r in held[:5])
        return f"serials already held on {me}: {names}"
    same = [r for r in rows if r.id == b.id and r.status != Status.EXPORTED]
    if same:
        return f"bundle {b.id} is already on {me} ({Status(same[0].status).name})"
    busy = tr.importing(conn, b.issuer, b.serial_start, b.serial_end, PREPARED)
    if busy:
        return f"serials already being imported by transfer {busy[0].id}"
    return None


def provenance_refusal(
    conn: Connection,
    *,
    me: str,
    origin: str,
    msg: fed.TransferPrepare,
    sig: provenance.SignatureCheck,
) -> str | None:
    """Why the range's provenance does not convince this node, or None (docs/custody.md).

    The proof must verify with the issuer's key from the trust list (or this node's own,
    for serials coming home), prove exactly the announced bundle, and name a batch that
    does not contradict one this node knows; serials of this node must be in its custody
    at the sender.
    """
    b = msg.bundle
    if not msg.HasField("proof"):
        return "no provenance: a prepare must carry the range's RecordProof"
    try:
        v = provenance.verify(msg.proof, sig, bundle=b)
    except provenance.ProofError as exc:
        return f"provenance: {exc.reason}"
    root = bytes(msg.proof.batch.merkle_root)
    if b.issuer == me:
        own = cr.own_batch(conn, v.seq)
        if own is None or bytes(own.merkle_root) != root:
            return f"provenance: batch #{v.seq} is not one this node issued"
        return custody.check_return(
            conn, me=me, origin=origin, start=b.serial_start, end=b.serial_end
        )
    known = cr.known_root(conn, b.issuer, v.seq)
    if known is None:
        return (
            f"provenance: batch {b.issuer}#{v.seq} is not one {b.issuer} has published "
            f"to {me} (not served by its PullBatches)"
        )
    if known != root:
        return (
            f"provenance: {b.issuer} signed two different batches #{v.seq} "
            "(equivocation); refusing this proof"
        )
    return None


def check_custody(
    rec: Any, signed: pb.Signed | None, sig: provenance.SignatureCheck, *, me: str
) -> pb.CustodyRecord:
    """The issuer's custody record of an import's move, verified (FailedPrecondition
    otherwise: the import stays PREPARED)."""
    if signed is None:
        raise FailedPrecondition(
            f"transfer {rec.id}: COMMIT without the issuer "
            f"{rec.issuer}'s custody record; staying PREPARED"
        )
    try:
        cust = provenance.custody_record(signed, sig, issuer=rec.issuer)
    except provenance.ProofError as exc:
        raise FailedPrecondition(f"transfer {rec.id}: custody record: {exc.reason}") from exc
    why = custody.check_record(
        cust,
        tid=rec.id,
        issuer=rec.issuer,
        start=rec.serial_start,
        end=rec.serial_end,
        frm=rec.peer,
        to=me,
    )
    if why:
        raise FailedPrecondition(f"transfer {rec.id}: {why}")
    return cust


def bundle_violation(b: pb.RecordBundle) -> str | None:
    """First rule an announced bundle breaks (DESIGN §3), or None."""
    if not NODE_ID_RE.match(b.issuer or ""):
        return "malformed issuer"
    if not 0 <= b.serial_start < b.serial_end <= MAX_SERIAL:
        return "serial range must satisfy 0 <= start < end"
    if b.id != f"{b.issuer}/{b.serial_start}-{b.serial_end}":
        return "id must be <issuer>/<serial_start>-<serial_end>"
    a = b.attributes
    why = provenance.attribute_violation(
        a.source,
        a.technology,
        a.renewable_ppm,
        a.carbon_mg_per_kwh,
        a.zone,
        a.interval.start_unix,
        a.interval.end_unix,
    )
    if why:
        return why
    if len(a.cell) > 16 or any(ord(c) < 0x20 for c in a.cell):
        return "malformed cell"
    why = cells.cell_problem(a.cell)
    if why:
        return why
    if not 1 <= len(a.device_id) <= 64 or any(ord(c) < 0x20 for c in a.device_id):
        return "malformed device id"
    if not _HEX64.match(b.lineage_hash or ""):
        return "lineage hash must be 64 hex digits"
    if b.parent_id:
        p = _BUNDLE_ID.match(b.parent_id)
        if (
            p is None
            or p.group("issuer") != b.issuer
            or not int(p.group("start")) <= b.serial_start < b.serial_end <= int(p.group("end"))
            or b.parent_id == b.id
        ):
            return "parent must be a larger range of the same issuer"
    return None


def bundle_from_wire(b: pb.RecordBundle, *, owner: str, at_ms: int) -> Bundle:
    """The live bundle an admitted import becomes: owned by ``owner``, active and held here
    (the sender's status, owner and holder on the wire are not taken)."""
    return dataclasses.replace(
        convert.bundle_from(b),
        owner=owner,
        status=int(Status.ACTIVE),
        issued_at_ms=b.issued_at_ms or at_ms,
        held_by=None,
    )
