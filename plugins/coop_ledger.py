"""Built-in settlement backend ``coop-ledger``: a double-entry ledger in the node's own database.

Each executed side of a settlement instruction is one **entry** of balanced **postings**
(signed minor units: credit > 0, debit < 0) on **accounts** per currency:

* ``member`` accounts are this node's accounts (``acct_...``); none may go below minus its
  credit line, which is 0 (no overdraft) until the operator sets one
  (``eap-node ledger credit-line``);
* ``clearing:<node id>`` accounts stand for another node: what this node's members paid to
  (positive) or were paid by (negative) members over there, settled between the nodes'
  co-ops outside this ledger.  They have no limit.

``debit`` side (a local payer pays): debit the payer, credit the payee when local, else
``clearing:<payee's node>``.  ``credit`` side (a local payee is paid): credit the payee, debit
the payer when local, else ``clearing:<payer's node>``.  An instruction between two accounts
of this node is one transfer: whichever side executes first posts it, the other returns the
same receipt.

Every entry sums to zero per currency (checked before it is written, and by :func:`check`
over the whole ledger); an idempotency key posts once and a replay returns the first receipt;
the same key with other terms is refused.  One database transaction per entry: a refused or
failed instruction leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from eap.node.crypto.keys import now_ms
from eap.node.domain.rules import ACCOUNT_RE, CURRENCY_RE, NODE_ID_RE
from eap.node.errors import BackendError, FailedPrecondition, NotFound, invalid
from eap.node.store import Store, ledger_repos, repos
from eap.plugins import hookimpl

NAME = "coop-ledger"
MEMBER = "member"
CLEARING = "clearing"
CLEARING_PREFIX = "clearing:"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Posting:
    account: str
    currency: str
    #: Credit > 0, debit < 0.
    amount_minor: int

    @property
    def kind(self) -> str:
        return CLEARING if self.account.startswith(CLEARING_PREFIX) else MEMBER


def _refuse(message: str) -> BackendError:
    return BackendError(message, transient=False, backend=NAME)


def _party(value: Any, what: str) -> tuple[str, str]:
    node, sep, acct = str(value).partition("/")
    if not sep or not NODE_ID_RE.match(node) or not ACCOUNT_RE.match(acct):
        raise _refuse(f"{what} {value!r} is not '<node id>/acct_...'")
    return node, acct


def plan(node_id: str, item: dict) -> list[Posting]:
    """The postings of one side of one instruction at node ``node_id`` (balanced).

    Raises:
        BackendError: (not transient) the instruction is malformed or not this node's side.
    """
    payer_node, payer = _party(item.get("payer"), "payer")
    payee_node, payee = _party(item.get("payee"), "payee")
    currency, amount, side = item.get("currency"), item.get("amount_minor"), item.get("side")
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        raise _refuse(f"currency {currency!r} is not an ISO 4217 code")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= INT64_MAX:
        raise _refuse(f"amount_minor {amount!r} is not a positive int64")
    if (payer_node, payer) == (payee_node, payee):
        raise _refuse(f"payer and payee are the same account {item['payer']}")
    if side == "debit":
        if payer_node != node_id:
            raise _refuse(
                f"debit side of {item['payer']}: the payer is not an account of {node_id}"
            )
        other = payee if payee_node == node_id else CLEARING_PREFIX + payee_node
        postings = [Posting(payer, currency, -amount), Posting(other, currency, amount)]
    elif side == "credit":
        if payee_node != node_id:
            raise _refuse(
                f"credit side of {item['payee']}: the payee is not an account of {node_id}"
            )
        other = payer if payer_node == node_id else CLEARING_PREFIX + payer_node
        postings = [Posting(other, currency, -amount), Posting(payee, currency, amount)]
    else:
        raise _refuse(f"side must be debit or credit, not {side!r}")
    _assert_balanced(postings)
    return postings


def _assert_balanced(postings: list[Posting]) -> None:
    totals: dict[str, int] = defaultdict(int)
    for p in postings:
        totals[p.currency] += p.amount_minor
    bad = {c: s for c, s in totals.items() if s != 0}
    if bad:  # a bug in plan(), never a caller's mistake
        raise AssertionError(f"unbalanced entry: {bad}")


def _digest(item: dict) -> str:
    """SHA-256 of the instruction's terms (not the side: both sides describe one payment)."""
    terms = {
        k: item.get(k)
        for k in ("instruction_id", "round_id", "payer", "payee", "amount_minor", "currency")
    }
    return hashlib.sha256(json.dumps(terms, sort_keys=True).encode()).hexdigest()


