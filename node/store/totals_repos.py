"""The node's running totals: read from the ``totals`` table, never by scanning.

Triggers created by migration 0014 keep ``totals`` exact in the same transaction as every
insert, update or delete of accounts, devices, readings, bundles and transfers, whichever code
path writes them.  :func:`recount` computes the same figures with full scans, for tests and
``eap-node status --recount`` style audits.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from eap.node.records.enums import Status
from eap.node.store import schema as t
from eap.node.store import transfer_repos

INT64_MAX = 2**63 - 1


def _saturated(value) -> int:
    """A total as a non-negative int64 (the wire type of every total), saturating."""
    return max(0, min(int(value or 0), INT64_MAX))


def totals(conn: Connection) -> dict[str, int]:
    """The maintained totals, in the shape of :func:`recount` (one indexed read)."""
    raw = {name: value for name, value in conn.execute(select(t.totals.c.name, t.totals.c.value))}
    out = {
        "devices": _saturated(raw.get("devices")),
        "accounts": _saturated(raw.get("accounts")),
        "readings": _saturated(raw.get("readings")),
        "bundles_active": _saturated(raw.get(f"bundles_{int(Status.ACTIVE)}")),
        "wh_metered": _saturated(raw.get("wh_metered")),
        "wh_issued": _saturated(raw.get("wh_issued")),
    }
    for status in Status:
        key = f"wh_{int(status)}"
        if raw.get(key):
            out[f"wh_{status.name.lower()}"] = _saturated(raw[key])
    # Cumulative Wh moved by committed cross-node transfers; like the recount, these names
    # win over the Wh of bundles now in status EXPORTED (``wh_exported``).
    out["wh_exported"] = _saturated(raw.get(f"transfers_wh_{transfer_repos.OUT}"))
    out["wh_imported"] = _saturated(raw.get(f"transfers_wh_{transfer_repos.IN}"))
    return out


def recount(conn: Connection) -> dict[str, int]:
    """The same totals by full scans (what ``totals`` must always equal)."""
    from eap.node.store.repos import full_totals

    return full_totals(conn)
