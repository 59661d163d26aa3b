"""Raw per-device-hour sums for the regulator aggregates (:mod:`eap.node.domain.aggregates`).

Every query groups by (hour, source, device) and, for moves, the accounts involved, so the
domain layer can count distinct contributors per cell and bound each device-hour's
contribution before anything is summed.  Hours are the generation hour of the energy
(``interval_start`` floored to the hour, unix seconds); zone is the generation zone.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from eap.node.store import run_repos
from eap.node.store import schema as t

#: Journal actions that move energy between holders, and the one that claims it.
TRANSFER_ACTIONS = ("transfer", "export")
CLAIM_ACTIONS = ("retire",)


@dataclass(frozen=True)
class DeviceHour:
    """Wh of one device in one hour and source, with the accounts that moved or claimed it."""

    hour: int
    source: int
    device_id: str
    wh: int
    sender: str = ""
    receiver: str = ""


def _hour(col):
    return col - col % 3600


def issued(conn: Connection, issuer: str, zone: str, start: int, end: int) -> list[DeviceHour]:
    """Wh this node issued per (hour, source, device) of ``zone`` in ``[start, end)``."""
    b = t.bundles.c
    hour = _hour(b.interval_start).label("hour")
    q = (
        select(hour, b.source, b.device_id, func.sum(b.serial_end - b.serial_start).label("wh"))
        .where(
            b.issuer == issuer,
            b.parent_id.is_(None),
            b.batch_seq.is_not(None),
            b.zone == zone,
            b.interval_start >= start,
            b.interval_start < end,
        )
        .group_by(hour, b.source, b.device_id)
    )
    out = [DeviceHour(r.hour, r.source, r.device_id, int(r.wh)) for r in conn.execute(q)]
    # and the records still in issuance runs (those with a row were summed above)
    sums: dict[tuple[int, int, str], int] = {}
    for run in run_repos.iter_runs(conn, zone=zone, issuer=issuer, window=(start, end)):
        for h, wh in run_repos.hourly_wh(conn, run, start, end):
            k = (h, run.source, run.device_id)
            sums[k] = sums.get(k, 0) + wh
    if sums:
        for x in out:
            key = (x.hour, x.source, x.device_id)
            sums[key] = sums.get(key, 0) + x.wh
        out = [DeviceHour(h, s, d, w) for (h, s, d), w in sums.items()]
    return out


def moved(
    conn: Connection, actions: tuple[str, ...], zone: str, start: int, end: int
) -> list[DeviceHour]:
    """Wh of journal ``actions`` per (hour, source, device, sender, receiver) of energy
    generated in ``zone`` in ``[start, end)``."""
    b, j = t.bundles.c, t.journal.c
    hour = _hour(b.interval_start).label("hour")
    q = (
        select(
            hour,
            b.source,
            b.device_id,
            j.from_owner,
            j.to_owner,
            func.sum(j.wh).label("wh"),
        )
        .select_from(t.journal.join(t.bundles, b.id == j.bundle_id))
        .where(
            j.action.in_(actions),
            b.zone == zone,
            b.interval_start >= start,
            b.interval_start < end,
        )
        .group_by(hour, b.source, b.device_id, j.from_owner, j.to_owner)
    )
    return [
        DeviceHour(r.hour, r.source, r.device_id, int(r.wh), r.from_owner or "", r.to_owner or "")
        for r in conn.execute(q)
    ]


def capacities(conn: Connection, device_ids: set[str]) -> dict[str, int]:
    """Nameplate capacity (W) of this node's devices among ``device_ids``."""
    if not device_ids:
        return {}
    d = t.devices.c
    rows = conn.execute(select(d.id, d.capacity_w).where(d.id.in_(sorted(device_ids))))
    return {r.id: int(r.capacity_w) for r in rows}