def post(store: Store, node_id: str, item: dict, idempotency_key: str,
         lines: dict[str, int] | None = None) -> dict:
    """Post one side of one instruction once; returns ``{"reference": entry id, "at_ms"}``.

    Raises:
        BackendError: (not transient) malformed, not this node's side, an unknown local
            account, a member's credit line exceeded, a balance overflow, or the key reused
            with other terms.  Nothing is written then.
    """
    postings = plan(node_id, item)
    digest = _digest(item)
    keys = [idempotency_key]
    local = all(p.kind == MEMBER for p in postings)
    if local:  # the other side of a transfer inside this node is the same entry
        other = "credit" if item["side"] == "debit" else "debit"
        keys.append(f"{item['instruction_id']}:{other}")
    try:
        return _post_once(store, item, idempotency_key, keys, digest, postings, lines or {})
    except IntegrityError:
        # A concurrent call (PostgreSQL) posted the same key or created the same account
        # first; this transaction rolled back.  The second try sees its work.
        return _post_once(store, item, idempotency_key, keys, digest, postings, lines or {})


def _post_once(
    store: Store, item: dict, key: str, keys: list[str], digest: str, postings: list[Posting],
    lines: dict[str, int],
) -> dict:
    with store.transaction() as conn:
        first = ledger_repos.entry_by_keys(conn, keys)
        if first is not None:
            if first.digest != digest:
                raise _refuse(
                    f"idempotency key {key!r} was posted with other terms (entry {first.entry_id})"
                )
            return {"reference": first.entry_id, "at_ms": int(first.at_ms)}
        at = now_ms()
        for p in postings:
            _apply(conn, p, at, lines)
        entry_id = "le_" + uuid.uuid4().hex
        ledger_repos.insert_entry(
            conn,
            {
                "entry_id": entry_id,
                "idempotency_key": key,
                "round_id": str(item.get("round_id", "")),
                "instruction_id": str(item["instruction_id"]),
                "side": item["side"],
                "digest": digest,
                "at_ms": at,
            },
            [(p.account, p.currency, p.amount_minor) for p in postings],
        )
    return {"reference": entry_id, "at_ms": at}


