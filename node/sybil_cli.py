"""``eap-node devices duplicates`` and ``eap-node devices check``: the duplicate-device alerts
of this node and an on-demand sweep against its peers (docs/security.md "Duplicate devices").

Registered from :mod:`eap.node.cli` under the ``devices`` group.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import click
from rich.table import Table
from rich.text import Text

from eap.node.cli import _emit, _home_option, _json_option, _open
from eap.node.domain import sybil


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.command("duplicates")
@_home_option
@_json_option
def duplicates(home, as_json) -> None:
    """List meters found registered at a peer node too (refused or flagged registrations)."""
    items = sybil.list_duplicates(_open(home))
    table = Table(
        "id", "detected (UTC)", "action", "peer", "device", "ref", title="duplicate devices"
    )
    for d in items:
        table.add_row(
            *(
                Text(str(v))
                for v in (
                    d["id"],
                    _when(d["detected_at_ms"]),
                    d["action"],
                    d["peer"],
                    d["device_id"] or "-",
                    d["local_ref"],
                )
            )
        )
    _emit(
        items,
        as_json,
        table if items else None,
        text=None if items else "no duplicate devices found",
    )


@click.command("check")
@click.option("--peer", "peers", multiple=True, help="Only this peer (repeatable).")
@_home_option
@_json_option
def check(peers, home, as_json) -> None:
    """Check every local meter against the peers now (blinded; spends their budget)."""
    from eap.node.federation.client import PeerClient
    from eap.node.federation.device_check import DeviceChecker
    from eap.node.federation.peers import TrustList
    from eap.node.federation.settings import FederationSettings

    node = _open(home)
    settings = FederationSettings.load(node.config)
    trust = TrustList(node.store, node.node_id, cache_s=0)
    with PeerClient(node, trust=trust, settings=settings) as client:
        checker = DeviceChecker(node, client, trust, settings)
        while sybil.backfill_own_tags(node):
            pass
        known = checker.peers()
        unknown = [p for p in peers if p not in known]
        if unknown:
            raise click.ClickException(
                f"not an active peer offering the device check: {', '.join(unknown)}"
            )
        results = [checker.sweep_peer(p) for p in (peers or known)]
    table = Table("peer", "meters checked", "new duplicates", "error", title="device check")
    for r in results:
        table.add_row(
            *(Text(str(v)) for v in (r["peer"], r["checked"], r["flagged"], r["error"] or ""))
        )
    _emit(results, as_json, table)
    if any(r["error"] for r in results):
        raise SystemExit(1)


@contextlib.contextmanager
def meter_guard(node):
    """While registering from the CLI: check the meter against the peers, as ``serve`` does,
    when the home federates (has TLS material); a no-op otherwise."""
    from eap.node.federation.runtime import tls_configured

    if node.meter_guard is not None or not tls_configured(node):
        yield
        return
    from eap.node.federation.client import PeerClient
    from eap.node.federation.device_check import DeviceChecker
    from eap.node.federation.peers import TrustList
    from eap.node.federation.settings import FederationSettings

    settings = FederationSettings.load(node.config)
    trust = TrustList(node.store, node.node_id, cache_s=0)
    with PeerClient(node, trust=trust, settings=settings) as client:
        node.meter_guard = DeviceChecker(node, client, trust, settings)
        try:
            yield
        finally:
            node.meter_guard = None


def register(devices: click.Group) -> None:
    """Add the commands to the ``devices`` group."""
    devices.add_command(duplicates)
    devices.add_command(check)
