"""Helpers for the SD receipt tests: a node with three issued hours and one claim."""

from __future__ import annotations

from pathlib import Path

from support import write_csv

ROWS = [
    ("2026-01-01 10:00:00", "2026-01-01 11:00:00", "1", 200),
    ("2026-01-01 11:00:00", "2026-01-01 12:00:00", "1", 180),
    ("2026-01-01 12:00:00", "2026-01-01 13:00:00", "1", 150),
]


def setup_claim(node, owner: str, tmp: Path, *, wh: int = 120):
    """Import and issue three hours for meter ``1``, then claim ``wh`` of the first bundle."""
    from eap.node.records.enums import Purpose, Status

    node.import_readings(write_csv(tmp / "m.csv", ROWS), request_id="imp")
    node.issue(request_id="iss")
    bundles = node.list_bundles(
        purpose=Purpose.OPERATIONS, owner=owner, status=int(Status.ACTIVE), page_size=100
    ).items
    first = min(bundles, key=lambda b: b.interval_start)
    return node.retire(
        first.id,
        wh=wh,
        beneficiary='Café "La Esquina"',
        purpose="scope2-market-based",
        request_id="claim-1",
    )