def post_many(
    store: Store, node_id: str, batch: list[tuple[dict, str]],
    lines: dict[str, int] | None = None,
) -> list[dict | BackendError]:
    """Post many ``(item, idempotency_key)`` in one transaction; one result per item, in order.

    Each result is what :func:`post` would have returned or raised for that item, executed
    one after the other: a receipt, or the (not transient) ``BackendError`` refusing it, in
    which case nothing of that item is written.  The batch commits as a whole, so a crash
    leaves either every accepted entry or none; replaying it posts nothing twice.  Used by
    bulk executors (and the settlement benchmark) where one transaction per instruction
    would cost more than the ledger work.
    """
    results: list[dict | BackendError | None] = [None] * len(batch)
    plans: list[tuple[int, dict, str, list[str], str, list[Posting]]] = []
    for i, (item, key) in enumerate(batch):
        try:
            postings = plan(node_id, item)
        except BackendError as exc:
            results[i] = exc
            continue
        keys = [key]
        if all(p.kind == MEMBER for p in postings):
            other = "credit" if item["side"] == "debit" else "debit"
            keys.append(f"{item['instruction_id']}:{other}")
        plans.append((i, item, key, keys, _digest(item), postings))
    at = now_ms()
    with store.transaction() as conn:
        known = ledger_repos.entries_by_keys(conn, [k for *_, keys, _, _ in plans for k in keys])
        touched = {p.account for *_, postings in plans for p in postings}
        rows = ledger_repos.accounts_in(conn, sorted(touched))
        members = ledger_repos.node_accounts_in(
            conn, sorted(a for a in touched if not a.startswith(CLEARING_PREFIX))
        )
        state = {
            k: [int(r.balance_minor), int(r.credit_line_minor), r.kind] for k, r in rows.items()
        }
        new_accounts: dict[tuple[str, str], str] = {}
        dirty: set[tuple[str, str]] = set()
        entries: list[dict] = []
        posting_rows: list[dict] = []
        for i, item, key, keys, digest, postings in plans:
            first = next((known[k] for k in keys if k in known), None)
            if first is not None:
                results[i] = (
                    {"reference": first["entry_id"], "at_ms": int(first["at_ms"])}
                    if first["digest"] == digest
                    else _refuse(
                        f"idempotency key {key!r} was posted with other terms "
                        f"(entry {first['entry_id']})"
                    )
                )
                continue
            try:
                moved = _apply_in_memory(postings, state, members, new_accounts, lines or {})
            except BackendError as exc:
                results[i] = exc
                continue
            dirty.update(moved)
            entry = {
                "entry_id": "le_" + uuid.uuid4().hex,
                "idempotency_key": key,
                "round_id": str(item.get("round_id", "")),
                "instruction_id": str(item["instruction_id"]),
                "side": item["side"],
                "digest": digest,
                "at_ms": at,
            }
            entries.append(entry)
            known[key] = entry
            posting_rows += [
                {
                    "entry_id": entry["entry_id"],
                    "account": p.account,
                    "currency": p.currency,
                    "amount_minor": p.amount_minor,
                }
                for p in postings
            ]
            results[i] = {"reference": entry["entry_id"], "at_ms": at}
        ledger_repos.write_batch(
            conn,
            [
                {
                    "id": a,
                    "currency": c,
                    "kind": kind,
                    "credit_line_minor": state[(a, c)][1],
                    "balance_minor": 0,
                    "updated_at_ms": at,
                }
                for (a, c), kind in new_accounts.items()
            ],
            [
                {"b_id": a, "b_currency": c, "b_balance": state[(a, c)][0], "b_at": at}
                for a, c in sorted(dirty)
            ],
            entries,
            posting_rows,
        )
    return results  # type: ignore[return-value]


def _apply_in_memory(
    postings: list[Posting],
    state: dict[tuple[str, str], list],
    members: set[str],
    new_accounts: dict[tuple[str, str], str],
    lines: dict[str, int],
) -> list[tuple[str, str]]:
    """:func:`_apply` on in-memory balances: all postings of one entry or none."""
    after: dict[tuple[str, str], int] = {}
    for p in postings:
        k = (p.account, p.currency)
        if k not in state and p.kind == MEMBER and p.account not in members:
            raise _refuse(f"account {p.account} does not exist on this node")
        balance, line, kind = state.get(
            k, [0, lines.get(p.currency, 0) if p.kind == MEMBER else 0, p.kind])
        new = after.get(k, balance) + p.amount_minor
        if not INT64_MIN <= new <= INT64_MAX:
            raise _refuse(f"balance of {p.account} in {p.currency} would overflow int64")
        if kind == MEMBER and p.amount_minor < 0 and new < -line:
            raise _refuse(
                f"{p.account} cannot pay {-p.amount_minor} {p.currency}: balance {balance}, "
                f"credit line {line} (eap-node ledger credit-line)"
            )
        after[k] = new
    for k, new in after.items():
        if k not in state:
            kind = CLEARING if k[0].startswith(CLEARING_PREFIX) else MEMBER
            state[k] = [0, lines.get(k[1], 0) if kind == MEMBER else 0, kind]
            new_accounts[k] = state[k][2]
        state[k][0] = new
    return list(after)


