"""``eap-node report``: a consumer's hourly matching and Scope 2 emissions, as HTML and JSON.

Registered on the main command group by :func:`register`; the figures come from
:mod:`eap.node.domain.matching`, the page from :mod:`eap.node.report_html`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from eap.node.cli import _home_option, _open, _parse_time, console
from eap.node.domain import matching
from eap.node.errors import InvalidArgument, invalid


def read_load(path: Path, meter: str) -> tuple[dict[int, int], str]:
    """Wh by hour of a consumption file (Green Button or the hourly CSV), for ``meter`` or the
    file's only meter; returns the load and the meter it belongs to."""
    from eap.node.meters import ReadOptions, read_meter_file

    readings = read_meter_file(path, options=ReadOptions(kind="consumption"))
    meters = readings.meter_ids()
    if meter:
        if meter not in meters:
            raise invalid("meter", f"not in {path.name}; the file has: {', '.join(meters)}")
        readings = readings.select(meter)
    elif len(meters) != 1:
        raise invalid(
            "meter",
            f"{path.name} holds {len(meters)} meters; pick one with --meter: {', '.join(meters)}",
        )
    else:
        meter = meters[0]
    intervals = zip(
        readings.interval_start.tolist(),
        readings.interval_end.tolist(),
        readings.wh.tolist(),
        strict=True,
    )
    return matching.load_by_hour(intervals), meter


@click.command("report")
@_home_option
@click.option("--account", default="", help="The consumer account: its claims are matched.")
@click.option(
    "--consumption",
    "consumption",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The consumer's load (Green Button XML or hourly CSV); default: the claims' own "
    "consumption intervals.",
)
@click.option("--meter", default="", help="Meter (UsagePoint) of the load file, if it has several.")
@click.option("--zone", default="", help="Bidding zone for the residual and location mixes.")
@click.option("--from", "from_", default="", help="Start (ISO 8601 or unix seconds, UTC).")
@click.option("--to", "to", default="", help="End, exclusive (ISO 8601 or unix seconds, UTC).")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the HTML report here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def report(home, account, consumption, meter, zone, from_, to, out, as_json) -> None:
    """Hourly matching of a consumer's claims against its load: the 24/7 carbon-free score,
    market-based and location-based emissions (GHG Protocol Scope 2), flows between nodes.

    Name --account, --consumption, or both.  Without --from/--to the period is the load
    file's, else the claims'.  --out writes one self-contained HTML file with plots.
    """
    if not account and consumption is None:
        raise click.UsageError("name --account, --consumption, or both")
    if not out and not as_json:
        raise click.UsageError("say where the report goes: --out FILE, --json, or both")
    node = _open(home)
    load = None
    if consumption is not None:
        load, meter = read_load(consumption, meter)
        if not load:
            raise InvalidArgument(f"{consumption.name} has no consumption readings")
    start, end = _parse_time(from_, "--from"), _parse_time(to, "--to")
    if not start or not end:
        span = (min(load), max(load) + 3600) if load else matching.claim_span(node, account)
        if span is None:
            raise invalid("account", f"{account} has no claims; give --from and --to")
        start, end = start or span[0], end or span[1]
    rep = matching.build(node, account=account, start=start, end=end, load=load, zone=zone)
    if out:
        from eap.node.report_html import render

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(rep), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=2, sort_keys=True))
    else:
        console.print(
            f"24/7 carbon-free score {rep.cfe_score:.1%} over {len(rep.hours)} h; "
            f"market-based {rep.market_g / 1000:,.2f} kg, "
            f"location-based {rep.location_g / 1000:,.2f} kg CO2e",
            markup=False,
            highlight=False,
        )
        console.print(f"report written to {out}", markup=False, highlight=False)


def register(main: click.Group) -> None:
    """Add ``report`` to the ``eap-node`` group."""
    main.add_command(report)
