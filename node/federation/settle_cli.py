"""``eap-node settle run | status | show``: settlement rounds (docs/settlement.md)."""

from __future__ import annotations

import sys

import click
from rich.text import Text

from eap.node.cli import _emit, _home_option, _json_option, _open
from eap.node.cli_output import Table, styled


def _ms(value: int | None) -> str:
    import datetime as dt

    if not value:
        return "-"
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.group()
def settle() -> None:
    """Settlement rounds: net the period's obligations across the federation, sign the
    statement with every participant and execute it through the settlement backend."""


@settle.command("run")
@click.option("--period", default="", metavar="YYYY-MM-DD", help="Period to settle (UTC day; "
              "default today).")
@click.option("--request-id", default="", help="Idempotency key: a rerun returns the round.")
@_home_option
@_json_option
def run(period, request_id, home, as_json) -> None:
    """Run a settlement round, this node coordinating; every trusted peer is asked for its
    view (exit 5 when the round failed: see its problems, then run again)."""
    from eap.node.errors import FailedPrecondition
    from eap.node.federation.client import PeerClient
    from eap.node.federation.peers import TrustList
    from eap.node.federation.settlement import FAILED, Settlement, round_dict

    node = _open(home)
    trust = TrustList(node.store, node.node_id, cache_s=0)
    with PeerClient(node, trust=trust) as client:
        svc = Settlement(node, client, trust)
        msg = svc.run(period, request_id=request_id)
        if svc.backend is not None:
            svc.execute_due()  # the running node's executor retries whatever is left
            msg = svc.get(msg.round_id)
    _show(round_dict(msg), as_json)
    if msg.state == FAILED:
        sys.exit(FailedPrecondition.exit_code)


@settle.command("status")
@click.option("--limit", default=50, show_default=True, help="Rounds shown.")
@_home_option
@_json_option
def status(limit, home, as_json) -> None:
    """Settlement rounds this node ran or took part in, newest first."""
    from eap.node.federation.settlement import Settlement, round_dict

    rounds = [round_dict(r) for r in Settlement(_open(home)).list(page_size=limit).rounds]
    table = Table("round", "state", "participants", "obligations", "gross", "net",
                  "efficiency", "digest", "started (UTC)", title="settlement rounds")
    for r in rounds:
        cur = r["currencies"]
        table.add_row(r["round_id"], _state(r["state"]), str(len(r["participants"])),
                      str(r["obligations"]),
                      ", ".join(f"{c['gross']:,} {c['currency']}" for c in cur) or "-",
                      ", ".join(f"{c['net']:,} {c['currency']}" for c in cur) or "-",
                      ", ".join(f"{c['efficiency']:.1%}" for c in cur) or "-",
                      (r["digest"] or "-")[:16], _ms(r["started_at_ms"]))
    _emit(rounds, as_json, table)


@settle.command("show")
@click.argument("round_id")
@_home_option
@_json_option
def show(round_id, home, as_json) -> None:
    """One round: statement digest, signatures, per-currency gross/net/efficiency,
    instructions with their state and receipts, held-out obligations, problems."""
    from eap.node.federation.settlement import Settlement, round_dict

    _show(round_dict(Settlement(_open(home)).get(round_id)), as_json)


def _state(state: str):
    colour = {"settled": "green", "final": "cyan", "failed": "red"}.get(state, "yellow")
    return styled(state, colour)


def _show(r: dict, as_json: bool) -> None:
    from eap.node.cli import console

    if as_json:
        _emit(r, True)
        return
    console.print(Text.assemble("round ", (r["round_id"], "bold"), "  ", _state(r["state"]),
                                f"  period {r['period']}  coordinator {r['coordinator']}"),
                  highlight=False)
    console.print(Text(f"statement SHA-256 {r['digest'] or '-'}; participants "
                  f"{', '.join(r['participants']) or '-'}; signed by "
                  f"{', '.join(r['signed_by']) or 'nobody yet'}"), highlight=False)
    cur = Table("currency", "obligations", "gross", "net", "efficiency", title="netting")
    for c in r["currencies"]:
        cur.add_row(c["currency"], str(c["obligations"]), f"{c['gross']:,}", f"{c['net']:,}",
                    f"{c['efficiency']:.1%}")
    console.print(cur)
    ins = Table("instruction", "payer", "payee", "amount", "state", "receipt", "attempts",
                title="instructions")
    for i in r["instructions"]:
        ins.add_row(i["id"].rsplit("/", 1)[-1], i["payer"], i["payee"],
                    f"{i['amount_minor']:,} {i['currency']}", i["state"],
                    i["receipt"] or i["last_error"] or "-", str(i["attempts"]))
    console.print(ins)
    if r["held_out"]:
        held = Table("obligation", "payer", "payee", "amount",
                     title="held out (not settled: the two sides disagree)")
        for o in r["held_out"]:
            held.add_row(o["id"], o["payer"], o["payee"],
                         f"{o['amount_minor']:,} {o['currency']}")
        console.print(held)
    for line in r["problems"]:
        console.print(styled("problem:", "red", line), highlight=False)