def _apply(conn: Any, p: Posting, at: int, lines: dict[str, int]) -> None:
    row = ledger_repos.get_account(conn, p.account, p.currency, lock=True)
    if row is None:
        if p.kind == MEMBER and repos.get_account(conn, p.account) is None:
            raise _refuse(f"account {p.account} does not exist on this node")
        line = lines.get(p.currency, 0) if p.kind == MEMBER else 0
        ledger_repos.insert_account(conn, p.account, p.currency, p.kind, at, credit_line=line)
        balance, kind = 0, p.kind
    else:
        balance, line, kind = int(row.balance_minor), int(row.credit_line_minor), row.kind
    new = balance + p.amount_minor
    if not INT64_MIN <= new <= INT64_MAX:
        raise _refuse(f"balance of {p.account} in {p.currency} would overflow int64")
    if kind == MEMBER and p.amount_minor < 0 and new < -line:
        raise _refuse(
            f"{p.account} cannot pay {-p.amount_minor} {p.currency}: balance {balance}, "
            f"credit line {line} (eap-node ledger credit-line)"
        )
    ledger_repos.set_balance(conn, p.account, p.currency, new, at)


def _local_account(node_id: str, account: str) -> str:
    node, sep, acct = account.partition("/")
    if not sep:
        node, acct = node_id, account
    if node != node_id or not ACCOUNT_RE.match(acct):
        raise invalid("account", f"an account of this node (acct_... or {node_id}/acct_...)")
    return acct


def set_credit_line(store: Store, node_id: str, account: str, currency: str, minor: int) -> dict:
    """Let member ``account`` go down to ``-minor`` in ``currency`` (0: no overdraft).

    Raises:
        InvalidArgument: not an account id of this node, a bad currency or amount.
        NotFound: no such account on this node.
        FailedPrecondition: the member owes more than ``minor`` already (lowering the line
            below the debt would break the ledger's invariant; credit the member first).
    """
    acct = _local_account(node_id, account)
    if not CURRENCY_RE.match(currency):
        raise invalid("currency", "an ISO 4217 code such as EUR")
    if isinstance(minor, bool) or not isinstance(minor, int) or not 0 <= minor <= INT64_MAX:
        raise invalid("minor", "a credit line in minor units, 0..2^63-1")
    at = now_ms()
    with store.transaction() as conn:
        if repos.get_account(conn, acct) is None:
            raise NotFound(f"account {acct} does not exist on this node")
        row = ledger_repos.get_account(conn, acct, currency, lock=True)
        if row is None:
            ledger_repos.insert_account(conn, acct, currency, MEMBER, at, credit_line=minor)
        elif int(row.balance_minor) < -minor:
            raise FailedPrecondition(
                f"{acct} owes {-int(row.balance_minor)} {currency}: the credit line cannot go "
                f"below that ({minor} asked)"
            )
        else:
            ledger_repos.set_credit_line(conn, acct, currency, minor, at)
        row = ledger_repos.get_account(conn, acct, currency)
    return _account_dict(row)


def _account_dict(row: Any) -> dict:
    return {
        "account": row.id,
        "currency": row.currency,
        "kind": row.kind,
        "balance_minor": int(row.balance_minor),
        "credit_line_minor": int(row.credit_line_minor),
    }


def balances(store: Store) -> list[dict]:
    """Every ledger account with its balance and credit line, by currency, kind and id."""
    with store.read() as conn:
        return [_account_dict(r) for r in ledger_repos.accounts(conn)]


