"""This node's issued records kept as runs until their first change (``bundle_runs``).

Issuance stores a batch as one row per (batch, device): the device's records of the batch,
contiguous in serials, with their serial ends, interval bounds and lineage hashes as packed
arrays (schema ``bundle_runs``, migration 0021).  A record in a run is an ACTIVE bundle owned
by its device's owner, unsplit, held here, at row version 0.  Its first change writes it to
``bundles`` (:func:`materialize`, called by ``repos.get_bundle(lock=True)`` and
``repos.set_bundle_state``), and from then on that row *is* the record: every reader skips a
run's record that has a row with its exact serial range (:func:`shadowed`).  Rows of
``bundles`` never go away, so a record is in exactly one of the two forms at any time.

Readers in ``store/`` merge the two forms: listings by their keyset key
``(issuer, serial_start, serial_end)`` (runs are ordered and contiguous in serials, so a
page stays a range read), aggregates by expanding the runs inside their window.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from sqlalchemy import Connection, and_, func, literal, select, tuple_

from eap.node.records.enums import Status
from eap.node.records.models import Bundle
from eap.node.store import schema as t
from eap.node.store import totals_repos
from eap.node.store.engine import bulk_insert, insert_if_absent

HASH = 32
#: Runs fetched per round trip while streaming (a run of a month's hours is about 40 kB).
CHUNK = 64

_R = t.bundle_runs.c
_B = t.bundles.c


def parse_id(ref: str) -> tuple[str, int, int] | None:
    """``(issuer, start, end)`` of a well-formed bundle id ``issuer/start-end`` (serials below
    2**63, as the store holds them), else None."""
    issuer, _, serials = ref.rpartition("/")
    start, _, end = serials.partition("-")
    if not issuer or not start.isdigit() or not end.isdigit():
        return None
    if max(int(start), int(end)) >= 2**63:
        return None
    return issuer, int(start), int(end)


@dataclass
class Run:
    """One run, decoded: record ``i`` spans serials ``[starts[i], ends[i])``."""

    issuer: str
    serial_start: int
    serial_end: int
    n: int
    batch_seq: int
    device_id: str
    source: int
    technology: int
    renewable_ppm: int
    carbon_mg: int
    zone: str
    cell: str
    owner: str
    issued_at_ms: int
    interval_lo: int
    interval_hi: int
    ends_blob: bytes
    starts_blob: bytes
    stops_blob: bytes
    lineage: bytes

    @classmethod
    def of(cls, row) -> Run:
        return cls(*row)

    @cached_property
    def ends(self) -> np.ndarray:
        return np.frombuffer(self.ends_blob, "<i8")

    @cached_property
    def serials(self) -> np.ndarray:
        """Serial start of each record."""
        out = np.empty(self.n, np.int64)
        out[0] = self.serial_start
        out[1:] = self.ends[:-1]
        return out

    @cached_property
    def interval_starts(self) -> np.ndarray:
        return np.frombuffer(self.starts_blob, "<i8")

    @cached_property
    def interval_ends(self) -> np.ndarray:
        return np.frombuffer(self.stops_blob, "<i8")

    def index_of(self, start: int, end: int) -> int | None:
        """The record spanning exactly ``[start, end)``, or None."""
        if not self.serial_start <= start < self.serial_end:
            return None
        i = int(np.searchsorted(self.serials, start))
        if i < self.n and int(self.serials[i]) == start and int(self.ends[i]) == end:
            return i
        return None

    def bundle(self, i: int) -> Bundle:
        return next(self.bundles([i]))

    def bundles(self, indexes: Sequence[int] | np.ndarray) -> Iterator[Bundle]:
        """The records at ``indexes`` (fewer array lookups than :meth:`bundle` per record)."""
        serials, ends = self.serials.tolist(), self.ends.tolist()
        starts, stops = self.interval_starts.tolist(), self.interval_ends.tolist()
        lin, issuer, active = self.lineage, self.issuer, int(Status.ACTIVE)
        for i in indexes:
            s, e = serials[i], ends[i]
            yield Bundle(
                f"{issuer}/{s}-{e}", issuer, s, e, self.device_id, starts[i], stops[i],
                self.source, self.technology, self.renewable_ppm, self.carbon_mg, self.zone,
                self.cell, self.owner, active, None, lin[i * HASH : (i + 1) * HASH].hex(),
                self.issued_at_ms,
            )


_COLUMNS = [
    _R.issuer, _R.serial_start, _R.serial_end, _R.n, _R.batch_seq, _R.device_id, _R.source,
    _R.technology, _R.renewable_ppm, _R.carbon_mg, _R.zone, _R.cell, _R.owner,
    _R.issued_at_ms, _R.interval_lo, _R.interval_hi, _R.ends, _R.starts, _R.stops, _R.lineage,
]


# -- writing ---------------------------------------------------------------------------------


def insert_runs(
    conn: Connection,
    *,
    issuer: str,
    batch_seq: int,
    issued_at_ms: int,
    records: Mapping[str, np.ndarray],
    devices: Sequence[Mapping[str, object]],
    lineage: bytes,
) -> int:
    """Store an issued batch as runs and count its records in the totals; returns the number
    of runs.

    ``records`` holds per-record arrays ``serial_start``, ``serial_end`` (contiguous: each
    record starts where the previous ended), ``interval_start``, ``interval_end`` and
    ``device`` (an index into ``devices``, whose mappings give ``device_id``, ``source``,
    ``technology``, ``renewable_ppm``, ``carbon_mg``, ``zone``, ``cell`` and ``owner``);
    ``lineage`` is the records' 32-byte lineage hashes, concatenated.  A run is each maximal
    stretch of consecutive records of one device.
    """
    dev = np.asarray(records["device"])
    m = len(dev)
    if not m:
        return 0
    s0 = np.asarray(records["serial_start"], np.int64)
    e0 = np.asarray(records["serial_end"], np.int64)
    if len(lineage) != m * HASH:
        raise ValueError("one 32-byte lineage hash per record")
    if m > 1 and not np.array_equal(s0[1:], e0[:-1]):
        raise ValueError("a batch's records must be contiguous in serials")
    starts = np.asarray(records["interval_start"], "<i8")
    stops = np.asarray(records["interval_end"], "<i8")
    ends = e0.astype("<i8")
    cut = np.flatnonzero(np.diff(dev) != 0) + 1
    lo = np.r_[0, cut]
    hi = np.r_[cut, m]
    code = dev[lo]
    los, his = lo.tolist(), hi.tolist()
    # (column by column, through the store's bulk path: PostgreSQL COPY, SQLite executemany)
    rows = {
        "issuer": [issuer] * len(los),
        "serial_start": s0[lo],
        "serial_end": e0[hi - 1],
        "n": (hi - lo).astype(np.int64),
        "batch_seq": np.full(len(los), batch_seq, np.int64),
        **{
            key: [devices[int(c)][key] for c in code.tolist()]
            for key in ("device_id", "zone", "cell", "owner")
        },
        **{
            key: np.array([int(devices[int(c)][key]) for c in code.tolist()], np.int64)
            for key in ("source", "technology", "renewable_ppm", "carbon_mg")
        },
        "issued_at_ms": np.full(len(los), issued_at_ms, np.int64),
        "interval_lo": np.minimum.reduceat(starts, lo).astype(np.int64),
        "interval_hi": np.maximum.reduceat(starts, lo).astype(np.int64),
        "ends": [ends[a:b].tobytes() for a, b in zip(los, his, strict=True)],
        "starts": [starts[a:b].tobytes() for a, b in zip(los, his, strict=True)],
        "stops": [stops[a:b].tobytes() for a, b in zip(los, his, strict=True)],
        "lineage": [lineage[a * HASH : b * HASH] for a, b in zip(los, his, strict=True)],
    }
    bulk_insert(conn, t.bundle_runs, rows)
    totals_repos.count_run_records(conn, records=m, wh=int(e0[-1] - s0[0]))
    return len(los)


def materialize(conn: Connection, issuer: str, start: int, end: int) -> bool:
    """Write the run record ``[start, end)`` of ``issuer`` to ``bundles`` as it is (version 0)
    if it has no row yet; True if this call wrote it.

    Two writers racing here both insert; the unique serial range lets one through and the
    other's insert does nothing (on PostgreSQL it waits for the first to commit), so both then
    update the one row under its version check and exactly one change wins.
    """
    run = run_at(conn, issuer, start)
    i = None if run is None else run.index_of(start, end)
    if i is None:
        return False
    row = dict(run.bundle(i).to_dict(), batch_seq=run.batch_seq, version=0)
    done = insert_if_absent(conn, t.bundles, row)
    if done:
        # PostgreSQL's insert trigger counted the row; its record was counted with its run
        totals_repos.uncount_materialized(conn, wh=end - start, issued=True)
    return done


# -- reading ---------------------------------------------------------------------------------


def run_at(conn: Connection, issuer: str, serial: int) -> Run | None:
    """The run of ``issuer`` holding serial ``serial``, or None."""
    row = conn.execute(
        select(*_COLUMNS)
        .where(_R.issuer == issuer, _R.serial_start <= serial)
        .order_by(_R.serial_start.desc())
        .limit(1)
    ).first()
    if row is None or not serial < row.serial_end:
        return None
    return Run.of(row)


def shadowed(conn: Connection, run: Run) -> set[int]:
    """Indexes of the run's records that have a ``bundles`` row (its exact serial range)."""
    rows = conn.execute(
        select(_B.serial_start, _B.serial_end).where(
            _B.issuer == run.issuer,
            _B.serial_start >= run.serial_start,
            _B.serial_start < run.serial_end,
            _B.parent_id.is_(None),
        )
    ).all()
    out = set()
    for s, e in rows:
        i = run.index_of(int(s), int(e))
        if i is not None:
            out.add(i)
    return out


