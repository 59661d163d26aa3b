"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path


def write_csv(path: Path, rows: list[tuple[str, str, str, int]]) -> Path:
    """Write a meter CSV in the shared layout: (start, end, device, wh) rows."""
    lines = [
        "interval_start_datetime,interval_end_datetime,device_id,interval_usage,gross_net_indicator"
    ]
    lines += [f"{s},{e},{d},{w},NET" for s, e, d, w in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_node(
    home: Path, db: str | None = None, node_id: str = "medellin.example", zone: str = "CO-ANT"
):
    from eap.node.config import create_home
    from eap.node.domain.node import Node

    return Node.initialise(create_home(home, node_id, zone, db, operator_signed=True))


def make_bundle(issuer: str, start: int, end: int, owner: str, status, **fields):
    """A bundle of ``dev_x`` with serials ``[start, end)``, solar, issued at hour 0 unless
    ``fields`` say otherwise (any :class:`~eap.node.records.models.Bundle` field, or
    ``hour``)."""
    from eap.node.domain.ledger import bundle_id
    from eap.node.records.enums import Source, Technology
    from eap.node.records.models import Bundle

    hour = fields.pop("hour", 0)
    values = {
        "id": bundle_id(issuer, start, end),
        "issuer": issuer,
        "serial_start": start,
        "serial_end": end,
        "device_id": "dev_x",
        "interval_start": 3600 * hour,
        "interval_end": 3600 * (hour + 1),
        "source": int(Source.SOLAR),
        "technology": int(Technology.PHOTOVOLTAIC),
        "renewable_ppm": 1_000_000,
        "carbon_mg": 0,
        "zone": "CO-ANT",
        "cell": "N06W076",
        "owner": owner,
        "status": int(status),
        "parent_id": None,
        "lineage_hash": "0" * 64,
        "issued_at_ms": 0,
    }
    return Bundle(**{**values, **fields})
