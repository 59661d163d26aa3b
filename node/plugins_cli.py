"""``eap-node plugins`` and ``eap-node anchor``: what the plugins are and how anchoring stands.

Registered on the main command group by :func:`register`.
"""

from __future__ import annotations

import click

from eap.node.cli import _emit, _home_option, _json_option, _open
from eap.node.cli_output import Table
from eap.node.domain import anchoring
from eap.node.domain.plugin_listing import listing


@click.command("plugins")
@_home_option
@_json_option
def plugins_(home, as_json) -> None:
    """Loaded plugins (version, hooks implemented) and the health of each backend."""
    data = listing(_open(home))
    table = Table("plugin", "version", "hooks")
    for p in data["plugins"]:
        table.add_row(p["name"], p["version"], ", ".join(p["hooks"]) or "-")
    _emit(data, as_json, table)
    if not as_json:
        health = Table("kind", "backend", "plugin", "ok", "detail")
        for b in data["backends"]:
            health.add_row(b["kind"], b["name"], b["plugin"], "yes" if b["ok"] else "NO",
                           b["detail"])
        _emit(None, False, health)


@click.group()
def anchor() -> None:
    """The durable queue of issuance batches waiting for anchoring plugins."""


@anchor.command("status")
@_home_option
@_json_option
def anchor_status(home, as_json) -> None:
    """Per anchoring plugin: batches anchored, queued, the oldest queued seq, last error."""
    rows = anchoring.status(_open(home))
    table = Table("plugin", "loaded", "anchored", "queued", "oldest queued", "last error")
    for r in rows:
        table.add_row(r["plugin"], "yes" if r["loaded"] else "no", str(r["anchored"]),
                      str(r["pending"]), str(r["oldest_pending"] or "-"), r["last_error"] or "-")
    _emit(rows, as_json, table)


@anchor.command("catch-up")
@_home_option
@_json_option
def anchor_catch_up(home, as_json) -> None:
    """Send every queued batch to its anchoring plugin now (each batch once per plugin)."""
    result = anchoring.drain(_open(home))
    text = f"anchored {result['anchored']} batch(es); {result['pending']} still queued"
    for plugin, error in sorted(result["failed"].items()):
        text += f"\n  {plugin}: {error}"
    _emit(result, as_json, text=text)
    if result["failed"]:
        raise SystemExit(11)


def register(main: click.Group) -> None:
    from eap.node.anchor_cli import register as register_verify

    register_verify(anchor)
    main.add_command(plugins_)
    main.add_command(anchor)