def fresh_record(conn: Connection, issuer: str, start: int, end: int) -> Run | None:
    """The run holding ``[start, end)`` as a record with no row yet (the caller has looked
    for the row), or None."""
    run = run_at(conn, issuer, start)
    if run is None or run.index_of(start, end) is None:
        return None
    return run


def iter_runs(
    conn: Connection,
    *,
    owner: str | None = None,
    device: str | None = None,
    zone: str | None = None,
    issuer: str | None = None,
    window: tuple[int, int] | None = None,
    after: tuple[str, int] | None = None,
    chunk: int = CHUNK,
) -> Iterator[Run]:
    """Runs matching the filters in ``(issuer, serial_start)`` order, from the run holding
    serial ``after = (issuer, serial)`` on (all runs when None), ``chunk`` runs a read;
    ``window = (start, end)`` keeps runs with a record whose interval starts in it."""
    where = []
    if window is not None:
        where += [_R.interval_lo < window[1], _R.interval_hi >= window[0]]
    if issuer is not None:
        where.append(_R.issuer == issuer)
    # The filter whose index leads the key (device, owner, zone: ix_bundle_runs_*): written
    # as a range of that index, in its order, as repos.bundles_page_query does for rows, so
    # PostgreSQL walks it from the page's position rather than from the filter's first run.
    lead = [(c, v) for c, v in ((_R.device_id, device), (_R.owner, owner), (_R.zone, zone))
            if v is not None]
    where += [c == v for c, v in lead[1:]]
    lead = lead[:1]
    cols = [c for c, _ in lead]
    vals = [literal(v) for _, v in lead]
    if lead:
        where.append(tuple_(*cols) <= tuple_(*vals))
    key = tuple_(*cols, _R.issuer, _R.serial_start)
    size = 2  # a page of a listing often needs one or two runs: read more as more are used
    if after is not None:
        first = run_at(conn, *after)
        if first is not None and _matches(first, owner, device, zone, issuer, window):
            yield first
            after = (first.issuer, first.serial_start)
        pos = after
    else:
        pos = None
    while True:
        q = select(*_COLUMNS).where(*where)
        if pos is not None:
            q = q.where(key > tuple_(*vals, *map(literal, pos)))
        elif lead:
            q = q.where(tuple_(*cols) >= tuple_(*vals))
        rows = conn.execute(q.order_by(*cols, _R.issuer, _R.serial_start).limit(size)).all()
        for row in rows:
            yield Run.of(row)
        if len(rows) < size:
            return
        pos = (rows[-1].issuer, rows[-1].serial_start)
        size = min(chunk, size * 2)


