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