def entries(store: Store, round_id: str = "") -> list[dict]:
    """Entries (optionally of one round), oldest first, each with its postings."""
    with store.read() as conn:
        rows = ledger_repos.entries(conn, round_id or None)
        by_entry: dict[str, list[dict]] = defaultdict(list)
        ids = [r.entry_id for r in rows]
        for chunk in range(0, len(ids), 500):
            for p in ledger_repos.postings(conn, ids[chunk : chunk + 500]):
                by_entry[p.entry_id].append(
                    {
                        "account": p.account,
                        "currency": p.currency,
                        "amount_minor": int(p.amount_minor),
                    }
                )
    return [
        {
            "entry_id": r.entry_id,
            "idempotency_key": r.idempotency_key,
            "round_id": r.round_id,
            "instruction_id": r.instruction_id,
            "side": r.side,
            "at_ms": int(r.at_ms),
            "postings": by_entry[r.entry_id],
        }
        for r in rows
    ]


def check(store: Store) -> list[str]:
    """What is wrong with the ledger, one line each (empty: every invariant holds).

    Every entry has postings summing to zero per currency; every account's balance is the
    sum of its postings; no member is below its credit line; all balances of a currency sum
    to zero.
    """
    problems: list[str] = []
    with store.read() as conn:
        for entry_id, currency, total in ledger_repos.unbalanced_entries(conn):
            problems.append(f"entry {entry_id} does not balance in {currency}: {int(total)}")
        for entry_id in ledger_repos.entries_without_postings(conn):
            problems.append(f"entry {entry_id} has no postings")
        sums = ledger_repos.posting_sums(conn)
        totals: dict[str, int] = defaultdict(int)
        for row in ledger_repos.accounts(conn):
            balance = int(row.balance_minor)
            totals[row.currency] += balance
            posted = sums.pop((row.id, row.currency), 0)
            if balance != posted:
                problems.append(f"{row.id} {row.currency}: balance {balance} != postings {posted}")
            if row.kind == MEMBER and balance < -int(row.credit_line_minor):
                problems.append(
                    f"{row.id} {row.currency}: balance {balance} below credit line "
                    f"{int(row.credit_line_minor)}"
                )
        for (account, currency), posted in sorted(sums.items()):
            problems.append(f"postings on {account} {currency} ({posted}) but no account row")
        for currency, total in sorted(totals.items()):
            if total != 0:
                problems.append(f"balances in {currency} sum to {total}, not 0")
    return problems


def default_lines(settings: dict[str, Any]) -> dict[str, int]:
    """``[settlement.coop-ledger] default_credit_line_minor = {EUR = 50000, ...}``: the credit
    line a member account gets when the ledger first sees it in that currency (0 otherwise).

    Raises:
        ConfigError: not a table of ISO 4217 code -> non-negative integer minor units.
    """
    from eap.node.errors import ConfigError

    table = settings.get("default_credit_line_minor", {})
    if not isinstance(table, dict) or not all(
            isinstance(k, str) and len(k) == 3 and k.isupper() and isinstance(v, int)
            and not isinstance(v, bool) and 0 <= v <= INT64_MAX for k, v in table.items()):
        raise ConfigError("settlement.coop-ledger.default_credit_line_minor must map currency "
                          "codes to non-negative integer minor units")
    return dict(table)


class CoopLedger:
    """The ``coop-ledger`` backend object (no state: everything is in the node's database)."""

    name = NAME

    def execute(self, ctx: Any, item: dict, idempotency_key: str) -> dict:
        return post(ctx.store, ctx.node_id, item, idempotency_key, default_lines(ctx.settings))

    def execute_many(self, ctx: Any, batch: list[tuple[dict, str]]) -> list:
        return post_many(ctx.store, ctx.node_id, batch, default_lines(ctx.settings))

    def health(self, ctx: Any) -> dict:
        with ctx.store.read() as conn:
            n = ledger_repos.count_entries(conn)
        return {"ok": True, "detail": f"{n} entries in {ctx.store.dialect} ({ctx.store.url})"}


@hookimpl
def eap_settlement_backends():
    return [CoopLedger()]
