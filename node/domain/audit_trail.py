"""Audit trail of reads of personal data: what is recorded, the signed head, verification.

Personal fields (``docs/privacy.md``): an account's label and identity, a device's exact
location, meter id, local reference and attestation reference, a claim's beneficiary.  Every
read that returns any of them — through the CLI, the gRPC API or in-process — appends one row to
the hash-chained log of :mod:`eap.node.store.audit_repos`: who (principal and channel), the
purpose, what was read, how many items, which fields, and which accounts' data.

The head (row count and last hash) is signed with the node's active key in the same
transaction as the append.  :func:`verify` recomputes the chain, checks the subjects index and
the head's signature, and (given an externally kept head) that the log still extends it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from eap.node.crypto import KeyRing
from eap.node.domain.rules import ACCOUNT_RE
from eap.node.errors import EapError, InvalidArgument, PermissionDenied
from eap.node.records.enums import Purpose
from eap.node.records.models import AuditEntry, Principal
from eap.node.store import Store
from eap.node.store import audit_repos as ar

_ACCOUNT_FIELDS = ("label", "identity")
_DEVICE_FIELDS = ("local_ref", "latitude", "longitude", "meter_id", "attestation_ref")


def disclosed(what: str, purpose: Purpose, items: Iterable[Any]) -> tuple[list[str], tuple]:
    """``(accounts whose personal data is in items, personal fields disclosed)`` of a read
    with ``purpose`` (after redaction); no fields means nothing personal was disclosed."""
    items = list(items)
    if what == "accounts":
        if purpose == Purpose.OPERATIONS:
            fields = _ACCOUNT_FIELDS
        elif purpose == Purpose.HOLDINGS:
            fields = ("label",)
        else:
            fields = ()
        return [a.id for a in items], fields
    if what == "devices":
        fields = _DEVICE_FIELDS if purpose == Purpose.OPERATIONS else ()
        return [d.owner for d in items], fields
    if what == "claims":
        return [c.bundle.owner for c in items], ("beneficiary",)
    if what == "matching":  # a consumer's claims by hour (its consumption profile)
        return [], ("claims", "consumption")
    if what == "audit_log":
        return sorted({a for e in items for a in e.accounts}), ("audit_entries",)
    raise ValueError(f"unknown read {what!r}")


def record(
    conn: Connection,
    keys: KeyRing,
    node_id: str,
    *,
    at_ms: int,
    principal: Principal,
    purpose: Purpose,
    what: str,
    items: list[Any],
    subjects: list[str] | None = None,
) -> AuditEntry | None:
    """Append the audit row of a read (none when it disclosed nothing personal) and re-sign
    the head, inside the read's own transaction."""
    accounts, fields = disclosed(what, purpose, items)
    if subjects is not None:
        accounts = subjects
    if not items or not fields:
        return None
    entry = ar.append(
        conn,
        at_ms=at_ms,
        principal=principal.name,
        via=principal.via,
        purpose=purpose.name,
        what=what,
        count=len(items),
        accounts=[a for a in accounts if a],
        fields=fields,
    )
    key_id, sig = keys.sign(ar.head_message(node_id, entry.seq, entry.row_hash))
    ar.set_head(
        conn,
        count=entry.seq,
        last_hash=entry.row_hash,
        at_ms=at_ms,
        key_id=key_id,
        signature=sig.hex(),
    )
    return entry


@dataclass
class Verification:
    """Outcome of :func:`verify`."""

    ok: bool
    count: int
    last_hash: str
    head_count: int
    head_hash: str
    head_signed_by: str
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "last_hash": self.last_hash,
            "head": {
                "count": self.head_count,
                "last_hash": self.head_hash,
                "signed_by": self.head_signed_by,
            },
            "problems": list(self.problems),
        }


def parse_expected_head(value: str) -> tuple[int, str]:
    """``COUNT:HASH`` as printed by ``audit-log verify`` (InvalidArgument otherwise)."""
    count, _, digest = value.partition(":")
    if not count.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidArgument(
            "invalid expected head",
            [_fv("expect", "COUNT:HASH, e.g. 42:<64 lowercase hex digits>")],
        )
    return int(count), digest


