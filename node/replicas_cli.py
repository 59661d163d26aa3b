"""``eap-node replicas``: the serving processes of this node's database and the jobs they run.

Registered on the main command group by :func:`register`; the facts come from
:mod:`eap.node.store.coordination` (on PostgreSQL ``pg_locks`` and ``pg_stat_activity``).
"""

from __future__ import annotations

import datetime as dt

import click
from rich.table import Table
from rich.text import Text

from eap.node.cli import _emit, _home_option, _json_option, _open
from eap.node.store.coordination import JOBS


def _since(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@_home_option
@_json_option
def replicas(home, as_json) -> None:
    """Serving processes (`eap-node serve` replicas) of this node's database, and which
    background job each one runs right now.

    On PostgreSQL every replica is listed with its PostgreSQL backend pid, its
    application name (`eap-node HOST PID`) and address; on SQLite at most one process serves.
    Jobs are held one replica at a time (docs/deploy.md "Several replicas").
    """
    coordinator = _open(home).store.coordinator
    live = coordinator.replicas()
    held = coordinator.held(list(JOBS))
    jobs: dict[int, list[str]] = {}
    for h in held:
        name = h["name"]
        jobs.setdefault(h["pid"], []).append(
            "settlement round" if name.startswith("lock ") else name
        )
    # a replica's jobs run on other connections of the same process: match by application
    by_app: dict[str, list[str]] = {}
    apps = coordinator.applications() if held else {}
    for pid, names in jobs.items():
        by_app.setdefault(apps.get(pid, ""), []).extend(names)
    data = [{**r, "jobs": sorted(by_app.get(r["application"], []))} for r in live]
    table = Table("backend pid", "application", "client", "since (UTC)", "jobs now")
    for r in data:
        table.add_row(
            str(r["pid"]),
            Text(r["application"]),
            Text(r["client"]),
            _since(r["since_ms"]),
            Text(", ".join(r["jobs"]) or "-"),
        )
    if not data and not as_json:
        click.echo("no `eap-node serve` process is serving this node's database")
        return
    _emit({"replicas": data, "database": coordinator.dialect}, as_json, table=table)


def register(main: click.Group) -> None:
    """Add ``replicas`` to the main command group."""
    main.add_command(replicas)
