"""The hash-chained, append-only audit log of reads of personal data (tables ``audit_log``,
``audit_subjects``, ``audit_head``).

Each row carries ``seq`` (1, 2, ...), the previous row's hash and its own ``row_hash``:
SHA-256 over ``EAP-AUDIT-v1\\0`` and the canonical JSON of the row's content with
``prev_hash``.  Editing, deleting or reordering rows breaks the chain; the head (row count and
last hash, signed by the domain layer with the node key) catches a truncated tail.  Appends
lock the head row (``FOR UPDATE`` on PostgreSQL; SQLite transactions already serialise), so
concurrent readers never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence

from sqlalchemy import Connection, insert, select, update

from eap.node.records.models import AuditEntry
from eap.node.store import schema as t

GENESIS = "0" * 64
ROW_TAG = b"EAP-AUDIT-v1\x00"
HEAD_TAG = b"EAP-AUDIT-HEAD-v1\x00"


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def row_digest(
    *,
    seq: int,
    at_ms: int,
    principal: str,
    via: str,
    purpose: str,
    what: str,
    count: int,
    accounts: Sequence[str],
    fields: Sequence[str],
    prev_hash: str,
) -> str:
    """Hex hash of one row: covers every column but ``id`` and ``row_hash`` itself."""
    body = {
        "seq": seq,
        "at_ms": at_ms,
        "principal": principal,
        "via": via,
        "purpose": purpose,
        "what": what,
        "count": count,
        "accounts": list(accounts),
        "fields": list(fields),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(ROW_TAG + canonical(body)).hexdigest()


def head_message(node_id: str, count: int, last_hash: str) -> bytes:
    """The bytes the node key signs for a head."""
    return HEAD_TAG + canonical({"node": node_id, "count": count, "last_hash": last_hash})


def head(conn: Connection, *, lock: bool = False):
    """The head row (count, last_hash, at_ms, key_id, signature), or None before migration."""
    q = select(t.audit_head).where(t.audit_head.c.id == 1)
    if lock:
        q = q.with_for_update()
    return conn.execute(q).first()


def append(
    conn: Connection,
    *,
    at_ms: int,
    principal: str,
    via: str,
    purpose: str,
    what: str,
    count: int,
    accounts: Sequence[str],
    fields: Sequence[str],
) -> AuditEntry:
    """Append one row after the locked head; the caller then signs and stores the new head
    with :func:`set_head` in the same transaction."""
    h = head(conn, lock=True)
    seq, prev = (h.count + 1, h.last_hash) if h else (1, GENESIS)
    accounts = tuple(sorted(set(accounts)))
    fields = tuple(fields)
    values = dict(
        seq=seq,
        at_ms=at_ms,
        principal=principal,
        via=via,
        purpose=purpose,
        what=what,
        count=count,
        accounts=accounts,
        fields=fields,
        prev_hash=prev,
    )
    digest = row_digest(**values)
    conn.execute(
        insert(t.audit_log).values(
            **{**values, "accounts": json.dumps(list(accounts)), "fields": ",".join(fields)},
            row_hash=digest,
        )
    )
    if accounts:
        conn.execute(insert(t.audit_subjects), [{"account": a, "seq": seq} for a in accounts])
    return AuditEntry(**values, row_hash=digest)


def set_head(
    conn: Connection, *, count: int, last_hash: str, at_ms: int, key_id: str, signature: str
) -> None:
    values = dict(count=count, last_hash=last_hash, at_ms=at_ms, key_id=key_id, signature=signature)
    done = conn.execute(update(t.audit_head).where(t.audit_head.c.id == 1).values(**values))
    if done.rowcount == 0:
        conn.execute(insert(t.audit_head).values(id=1, **values))


def _entry(row) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at_ms=row.at_ms,
        principal=row.principal,
        via=row.via,
        purpose=row.purpose,
        what=row.what,
        count=row.count,
        accounts=tuple(json.loads(row.accounts or "[]")),
        fields=tuple(f for f in (row.fields or "").split(",") if f),
        prev_hash=row.prev_hash,
        row_hash=row.row_hash,
    )


def stored_rows(conn: Connection, batch: int = 5000) -> Iterator[tuple[int, object]]:
    """Every row as ``(id, raw row)`` in insertion (id) order, in batches."""
    last = None
    c = t.audit_log.c
    while True:
        q = select(t.audit_log).order_by(c.id).limit(batch)
        if last is not None:
            q = q.where(c.id > last)
        rows = conn.execute(q).all()
        if not rows:
            return
        for r in rows:
            yield r.id, r
        last = rows[-1].id


def entry_of(row) -> AuditEntry:
    """An :class:`AuditEntry` of a raw row; ValueError when its columns do not parse."""
    try:
        return _entry(row)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"row seq {row.seq}: unreadable accounts column") from exc


def subjects(conn: Connection) -> set[tuple[str, int]]:
    return {(r.account, r.seq) for r in conn.execute(select(t.audit_subjects)).all()}


def for_account(conn: Connection, account: str, after: int, limit: int) -> list[AuditEntry]:
    """Rows that read ``account``'s data, by seq, after ``after``."""
    c = t.audit_log.c
    s = t.audit_subjects.c
    q = (
        select(t.audit_log)
        .join(t.audit_subjects, s.seq == c.seq)
        .where(s.account == account, c.seq > after)
        .order_by(c.seq)
        .limit(limit)
    )
    return [_entry(r) for r in conn.execute(q).all()]