def verify(
    store: Store, keys: KeyRing, node_id: str, *, expect: tuple[int, str] | None = None
) -> Verification:
    """Recompute the chain and check it against the subjects index, the signed head and the
    optional externally kept ``expect`` = (count, hash) of an earlier head."""
    problems: list[str] = []
    prev, n = ar.GENESIS, 0
    seen: dict[int, str] = {}
    wanted: set[tuple[str, int]] = set()
    with store.read() as conn:
        head = ar.head(conn)
        for _id, row in ar.stored_rows(conn):
            n += 1
            try:
                e = ar.entry_of(row)
            except ValueError as exc:
                problems.append(str(exc))
                prev = row.row_hash
                continue
            if e.seq != n:
                problems.append(f"row {n} in order carries seq {e.seq}: rows deleted or reordered")
            if e.prev_hash != prev:
                problems.append(f"seq {e.seq}: prev_hash does not match the previous row's hash")
            digest = ar.row_digest(
                seq=e.seq,
                at_ms=e.at_ms,
                principal=e.principal,
                via=e.via,
                purpose=e.purpose,
                what=e.what,
                count=e.count,
                accounts=e.accounts,
                fields=e.fields,
                prev_hash=e.prev_hash,
            )
            if digest != e.row_hash:
                problems.append(f"seq {e.seq}: content does not match its row_hash (edited)")
            if expect and e.seq == expect[0]:
                seen[e.seq] = e.row_hash
            wanted |= {(a, e.seq) for a in e.accounts}
            prev = e.row_hash
        index = ar.subjects(conn)
    if index != wanted:
        problems.append(
            f"audit_subjects differs from the chain: {len(wanted - index)} missing, "
            f"{len(index - wanted)} not in any row"
        )
    head_count, head_hash, signer = 0, ar.GENESIS, ""
    if head is None:
        problems.append("no audit head row")
    else:
        head_count, head_hash, signer = head.count, head.last_hash, head.key_id
        if (head.count, head.last_hash) != (n, prev):
            problems.append(
                f"head says {head.count} rows ending {head.last_hash[:16]}…, the log has {n} "
                f"ending {prev[:16]}…: rows were removed or added outside the node"
            )
        if head.signature:
            try:
                keys.verify(
                    head.key_id,
                    ar.head_message(node_id, head.count, head.last_hash),
                    bytes.fromhex(head.signature),
                )
            except (EapError, ValueError) as exc:
                problems.append(f"head signature does not verify: {exc}")
        elif head.count:
            problems.append(
                "head is not signed yet (written by the migration; the next append signs it)"
            )
    if expect:
        count, digest = expect
        if count > n:
            problems.append(f"the log has {n} rows, fewer than the expected head's {count}")
        elif count and seen.get(count) != digest:
            problems.append(f"row {count} does not have the expected head's hash")
        elif count == 0 and digest != ar.GENESIS:
            problems.append("an expected head of 0 rows has the all-zero hash")
    return Verification(not problems, n, prev, head_count, head_hash, signer, problems)


def entries_for(
    conn: Connection,
    account: str,
    principal: Principal,
    *,
    after: int = 0,
    limit: int = 100,
) -> tuple[str, list[AuditEntry]]:
    """``(account, rows that read its data)``: for its holder (own account only; ``account``
    may be empty) or the operator."""
    if principal.kind == "account":
        if account and account != principal.account_id:
            raise PermissionDenied("an account holder may list reads of its own account only")
        account = principal.account_id or ""
    elif principal.kind != "operator":
        raise PermissionDenied("only the operator or the account's holder may list its reads")
    if not ACCOUNT_RE.match(account or ""):
        raise InvalidArgument("invalid account", [_fv("account", "an acct_ id")])
    if after < 0:
        raise InvalidArgument("invalid page token", [_fv("page_token", "a row seq")])
    return account, ar.for_account(conn, account, after, limit)


def _fv(name: str, description: str):
    from eap.node.errors import FieldViolation

    return FieldViolation(name, description)
