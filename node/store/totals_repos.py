"""The node's running totals: read from the ``totals`` table, never by scanning.

Triggers created by migration 0014 keep ``totals`` exact in the same transaction as every
insert, update or delete of accounts, devices, readings, bundles and transfers, whichever code
path writes them, with one exception: on SQLite (which has no statement-level triggers, and
whose row triggers made bulk inserts two to three times slower) inserts of ``readings`` and
``bundles`` are counted here, by :func:`count_readings` and :func:`count_bundles`, which the
store's only writers of those rows (``repos.insert_readings``, ``repos.insert_bundles``) call
in the same transaction (migration 0018).  Issued records kept as runs (``bundle_runs``,
migration 0021) have no trigger on either database: ``run_repos.insert_runs`` counts them
with :func:`count_run_records`, and a run record's first change, which writes it to
``bundles`` as it was, is not counted again (:func:`uncount_materialized`).

:func:`recount` computes the same figures with full scans, for tests and
``eap-node status --recount`` style audits.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sqlalchemy import Connection, select

from eap.node.records.enums import Status
from eap.node.store import schema as t
from eap.node.store import transfer_repos

INT64_MAX = 2**63 - 1


def _saturated(value) -> int:
    """A total as a non-negative int64 (the wire type of every total), saturating."""
    return max(0, min(int(value or 0), INT64_MAX))


def _counted_here(conn: Connection) -> bool:
    """Whether inserts are counted by this module (SQLite) rather than by triggers."""
    return conn.dialect.name == "sqlite"


def _add(conn: Connection, deltas: Mapping[str, int]) -> None:
    """Add ``deltas`` to the named totals: one upsert, in name order, zeros skipped."""
    # A total past int64 is stored as a REAL, as SQLite's own arithmetic does on overflow.
    rows = [(k, int(v) if -INT64_MAX <= v <= INT64_MAX else float(v))
            for k, v in sorted(deltas.items()) if v]
    if rows:
        p = "%s" if conn.dialect.name == "postgresql" else "?"
        conn.exec_driver_sql(
            f"INSERT INTO totals (name, value) VALUES ({p}, {p}) ON CONFLICT (name) "
            "DO UPDATE SET value = totals.value + excluded.value",
            rows,
        )


def _sum(values: np.ndarray) -> int:
    """The exact sum of int64 values (NumPy's own sum wraps around past int64)."""
    if not len(values):
        return 0
    peak = max(abs(int(values.max())), abs(int(values.min())))
    if peak * len(values) <= INT64_MAX:
        return int(values.sum())
    return sum(values.tolist())


def count_readings(conn: Connection, wh) -> None:
    """Count readings just inserted with these Wh values (SQLite; a no-op on PostgreSQL)."""
    if _counted_here(conn) and len(wh):
        _add(conn, {"readings": len(wh), "wh_metered": _sum(np.asarray(wh, np.int64))})


def count_bundles(conn: Connection, *, status, serial_start, serial_end, issuer, root) -> None:
    """Count bundles just inserted (SQLite; a no-op on PostgreSQL): per status their number
    and Wh, and as ``wh_issued`` the Wh of this node's own issued (``root``) bundles.

    Columns are sequences of equal length; ``issuer`` may be one string for all rows and
    ``root`` (no parent) one bool for all rows."""
    if not _counted_here(conn) or not len(status):
        return
    status = np.asarray(status, np.int64)
    wh = np.asarray(serial_end, np.int64) - np.asarray(serial_start, np.int64)
    me = conn.exec_driver_sql("SELECT value FROM meta WHERE key = 'node_id'").scalar()
    mine = np.asarray(issuer, dtype=object) == me
    issued = mine & np.asarray(root, dtype=bool)
    deltas: dict[str, int] = {"wh_issued": _sum(wh[np.broadcast_to(issued, wh.shape)])}
    for s in np.unique(status).tolist():
        at = status == s
        deltas[f"bundles_{s}"] = int(at.sum())
        deltas[f"wh_{s}"] = _sum(wh[at])
    _add(conn, deltas)


def count_run_records(conn: Connection, *, records: int, wh: int) -> None:
    """Count ``records`` issued records of ``wh`` Wh just stored as runs (``run_repos``):
    ACTIVE, this node's own issuance.  Runs have no triggers, so both databases count here."""
    active = int(Status.ACTIVE)
    _add(conn, {f"bundles_{active}": records, f"wh_{active}": wh, "wh_issued": wh})


def uncount_materialized(conn: Connection, *, wh: int, issued: bool) -> None:
    """Take back what PostgreSQL's insert trigger just counted for a run record written to
    ``bundles`` as it was (``run_repos.materialize``): it was counted with its run.  (SQLite
    counts inserts in :func:`count_bundles`, which that write does not call.)"""
    if _counted_here(conn):
        return
    active = int(Status.ACTIVE)
    deltas = {f"bundles_{active}": -1, f"wh_{active}": -wh}
    if issued:
        deltas["wh_issued"] = -wh
    _add(conn, deltas)


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
