"""Repositories of holder-signed accounts (:mod:`eap.node.domain.holder_auth`): an account's
holder key, and the holder signatures already spent."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from eap.node.store import schema as t


def holder_key(conn: Connection, account: str) -> bytes | None:
    """The holder key of a local account, None for a custodial (or unknown) one."""
    row = conn.execute(
        select(t.accounts.c.holder_public_key).where(t.accounts.c.id == account)
    ).first()
    return bytes(row[0]) if row and row[0] is not None else None


def signature_use(conn: Connection, signature_hash: str) -> str | None:
    """The request that spent the signature with this hash, or None."""
    c = t.holder_auth_uses.c
    return conn.execute(select(c.request_id).where(c.signature_hash == signature_hash)).scalar()


def record_signature_use(conn: Connection, **values) -> None:
    """Mark a holder signature spent (its hash is the primary key: spent once)."""
    conn.execute(insert(t.holder_auth_uses).values(**values))