def _matches(run: Run, owner, device, zone, issuer, window) -> bool:
    return (
        (window is None or (run.interval_lo < window[1] and run.interval_hi >= window[0]))
        and (owner is None or run.owner == owner)
        and (device is None or run.device_id == device)
        and (zone is None or run.zone == zone)
        and (issuer is None or run.issuer == issuer)
    )


def fresh_indexes(conn: Connection, run: Run, after: tuple[str, int, int] | None = None):
    """Indexes of the run's records without a row, past keyset key ``after`` if given."""
    gone = shadowed(conn, run)
    first = 0
    if after is not None and after[0] == run.issuer:
        # records whose (start, end) > (after start, after end): from the first start past it
        first = int(np.searchsorted(run.serials, after[1], side="right"))
        prev = first - 1
        if prev >= 0 and int(run.serials[prev]) == after[1] and int(run.ends[prev]) > after[2]:
            first = prev
    elif after is not None and after[0] > run.issuer:
        return []
    return [i for i in range(first, run.n) if i not in gone]


def fresh_bundles(
    conn: Connection,
    *,
    owner: str | None = None,
    device: str | None = None,
    after: tuple[str, int, int] | None = None,
) -> Iterator[Bundle]:
    """Every run record without a row matching the filters, past keyset key ``after``, in
    key order."""
    for run in iter_runs(
        conn, owner=owner, device=device, after=None if after is None else after[:2]
    ):
        yield from run.bundles(fresh_indexes(conn, run, after))


