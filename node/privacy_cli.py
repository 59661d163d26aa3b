"""Privacy commands: ``eap-node audit-log list|verify``, ``eap-node aggregates`` and
``eap-node regulator-token``.

Registered on the main group by :func:`register`.  The work is done in
:mod:`eap.node.domain.audit_trail` and :mod:`eap.node.domain.aggregates`; output prints user
data literally (``click.echo``), never through rich markup.
"""

from __future__ import annotations

import json
import sys

import click

from eap.node.cli import _home_option, _json_option, _open, _parse_time

#: Exit code of ``audit-log verify`` when the chain or its head does not verify.
AUDIT_BROKEN_EXIT = 15


def _dump(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.group("audit-log")
def audit_log() -> None:
    """The tamper-evident log of reads of personal data (who, why, what, whose)."""


@audit_log.command("verify")
@click.option(
    "--expect",
    default="",
    help="A head printed earlier (COUNT:HASH): also check the log still extends it.",
)
@_home_option
@_json_option
def audit_verify(expect, home, as_json) -> None:
    """Recompute the hash chain, the subjects index and the signed head.

    Exit 0 when intact, 15 when a row was edited, deleted, reordered or the tail truncated.
    Keep the printed head (COUNT:HASH) outside the node and pass it as --expect later.
    """
    from eap.node.domain import audit_trail

    node = _open(home)
    expected = audit_trail.parse_expected_head(expect) if expect else None
    result = node.verify_audit_log(expected)
    if as_json:
        _dump(result.as_dict())
    else:
        state = "intact" if result.ok else "BROKEN"
        click.echo(f"audit log {state}: {result.count} rows")
        click.echo(f"head {result.count}:{result.last_hash}")
        for problem in result.problems:
            click.echo(f"  problem: {problem}")
    if not result.ok:
        sys.exit(AUDIT_BROKEN_EXIT)


@audit_log.command("list")
@click.option("--account", required=True, help="The account (acct_...) whose readers to list.")
@click.option("--page-size", default=1000, show_default=True, help="Rows per page.")
@_home_option
@_json_option
def audit_list(account, page_size, home, as_json) -> None:
    """Who read ACCOUNT's personal data, when, why and which fields (this look is logged)."""
    node = _open(home)
    rows, after = [], 0
    while True:
        page = node.audit_entries(account=account, after=after, limit=page_size)
        rows += page.items
        if not page.next_token:
            break
        after = int(page.next_token)
    if as_json:
        _dump([e.as_dict() for e in rows])
        return
    if not rows:
        click.echo(f"no recorded reads of {account}")
    for e in rows:
        click.echo(
            f"{e.seq}\t{_ms(e.at_ms)}\t{e.principal} via {e.via or '-'}\t{e.purpose}\t"
            f"{e.what} x{e.count}\t{','.join(e.fields)}"
        )


@click.command("aggregates")
@click.option("--zone", required=True, help="Generation zone, e.g. CO-ANT.")
@click.option("--from", "start", required=True, help="Window start: ISO 8601 or unix seconds.")
@click.option("--to", "end", required=True, help="Window end (exclusive), a whole hour.")
@click.option(
    "--k",
    default=0,
    type=int,
    help="Suppression threshold (default and minimum: [privacy] k_anonymity).",
)
@click.option(
    "--epsilon",
    default=0.0,
    type=float,
    help="Differential-privacy budget over the three metrics (0: no noise).",
)
@click.option(
    "--bound-wh",
    default=0,
    type=int,
    help="Contribution bound per device-hour under noise, Wh (default 10000).",
)
@_home_option
@_json_option
def aggregates(zone, start, end, k, epsilon, bound_wh, home, as_json) -> None:
    """Wh issued, transferred and claimed in ZONE per hour and source, for a regulator.

    Cells with fewer than k distinct devices or holders are suppressed (marked, no Wh).
    """
    report = _open(home).aggregates(
        zone=zone,
        start=_parse_time(start, "--from"),
        end=_parse_time(end, "--to"),
        k=k,
        epsilon=epsilon,
        bound_wh=bound_wh,
    )
    if as_json:
        _dump(report.as_dict())
        return
    d = report.as_dict()
    click.echo(
        f"zone {d['zone']}  k={d['k']}  epsilon={d['epsilon']:g}  mechanism: {d['mechanism']}"
        + (f"  scale {d['noise_scale']:.1f} Wh" if epsilon else "")
    )
    for c in d["cells"]:
        wh = "suppressed" if c["suppressed"] else f"{c['wh']:,} Wh"
        click.echo(f"{_s(c['hour_start_unix'])}\t{c['metric']}\t{c['source']}\t{wh}")
    totals = ", ".join(f"{m} {v:,} Wh" for m, v in d["totals_published_wh"].items())
    click.echo(f"published totals: {totals}; {d['suppressed_cells']} cell(s) suppressed")


@click.command("regulator-token")
@_home_option
def regulator_token(home) -> None:
    """Create (or replace) the regulator's API token and print it once.

    The token reads aggregates (purpose REGULATION) and nothing else.
    """
    click.echo(_open(home).config.create_regulator_token())


def _ms(at_ms: int) -> str:
    return _s(at_ms // 1000)


def _s(unix: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M")


def register(main: click.Group) -> None:
    """Add ``audit-log``, ``aggregates`` and ``regulator-token`` to ``eap-node``."""
    main.add_command(audit_log)
    main.add_command(aggregates)
    main.add_command(regulator_token)
