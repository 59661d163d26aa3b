"""Repositories of the co-op ledger tables (``ledger_accounts``, ``ledger_entries``,
``ledger_postings``), used by the built-in ``coop-ledger`` settlement backend.

Like :mod:`eap.node.store.repos`, every function takes an open connection inside the caller's
unit of work.  The double-entry rules (what to post, credit lines, idempotency) live in
:mod:`eap.plugins.coop_ledger`; this module only reads and writes rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from eap.node.store import schema as t


def get_account(conn: Connection, account: str, currency: str, *, lock: bool = False):
    c = t.ledger_accounts.c
    q = select(t.ledger_accounts).where(c.id == account, c.currency == currency)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return conn.execute(q).first()


def insert_account(
    conn: Connection, account: str, currency: str, kind: str, at_ms: int, credit_line: int = 0
) -> None:
    conn.execute(
        insert(t.ledger_accounts).values(
            id=account,
            currency=currency,
            kind=kind,
            credit_line_minor=credit_line,
            balance_minor=0,
            updated_at_ms=at_ms,
        )
    )


def set_balance(conn: Connection, account: str, currency: str, balance: int, at_ms: int) -> None:
    c = t.ledger_accounts.c
    conn.execute(
        update(t.ledger_accounts)
        .where(c.id == account, c.currency == currency)
        .values(balance_minor=balance, updated_at_ms=at_ms)
    )


def set_credit_line(conn: Connection, account: str, currency: str, minor: int, at_ms: int) -> None:
    c = t.ledger_accounts.c
    conn.execute(
        update(t.ledger_accounts)
        .where(c.id == account, c.currency == currency)
        .values(credit_line_minor=minor, updated_at_ms=at_ms)
    )


def entry_by_keys(conn: Connection, keys: Sequence[str]):
    """The entry posted under any of ``keys`` (None when none was)."""
    c = t.ledger_entries.c
    return conn.execute(
        select(t.ledger_entries).where(c.idempotency_key.in_(list(keys))).limit(1)
    ).first()


def insert_entry(conn: Connection, values: dict, postings: Sequence[tuple[str, str, int]]) -> None:
    """One entry and its ``(account, currency, amount_minor)`` postings (one executemany)."""
    conn.execute(insert(t.ledger_entries).values(**values))
    conn.execute(
        insert(t.ledger_postings),
        [
            {"entry_id": values["entry_id"], "account": a, "currency": c, "amount_minor": m}
            for a, c, m in postings
        ],
    )


def accounts(conn: Connection):
    c = t.ledger_accounts.c
    return conn.execute(select(t.ledger_accounts).order_by(c.currency, c.kind, c.id)).all()


def entries(conn: Connection, round_id: str | None = None):
    c = t.ledger_entries.c
    q = select(t.ledger_entries).order_by(c.at_ms, c.entry_id)
    if round_id:
        q = q.where(c.round_id == round_id)
    return conn.execute(q).all()


def postings(conn: Connection, entry_ids: Sequence[str] | None = None):
    c = t.ledger_postings.c
    q = select(t.ledger_postings).order_by(c.entry_id, c.amount_minor, c.account)
    if entry_ids is not None:
        q = q.where(c.entry_id.in_(list(entry_ids)))
    return conn.execute(q).all()


def unbalanced_entries(conn: Connection):
    """``(entry_id, currency, sum)`` of every entry whose postings do not sum to zero."""
    c = t.ledger_postings.c
    total = func.sum(c.amount_minor)
    return conn.execute(
        select(c.entry_id, c.currency, total).group_by(c.entry_id, c.currency).having(total != 0)
    ).all()


def entries_without_postings(conn: Connection) -> list[str]:
    e, p = t.ledger_entries.c, t.ledger_postings.c
    q = select(e.entry_id).where(~select(p.entry_id).where(p.entry_id == e.entry_id).exists())
    return list(conn.execute(q).scalars())


def posting_sums(conn: Connection) -> dict[tuple[str, str], int]:
    """Sum of the postings of every ``(account, currency)``."""
    c = t.ledger_postings.c
    rows = conn.execute(
        select(c.account, c.currency, func.sum(c.amount_minor)).group_by(c.account, c.currency)
    ).all()
    return {(a, cur): int(s) for a, cur, s in rows}


def entries_by_keys(conn: Connection, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Entries posted under any of ``keys`` (as dicts), by key (chunked ``IN`` lists)."""
    c = t.ledger_entries.c
    found: dict[str, dict[str, Any]] = {}
    keys = list(keys)
    for i in range(0, len(keys), 500):
        q = select(t.ledger_entries).where(c.idempotency_key.in_(keys[i : i + 500]))
        found.update((r.idempotency_key, dict(r._mapping)) for r in conn.execute(q))
    return found


def accounts_in(conn: Connection, ids: Sequence[str]) -> dict[tuple[str, str], Any]:
    """Ledger account rows of ``ids`` (every currency), by ``(id, currency)``, locked on
    PostgreSQL."""
    c = t.ledger_accounts.c
    found: dict[tuple[str, str], Any] = {}
    ids = list(ids)
    for i in range(0, len(ids), 500):
        q = select(t.ledger_accounts).where(c.id.in_(ids[i : i + 500]))
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        found.update(((r.id, r.currency), r) for r in conn.execute(q))
    return found


def node_accounts_in(conn: Connection, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` are accounts of this node (table ``accounts``)."""
    c = t.accounts.c
    found: set[str] = set()
    ids = list(ids)
    for i in range(0, len(ids), 500):
        found.update(conn.execute(select(c.id).where(c.id.in_(ids[i : i + 500]))).scalars())
    return found


def write_batch(
    conn: Connection,
    new_accounts: Sequence[dict],
    balances: Sequence[dict],
    entries: Sequence[dict],
    postings: Sequence[dict],
) -> None:
    """Bulk writes of a batch of entries: new account rows, balances, entries, postings."""
    if new_accounts:
        conn.execute(insert(t.ledger_accounts), list(new_accounts))
    if balances:
        c = t.ledger_accounts.c
        conn.execute(
            update(t.ledger_accounts)
            .where(c.id == bindparam("b_id"), c.currency == bindparam("b_currency"))
            .values(balance_minor=bindparam("b_balance"), updated_at_ms=bindparam("b_at")),
            list(balances),
        )
    if entries:
        conn.execute(insert(t.ledger_entries), list(entries))
    if postings:
        conn.execute(insert(t.ledger_postings), list(postings))


def count_entries(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(t.ledger_entries)).scalar_one())