def in_range(conn: Connection, issuer: str, start: int, end: int) -> Iterator[Run]:
    """Runs of ``issuer`` overlapping serials ``[start, end)``, in serial order."""
    first = run_at(conn, issuer, start)
    if first is not None:
        yield first
    rows = conn.execute(
        select(*_COLUMNS)
        .where(_R.issuer == issuer, _R.serial_start > start, _R.serial_start < end)
        .order_by(_R.serial_start)
    ).all()
    for row in rows:
        yield Run.of(row)


def batch_seq_at(conn: Connection, issuer: str, start: int, end: int) -> int | None:
    run = fresh_record(conn, issuer, start, end)
    return None if run is None else run.batch_seq


def hourly_wh(conn: Connection, run: Run, start: int, end: int) -> list[tuple[int, int]]:
    """``(hour, Wh)`` of the run's records without a row whose interval starts in
    ``[start, end)``, per generation hour (``interval_start`` floored to the hour)."""
    starts = run.interval_starts
    keep = (starts >= start) & (starts < end)
    gone = shadowed(conn, run)
    if gone:
        keep[list(gone)] = False
    if not keep.any():
        return []
    hours, at = np.unique((starts - starts % 3600)[keep], return_inverse=True)
    wh = np.zeros(len(hours), np.int64)
    np.add.at(wh, at, (run.ends - run.serials)[keep])  # exact: int64 throughout
    return list(zip(hours.tolist(), wh.tolist(), strict=True))


def fresh_wh_by_owner(conn: Connection, owners: Sequence[str]) -> dict[str, int]:
    """Per owner among ``owners``: Wh of its run records without a row (all ACTIVE)."""
    if not owners:
        return {}
    total = {
        o: int(w)
        for o, w in conn.execute(
            select(_R.owner, func.sum(_R.serial_end - _R.serial_start))
            .where(_R.owner.in_(list(owners)))
            .group_by(_R.owner)
        )
    }
    gone = conn.execute(
        select(_R.owner, func.sum(_B.serial_end - _B.serial_start))
        .select_from(t.bundle_runs.join(t.bundles, _shadow_join()))
        .where(_R.owner.in_(list(owners)), _B.parent_id.is_(None))
        .group_by(_R.owner)
    )
    for o, w in gone:
        total[o] = total.get(o, 0) - int(w or 0)
    return {o: w for o, w in total.items() if w}


def _shadow_join():
    """Rows inside a run's serials (with ``parent_id IS NULL``: the run's own records)."""
    return and_(
        _B.issuer == _R.issuer,
        _B.serial_start >= _R.serial_start,
        _B.serial_start < _R.serial_end,
    )


def totals(conn: Connection) -> tuple[int, int, int, int]:
    """(records, Wh, records with a row, Wh with a row) over all runs, by scans: the
    recount's share of runs."""
    n, wh = conn.execute(
        select(func.coalesce(func.sum(_R.n), 0),
               func.coalesce(func.sum(_R.serial_end - _R.serial_start), 0))
    ).one()
    gn, gwh = conn.execute(
        select(func.count(), func.coalesce(func.sum(_B.serial_end - _B.serial_start), 0))
        .select_from(t.bundle_runs.join(t.bundles, _shadow_join()))
        .where(_B.parent_id.is_(None))
    ).one()
    return int(n), int(wh), int(gn), int(gwh)


