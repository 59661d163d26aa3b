"""How ``eap-node demo`` shows itself: progress on stderr while it runs, tables at the end."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from eap.node.demo import TOTAL_STEPS, DemoReport, run_demo

_SPARK = " ▁▂▃▄▅▆▇█"
_STYLE = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True}


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C while the demo runs, so its nodes are stopped in order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_with_progress(
    *, workdir: Path | None, keep: bool, seed: int, day: str, as_json: bool, console: Console,
    chain: bool = False, reports: Path | None = None,
) -> DemoReport:
    """Run the demo showing progress on ``console`` (stderr): a live bar on a terminal, one
    line per step otherwise.  Ctrl-C (or SIGTERM) stops every node, then exits 130."""
    started = time.monotonic()
    try:
        with _sigterm_interrupts():
            if console.is_terminal:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    SpinnerColumn,
                    TextColumn,
                    TimeElapsedColumn,
                )

                with Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                ) as bar:
                    task = bar.add_task("eap-node demo", total=TOTAL_STEPS)
                    first = [True]

                    def step(what: str) -> None:
                        if not first[0]:
                            bar.advance(task)
                        first[0] = False
                        bar.update(task, description=what)

                    report = run_demo(
                        workdir, seed=seed, day=day, keep=keep, progress=step, chain=chain,
                        reports=reports,
                    )
            else:

                def step(what: str) -> None:
                    console.print(
                        f"[{time.monotonic() - started:5.1f}s] {what}",
                        highlight=False,
                        soft_wrap=True,
                    )

                report = run_demo(
                    workdir, seed=seed, day=day, keep=keep, progress=step, chain=chain,
                    reports=reports,
                )
    except KeyboardInterrupt:
        console.print("interrupted: every node process was stopped")
        sys.exit(130)
    return report


def _spark(values: list[float]) -> str:
    return "".join(_SPARK[min(len(_SPARK) - 1, round(v * (len(_SPARK) - 1)))] for v in values)


def render(report: DemoReport, console: Console) -> None:
    """The summary tables of a run, for people."""
    nodes = report.nodes
    total_x = sum(sum(n.transfers_out.get(k, 0) for k in ("whole", "partial")) for n in nodes)
    console.print(
        f"[bold]EAP federation demo[/bold] — simulated day {report.day} (UTC), three nodes as "
        f"separate processes, {total_x} cross-border transfers, "
        f"{sum(n.claims for n in nodes)} hourly claims, in {report.seconds:.1f} s",
        highlight=False,
    )
    for n in nodes:
        console.print(
            f"  {n.city}: customer {n.consumer} (consumption from {n.consumption_source})",
            highlight=False,
            soft_wrap=True,
        )
    table = Table(title="per node, Wh", title_justify="left", **_STYLE)
    table.add_column("node", no_wrap=True)
    for name in (
        "consumed",
        "issued",
        "sold\nlocally",
        "exported",
        "imported",
        "claimed\n(imported)",
        "active",
        "synced\nrecords",
        "CFE",
    ):
        table.add_column(name, justify="right", no_wrap=True)
    for n in nodes:
        table.add_row(
            f"{n.node_id}\n[dim]{n.city}, {n.zone}[/dim]",
            f"{n.consumed_wh:,}",
            f"{n.issued_wh:,}",
            f"{n.local_traded_wh:,}",
            f"{n.exported_wh:,}",
            f"{n.imported_wh:,}",
            f"{n.claimed_wh:,}\n[dim]({n.claimed_imported_wh:,})[/dim]",
            f"{n.active_wh:,}",
            f"{n.synced_records:,}",
            f"{n.cfe_score:.0%}",
        )
    console.print()
    console.print(table)
    console.print()
    console.print(
        "hourly 24/7 match, share of each hour's consumption claimed (UTC 00 → 23):",
        highlight=False,
    )
    for n in nodes:
        console.print(
            f"  {n.node_id:<18} [green]{_spark(n.hourly_cfe)}[/green]  {n.cfe_score:.1%}",
            highlight=False,
        )

    flows = Table(
        "from",
        "to",
        Column("transfers\nwhole / partial", justify="center"),
        Column("Wh\nexported", justify="right"),
        Column("Wh\nimported", justify="right"),
        title="cross-border trades (exactly-once transfers)",
        title_justify="left",
        **_STYLE,
    )
    by_id = {n.node_id: n for n in nodes}
    for n in nodes:
        for peer, wh in sorted(n.exported_to.items()):
            t = n.transfers_out
            flows.add_row(
                n.node_id,
                peer,
                f"{t.get('whole', 0)} / {t.get('partial', 0)}",
                f"{wh:,}",
                f"{by_id[peer].imported_from.get(n.node_id, 0):,}" if peer in by_id else "-",
            )
    console.print()
    console.print(flows)

    audit = report.audit
    check = Table(
        "issuer",
        Column("issued", justify="right"),
        Column("active", justify="right"),
        Column("retired", justify="right"),
        Column("in flight", justify="right"),
        Column("missing", justify="right"),
        Column("conflicting", justify="right"),
        "",
        title=f"audit by {audit['auditor']}: signed holdings statements of "
        f"{sum(1 for x in audit['statements'] if x['verified'])}/{len(audit['statements'])} "
        "nodes verified and reconciled (Wh)",
        title_justify="left",
        **_STYLE,
    )
    for i in audit["issuers"]:
        check.add_row(
            i["issuer"],
            f"{i['issued_wh']:,}",
            f"{i['active_wh']:,}",
            f"{i['retired_wh']:,}",
            f"{i['in_flight_wh']:,}",
            f"{i['missing_wh']:,}",
            f"{i['conflicting_wh']:,}",
            "[green]✓[/green]" if i["ok"] else "[red]✗[/red]",
        )
    console.print()
    console.print(check)
    console.print()
    replays = report.replays
    console.print(
        f"replayed transfer requests: {replays['same_result']}/{replays['sent']} returned the "
        "first result and moved nothing",
        highlight=False,
    )
    if report.conserved:
        issued = sum(i["issued_wh"] for i in audit["issuers"])
        console.print(
            f"[green]the books close[/green]: {issued:,} Wh of {len(audit['issuers'])} "
            "issuers, every serial live in exactly one place or retired, as the issuer's "
            "custody says; on every node issued + imported = active + retired + exported",
            highlight=False,
        )
    else:
        problems = [*audit["problems"], *(p for i in audit["issuers"] for p in i["problems"])]
        console.print(
            "[red]the books do NOT close:[/red] " + ("; ".join(problems[:5]) or "a node is "
                                                    "unbalanced (see the summary above)"),
            highlight=False,
        )
    _render_settlement(report.settlement, console)
    _render_chain(report.chain, console)
    if report.unsettled:
        console.print(f"[red]unsettled transfers:[/red] {', '.join(report.unsettled[:5])}")
    for city, path in report.reports.items():
        console.print(
            Text(f"{city} customer's hourly matching report (24/7 score, Scope 2): {path}")
        )
    if report.workdir:
        console.print(f"node homes, logs and descriptors kept in {report.workdir}", highlight=False)


def _render_chain(ch: dict, console: Console) -> None:
    if not ch:
        return
    table = Table("what", "node / currency", "batch / amount (minor)", "transaction",
                  title=f"on chain {ch['chain_id']} ({ch['rpc_url']}, block {ch['block']}): "
                  f"registry {ch['contracts']['anchor_registry']}, "
                  f"ledger {ch['contracts']['settlement_ledger']}",
                  title_justify="left", **_STYLE)
    for a in ch["anchors"]:
        table.add_row("anchor" + (" ✓" if a["verified"] else " ✗"), a["node"],
                      f"batch {a['seq']}", a["tx"])
    for p in ch["settlements"]:
        table.add_row("settle", p["currency"], f"{p['amount_minor']:,}", p["tx"])
    console.print()
    console.print(table)
    if ch["ok"]:
        console.print(f"[green]on chain[/green]: {len(ch['anchors'])} batch roots anchored and "
                      f"verified, {len(ch['settlements'])} payments settled", highlight=False)
    else:
        console.print(Text("the chain does NOT match: " + "; ".join(ch["problems"][:5]),
                           style="red"))


def _render_settlement(st: dict, console: Console) -> None:
    if not st:
        return
    table = Table(
        "currency",
        Column("gross", justify="right"),
        Column("net (still moves)", justify="right"),
        Column("efficiency", justify="right"),
        title=f"settlement of the day, round run by {st['coordinator']}: "
        f"{st['instructions']} payment(s), statement signed by {', '.join(st['signed_by'])} "
        "(minor units)",
        title_justify="left",
        **_STYLE,
    )
    for cur, gross in st["gross"].items():
        table.add_row(cur, f"{gross:,}", f"{st['net'][cur]:,}", f"{st['efficiency'][cur]:.1%}")
    console.print()
    console.print(table)
    digests = st["digest"] if isinstance(st["digest"], list) else [st["digest"]]
    if st["ok"]:
        console.print(
            f"[green]settled[/green]: every obligation netted once, statement digest "
            f"{', '.join(d[:16] for d in digests)}…; every node executed its side of the payments",
            highlight=False,
        )
    else:
        why = "; ".join(st["problems"][:5]) or f"{st['held_out']} obligation(s) held out"
        console.print(Text("the settlement did NOT complete: " + why, style="red"))
