"""Reads behind the hourly matching report (:mod:`eap.node.domain.matching`).

Grouped by UTC hour in SQL, so a report over a year reads a few thousand rows whatever the
number of records.  Wh of a local bundle is ``serial_end - serial_start``; ``mgwh`` sums are
Wh x mg CO2e/kWh (an average intensity is ``mgwh / wh``).
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Connection, func, or_, select

from eap.node.records.enums import Status
from eap.node.store import run_repos
from eap.node.store import schema as t

HOUR = 3600


def consumer_claims(conn: Connection, account: str, start: int, end: int) -> Iterator[tuple]:
    """(generation hour, Wh, source, carbon, zone, issuer, consumption start, end) of every
    claim made for ``account`` (its beneficiary) or from its bundles, generated in the range."""
    b, c = t.bundles.c, t.claims.c
    q = (
        select(
            b.interval_start,
            b.serial_end - b.serial_start,
            b.source,
            b.carbon_mg,
            c.consumption_zone,
            b.issuer,
            c.consumption_start,
            c.consumption_end,
        )
        .join(t.bundles, b.id == c.bundle_id)
        .where(or_(c.beneficiary == account, b.owner == account))
        .where(b.interval_start >= start, b.interval_start < end)
        .order_by(c.seq)
    )
    for row in conn.execute(q):
        yield (row[0] // HOUR * HOUR, *row[1:])


def zone_pool(
    conn: Connection, node_id: str, zone: str, start: int, end: int
) -> dict[int, tuple[int, int, int, int]]:
    """Per hour of ``zone``: (issued Wh, issued mgwh, claimed Wh, claimed mgwh) over the records
    this node knows: its own issuance (leaf bundles, whoever holds them now) and its peers'
    synced records.  Claimed means retired on this node."""
    out: dict[int, list[int]] = {}

    def add(rows, at: int) -> None:
        for hour, wh, mgwh in rows:
            slot = out.setdefault(int(hour) // HOUR * HOUR, [0, 0, 0, 0])
            slot[at] += int(wh or 0)
            slot[at + 1] += int(mgwh or 0)

    b = t.bundles.c
    wh = b.serial_end - b.serial_start
    hour = b.interval_start // HOUR * HOUR
    add(
        conn.execute(
            select(hour, func.sum(wh), func.sum(wh * b.carbon_mg))
            .where(b.issuer == node_id, b.zone == zone, b.status != int(Status.SPLIT))
            .where(b.interval_start >= start, b.interval_start < end)
            .group_by(hour)
        ),
        0,
    )
    # this node's records still in issuance runs (never split: they have no row)
    for run in run_repos.iter_runs(conn, zone=zone, issuer=node_id, window=(start, end)):
        sums = run_repos.hourly_wh(conn, run, start, end)
        add(((h, w, w * run.carbon_mg) for h, w in sums), 0)
    p = t.peer_records.c
    pwh = p.serial_end - p.serial_start
    phour = p.interval_start // HOUR * HOUR
    add(
        conn.execute(
            select(phour, func.sum(pwh), func.sum(pwh * p.carbon_mg))
            .where(p.issuer != node_id, p.zone == zone)
            .where(p.interval_start >= start, p.interval_start < end)
            .group_by(phour)
        ),
        0,
    )
    c = t.claims.c
    add(
        conn.execute(
            select(hour, func.sum(wh), func.sum(wh * b.carbon_mg))
            .select_from(t.claims.join(t.bundles, b.id == c.bundle_id))
            .where(b.zone == zone, b.interval_start >= start, b.interval_start < end)
            .group_by(hour)
        ),
        2,
    )
    return {h: tuple(v) for h, v in out.items()}


def claim_span(conn: Connection, account: str) -> tuple[int, int] | None:
    """First and last generation hour (end exclusive) of the claims made for ``account``."""
    b, c = t.bundles.c, t.claims.c
    lo, hi = conn.execute(
        select(func.min(b.interval_start), func.max(b.interval_end))
        .select_from(t.claims.join(t.bundles, b.id == c.bundle_id))
        .where(or_(c.beneficiary == account, b.owner == account))
    ).one()
    return None if lo is None else (int(lo), int(hi))
