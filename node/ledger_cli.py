"""``eap-node ledger``: the built-in co-op ledger (settlement backend ``coop-ledger``).

Registered on the main command group by :func:`register`.  Reads and the credit line go to
:mod:`eap.plugins.coop_ledger`, the same code the backend posts with.
"""

from __future__ import annotations

import datetime as dt

import click

from eap.node.cli import _emit, _home_option, _json_option, _open
from eap.node.cli_output import Table
from eap.node.errors import FailedPrecondition
from eap.plugins import coop_ledger


def _ms(value: int) -> str:
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.group()
def ledger() -> None:
    """The built-in co-op ledger: balances, entries, credit lines, invariant check."""


@ledger.command("balances")
@_home_option
@_json_option
def ledger_balances(home, as_json) -> None:
    """Every ledger account (members and clearing:<node>) with balance and credit line."""
    rows = coop_ledger.balances(_open(home).store)
    table = Table("account", "kind", "currency", "balance (minor)", "credit line (minor)")
    for r in rows:
        table.add_row(
            r["account"],
            r["kind"],
            r["currency"],
            f"{r['balance_minor']:,}",
            f"{r['credit_line_minor']:,}" if r["kind"] == "member" else "-",
        )
    _emit(rows, as_json, table)


@ledger.command("entries")
@click.option("--round", "round_id", default="", help="Only the entries of this round.")
@_home_option
@_json_option
def ledger_entries(round_id, home, as_json) -> None:
    """Posted entries, oldest first, with their postings (credit > 0, debit < 0)."""
    rows = coop_ledger.entries(_open(home).store, round_id)
    table = Table("entry", "at (UTC)", "instruction", "side", "postings")
    for e in rows:
        postings = ", ".join(
            f"{p['account']} {p['amount_minor']:+,} {p['currency']}" for p in e["postings"]
        )
        table.add_row(e["entry_id"], _ms(e["at_ms"]), e["instruction_id"], e["side"], postings)
    _emit(rows, as_json, table)


@ledger.command("credit-line")
@click.argument("account")
@click.option("--currency", required=True, help="ISO 4217 code, e.g. EUR.")
@click.option(
    "--minor",
    type=int,
    required=True,
    help="How far below zero the member may go, in minor units (0: no overdraft).",
)
@_home_option
@_json_option
def ledger_credit_line(account, currency, minor, home, as_json) -> None:
    """Set the credit line of a member ACCOUNT (acct_... of this node) in one currency."""
    node = _open(home)
    row = coop_ledger.set_credit_line(node.store, node.node_id, account, currency, minor)
    _emit(
        row,
        as_json,
        text=f"{row['account']} may go down to -{row['credit_line_minor']:,} "
        f"{row['currency']} (balance {row['balance_minor']:,})",
    )


@ledger.command("check")
@_home_option
@_json_option
def ledger_check(home, as_json) -> None:
    """Check every invariant: entries balance, balances equal postings, credit lines hold."""
    problems = coop_ledger.check(_open(home).store)
    _emit(
        {"ok": not problems, "problems": problems},
        as_json,
        text="\n".join(problems) or "the ledger balances",
    )
    if problems:
        raise FailedPrecondition(f"{len(problems)} ledger problem(s)")


def register(main: click.Group) -> None:
    """Add ``ledger`` to the ``eap-node`` group."""
    main.add_command(ledger)
