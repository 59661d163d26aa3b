"""Repositories: every SQL statement the domain needs, grouped by aggregate.

Each function takes an open :class:`sqlalchemy.Connection` inside the caller's unit of work,
so a domain operation composes several of them atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from sqlalchemy import Connection, func, insert, literal, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError, OperationalError

from eap.node.errors import FieldViolation, InvalidArgument
from eap.node.records.enums import Status
from eap.node.records.models import Account, Bundle, ClaimReceipt, Device
from eap.node.store import run_repos, totals_repos, transfer_repos
from eap.node.store import schema as t
from eap.node.store.engine import bulk_insert

# -- meta & counters ---------------------------------------------------------------------------


def get_meta(conn: Connection) -> dict[str, str]:
    return {r.key: r.value for r in conn.execute(select(t.meta))}


def put_meta(conn: Connection, values: dict[str, str]) -> None:
    for key, value in values.items():
        done = conn.execute(update(t.meta).where(t.meta.c.key == key).values(value=value))
        if done.rowcount == 0:
            conn.execute(insert(t.meta).values(key=key, value=value))


def bump(conn: Connection, name: str, n: int = 1) -> int:
    """Atomically add ``n`` to a counter; returns the value *before* the bump.

    One upsert: concurrent first bumps from several replicas never both insert (the loser of
    the unique key waits for the winner's row and adds to it)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    stmt = upsert(t.counters).values(name=name, value=n)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.counters.c.name], set_={"value": t.counters.c.value + n}
    ).returning(t.counters.c.value)
    return int(conn.execute(stmt).scalar_one()) - n


# -- accounts ----------------------------------------------------------------------------------


def insert_account(conn: Connection, acct: Account, token_hash: str | None) -> None:
    conn.execute(
        insert(t.accounts).values(
            id=acct.id,
            label=acct.label,
            identity=acct.identity,
            disclosed=acct.disclosed,
            token_hash=token_hash,
            created_at_ms=acct.created_at_ms,
            holder_public_key=acct.holder_public_key,
        )
    )


def _balances(conn: Connection, ids: Sequence[str]) -> dict[str, int]:
    if not ids:
        return {}
    wh = func.sum(t.bundles.c.serial_end - t.bundles.c.serial_start)
    rows = conn.execute(
        select(t.bundles.c.owner, wh)
        .where(t.bundles.c.owner.in_(ids), t.bundles.c.status == int(Status.ACTIVE))
        .group_by(t.bundles.c.owner)
    )
    out = {r[0]: int(r[1]) for r in rows}
    for owner, fresh in run_repos.fresh_wh_by_owner(conn, ids).items():
        out[owner] = out.get(owner, 0) + fresh
    return out


def get_account(conn: Connection, account_id: str) -> Account | None:
    row = conn.execute(select(t.accounts).where(t.accounts.c.id == account_id)).first()
    if row is None:
        return None
    return _account(row, _balances(conn, [account_id]).get(account_id, 0))


def account_by_token(conn: Connection, token_hash: str) -> str | None:
    row = conn.execute(select(t.accounts.c.id).where(t.accounts.c.token_hash == token_hash)).first()
    return row[0] if row else None


def list_accounts(conn: Connection, after: str, limit: int) -> list[Account]:
    rows = conn.execute(
        select(t.accounts).where(t.accounts.c.id > after).order_by(t.accounts.c.id).limit(limit)
    ).all()
    balances = _balances(conn, [r.id for r in rows])
    return [_account(r, balances.get(r.id, 0)) for r in rows]


def _account(row, balance: int) -> Account:
    return Account(
        id=row.id,
        label=row.label,
        identity=row.identity,
        disclosed=bool(row.disclosed),
        balance_wh=balance,
        created_at_ms=row.created_at_ms,
        holder_public_key=bytes(row.holder_public_key) if row.holder_public_key else None,
    )


# -- devices -----------------------------------------------------------------------------------


def insert_device(conn: Connection, dev: Device) -> None:
    conn.execute(insert(t.devices).values(**dev.to_dict()))


def get_device(conn: Connection, ref: str) -> Device | None:
    """By pseudonym id or by the operator's local reference."""
    row = conn.execute(
        select(t.devices).where((t.devices.c.id == ref) | (t.devices.c.local_ref == ref))
    ).first()
    return Device(**row._mapping) if row else None


def device_conflicts(conn: Connection, local_ref: str, meter_id: str) -> list[str]:
    rows = conn.execute(
        select(t.devices.c.local_ref, t.devices.c.meter_id).where(
            (t.devices.c.local_ref == local_ref) | (t.devices.c.meter_id == meter_id)
        )
    ).all()
    out = []
    if any(r.local_ref == local_ref for r in rows):
        out.append("device.local_ref")
    if any(r.meter_id == meter_id for r in rows):
        out.append("device.meter_id")
    return out


def present_values(conn: Connection, column, values: Iterable[str], chunk: int = 2000) -> set[str]:
    """Which of ``values`` are in ``column`` (an indexed column), queried in chunks."""
    ordered = sorted(set(values))
    found: set[str] = set()
    for lo in range(0, len(ordered), chunk):
        part = ordered[lo : lo + chunk]
        found.update(conn.execute(select(column).where(column.in_(part))).scalars())
    return found


@contextlib.contextmanager
def _driver_cursor(conn: Connection, *, stream: bool = False):
    """A cursor of the driver on this transaction's connection (rows as plain tuples).

    With ``stream`` on PostgreSQL, a server-side cursor: ``fetchmany`` then brings that many
    rows over, where a plain cursor receives the whole result first (a window of two million
    pending readings took another 240 MB)."""
    dbapi = conn.connection.dbapi_connection
    if stream and conn.dialect.name == "postgresql":
        cursor = dbapi.cursor(name=f"eap_stream_{id(conn):x}")
    else:
        cursor = dbapi.cursor()
    try:
        yield cursor
    finally:
        cursor.close()


def _in_ids(conn: Connection, ids: list[str]) -> tuple[str, object]:
    """``IN``-list of ``ids`` as one bound parameter, however many: (SQL after the column,
    its argument).  A list of 1,000 parameters costs PostgreSQL more to plan than to run."""
    if conn.dialect.name == "postgresql":
        return "= ANY(%s::text[])", ids
    return "IN (SELECT value FROM json_each(?))", json.dumps(ids)


def device_keys_by_meter(
    conn: Connection, meter_ids: Sequence[str]
) -> list[tuple[str, str, int, int | None]]:
    """``(meter_id, device id, capacity_w, latest start)`` of the devices behind these meter
    ids, ``latest start`` being the ``interval_start`` of the device's last stored reading
    (None without any; one step back in the (device, start) index), as plain driver tuples:
    an import maps a city's meters at once (the ids as one parameter, :func:`_in_ids`)."""
    ids = list(meter_ids)
    if not ids:
        return []
    sql, arg = _in_ids(conn, ids)
    with _driver_cursor(conn) as cursor:
        cursor.execute(
            "SELECT d.meter_id, d.id, d.capacity_w, "
            "(SELECT max(r.interval_start) FROM readings r WHERE r.device_id = d.id) "
            f"FROM devices d WHERE d.meter_id {sql}",
            (arg,),
        )
        return cursor.fetchall()


class IssuanceDevice(NamedTuple):
    """What issuance needs of a device (one batch may span a city's devices)."""

    source: int
    technology: int
    renewable_ppm: int
    carbon_mg: int
    capacity_w: int
    zone: str
    owner: str
    cell: str


def issuance_devices(conn: Connection, ids: Sequence[str]) -> dict[str, IssuanceDevice]:
    """The issuance fields of these devices by id, in one query whatever their number (the
    ids go as one parameter, see :func:`_in_ids`)."""
    ids = list(ids)
    if not ids:
        return {}
    sql, arg = _in_ids(conn, ids)
    with _driver_cursor(conn) as cursor:
        cursor.execute(
            "SELECT id, source, technology, renewable_ppm, carbon_mg, capacity_w, zone, owner, "
            f"cell FROM devices WHERE id {sql}",
            (arg,),
        )
        return {row[0]: IssuanceDevice._make(row[1:]) for row in cursor.fetchall()}


def list_devices(conn: Connection, after: str, limit: int) -> list[Device]:
    rows = conn.execute(
        select(t.devices)
        .where(t.devices.c.id > after)
        .order_by(t.devices.c.id)
        .limit(limit)
        .execution_options(yield_per=500)
    )
    return [Device(**r._mapping) for r in rows]


# -- readings ----------------------------------------------------------------------------------


def readings_in_range(conn: Connection, device_ids: Sequence[str], lo: int, hi: int) -> list:
    """Existing readings of these devices that intersect ``[lo, hi)``, as plain
    ``(i, interval_start, interval_end, wh)`` tuples straight from the driver, ``i`` being the
    device's position in ``device_ids`` (a re-import compares whole chunks of them; no
    strings per row).  The plan walks the ids and looks each device up in the (device, start)
    index, so rows usually come by (i, start), but no order is promised.  Readings last at
    most an hour, so ``interval_start > lo - 3600`` makes each look-up a range of the index.

    The ids go as one JSON array parameter, however many: SQLite's ``json_each``,
    PostgreSQL's ``json_array_elements_text`` (the driver took 0.3 s to send 100,000 ids as a
    ``text[]``; a LATERAL subquery with ``OFFSET 0`` keeps the per-device index look-up as the
    plan whatever the planner guesses of the table).  On
    PostgreSQL it turns JIT and bitmap scans off for the rest of the caller's transaction
    (``SET LOCAL``: an import's transaction, whose other statements do not need them)."""
    ids = list(device_ids)
    if not ids:
        return []
    with _driver_cursor(conn) as cursor:
        if conn.dialect.name == "postgresql":
            # compiling costs more than it saves here, and a bitmap for the few rows of one
            # device's index range more than reading them in index order
            cursor.execute("SET LOCAL jit = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            cursor.execute(
                "SELECT k.n - 1, r.interval_start, r.interval_end, r.wh "
                "FROM json_array_elements_text(%s::json) WITH ORDINALITY AS k(id, n) "
                "CROSS JOIN LATERAL ("
                "SELECT interval_start, interval_end, wh FROM readings WHERE device_id = k.id "
                "AND interval_start > %s AND interval_start < %s AND interval_end > %s "
                "OFFSET 0) r",
                (json.dumps(ids), lo - 3600, hi, lo),
            )
        else:
            cursor.execute(
                "SELECT k.key, r.interval_start, r.interval_end, r.wh FROM json_each(?) AS k "
                "JOIN readings r ON r.device_id = k.value "
                "WHERE r.interval_start > ? AND r.interval_start < ? AND r.interval_end > ?",
                (json.dumps(ids), lo - 3600, hi, lo),
            )
        return cursor.fetchall()


def _pending(q, device_id: str | None, since: int):
    r = t.readings.c
    q = q.where(r.issued_wh < r.wh, r.interval_start >= since)
    return q.where(r.device_id == device_id) if device_id else q


#: Advisory lock key serialising issuers on PostgreSQL ("EAP_ISSU").
_ISSUE_LOCK = 0x4541505F49535355


def lock_issuance(conn: Connection) -> None:
    """Serialise issuers until the transaction ends: on PostgreSQL a transaction-level advisory
    lock (replicas of one node share the database); SQLite transactions already hold the
    database's write lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ISSUE_LOCK})


def pending_page(
    conn: Connection, after_id: int, limit: int, device_id: str | None, since: int, *, lock: bool
):
    """The next ``limit`` readings with un-issued Wh after reading id ``after_id`` (keyset
    pagination by id: each page is an index range scan, never a load of everything pending).

    With ``lock`` on PostgreSQL, issuers are serialised by a transaction-level advisory lock
    taken first: a concurrent issuance waits for this batch's commit and then reads the rows
    as issued.  (Row locks, ``FOR UPDATE``, would write every row of the page twice.)  SQLite
    transactions already hold the database's write lock."""
    if lock:
        lock_issuance(conn)
    r = t.readings.c
    q = _pending(
        select(r.id, r.device_id, r.interval_start, r.interval_end, r.wh, r.issued_wh).where(
            r.id > after_id
        ),
        device_id,
        since,
    )
    return conn.execute(q.order_by(r.id).limit(limit)).all()


def count_pending(conn: Connection, device_id: str | None, since: int) -> tuple[int, int]:
    """(readings, Wh) not yet issued, for progress reporting."""
    r = t.readings.c
    q = _pending(
        select(func.count(), func.coalesce(func.sum(r.wh - r.issued_wh), 0)), device_id, since
    )
    n, wh = conn.execute(q).one()
    return int(n), int(wh)


#: The per-row arrays of :class:`PendingReadings` besides ids and device codes.
_PENDING_ARRAYS = ("starts", "ends", "wh", "issued")


@dataclasses.dataclass(frozen=True, slots=True)
class PendingReadings:
    """Pending readings column by column (issuance's input): reading ids, device ids as codes
    into ``devices``, interval bounds, metered and already issued Wh."""

    ids: np.ndarray
    device: np.ndarray
    devices: list[str]
    starts: np.ndarray
    ends: np.ndarray
    wh: np.ndarray
    issued: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of_rows(cls, rows: Sequence[Sequence]) -> PendingReadings:
        """From rows ``(id, device_id, interval_start, interval_end, wh, issued_wh)``."""
        n = len(rows)
        cols = list(zip(*rows, strict=True)) if n else [()] * 6
        table: dict[str, int] = {}
        code = np.fromiter((table.setdefault(d, len(table)) for d in cols[1]), np.int32, n)
        ids, starts, ends, wh, issued = (np.fromiter(cols[i], np.int64, n) for i in (0, 2, 3, 4, 5))
        return cls(ids, code, list(table), starts, ends, wh, issued)

    @classmethod
    def empty(cls, n: int) -> PendingReadings:
        """Room for ``n`` rows (uninitialised), no devices yet."""
        ids, starts, ends, wh, issued = (np.empty(n, np.int64) for _ in range(5))
        return cls(ids, np.empty(n, np.int32), [], starts, ends, wh, issued)

    def take(self, index) -> PendingReadings:
        """These rows (an index array or a slice), sharing the device table."""
        arrays = ("ids", "device", *_PENDING_ARRAYS)
        return dataclasses.replace(self, **{f: getattr(self, f)[index] for f in arrays})

    def device_major(self) -> PendingReadings:
        """The rows by device id, then interval start: a batch cut from them touches few
        devices and owners, so each of the bundle table's per-device and per-owner indexes is
        written in a few places instead of one per device of the city.

        Sorts these arrays in place, a column at a time, and returns them: a window holds
        millions of rows, and a sorted copy of all of it would double its memory."""
        rank = np.argsort(np.array(self.devices, dtype=object)).argsort() if self.devices else []
        order = np.lexsort((self.starts, np.asarray(rank, np.int64)[self.device]))
        for f in ("ids", "device", *_PENDING_ARRAYS):
            column = getattr(self, f)
            column[:] = column[order]
        return self


#: Rows fetched from the driver at a time while a window of pending readings is read.
PENDING_FETCH = 50_000

#: PostgreSQL sends each pending reading's integers packed, big-endian, in one ``bytea``:
#: the driver makes two objects per row instead of six, and numpy reads a page of them in
#: one call (a window of two million readings: 4.2 s down to 1.9 s).
_PACKED = (
    "int8send(id) || int8send(interval_start) || int8send(interval_end) || int8send(wh) "
    "|| int8send(issued_wh)"
)


def pending_window(
    conn: Connection, after_id: int, limit: int, device_id: str | None, since: int
) -> PendingReadings:
    """Up to ``limit`` pending readings after reading id ``after_id``, in id order, as columns
    (fetched in pages from the driver: a million rows take 44 MB)."""
    pg = conn.dialect.name == "postgresql"
    columns = f"device_id, {_PACKED}" if pg else "id, device_id, interval_start, interval_end, " \
        "wh, issued_wh"
    sql = (
        f"SELECT {columns} FROM readings "
        "WHERE id > {p} AND issued_wh < wh AND interval_start >= {p}"
    )
    args: list = [after_id, since]
    if device_id:
        sql += " AND device_id = {p}"
        args.append(device_id)
    sql += " ORDER BY id LIMIT {p}"
    args.append(limit)
    sql = sql.format(p="%s" if pg else "?")
    # Filled in place as parts arrive: a window of millions of rows is never held twice (its
    # untouched tail costs no memory: pages are only taken when written).
    out = PendingReadings.empty(limit)
    table: dict[str, int] = {}
    fields = ("ids", *_PENDING_ARRAYS)
    n = 0
    with _driver_cursor(conn, stream=True) as cursor:
        cursor.execute(sql, args)
        while rows := cursor.fetchmany(PENDING_FETCH):
            at = slice(n, n + len(rows))
            if pg:
                code = (table.setdefault(r[0], len(table)) for r in rows)
                out.device[at] = np.fromiter(code, np.int32, len(rows))
                packed = np.frombuffer(b"".join([r[1] for r in rows]), ">i8")
                packed = packed.reshape(len(rows), len(fields))
                for j, f in enumerate(fields):
                    getattr(out, f)[at] = packed[:, j]
            else:
                part = PendingReadings.of_rows(rows)
                remap = [table.setdefault(d, len(table)) for d in part.devices]
                out.device[at] = np.array(remap, np.int32)[part.device]
                for f in fields:
                    getattr(out, f)[at] = getattr(part, f)
            n += len(rows)
    return dataclasses.replace(out.take(slice(0, n)), devices=list(table))


def claim_pending(conn: Connection, reading_ids: np.ndarray) -> int:
    """Set ``issued_wh = wh`` on those of these readings still pending; how many that was.

    Issuance claims its rows first in each batch's transaction: fewer than asked means another
    issuer took some since they were read, and the batch must be rolled back."""
    a = np.unique(np.asarray(reading_ids, dtype=np.int64))
    if not len(a):
        return 0
    # Runs of consecutive ids, one range update each (no other row lies inside a run): an
    # importer stores each device's hours of a chunk under consecutive ids, so a batch cut in
    # device order is a few dozen runs.  Each is a range scan of the primary key.  (On
    # PostgreSQL, ``id = ANY(<100,000 ids>)`` was planned as a scan of the whole table: 1.1 s
    # per batch at 7.2 M readings, and growing with every reading ever stored.)
    cut = np.flatnonzero(np.diff(a) != 1) + 1
    runs = list(zip(a[np.r_[0, cut]].tolist(), a[np.r_[cut - 1, len(a) - 1]].tolist(), strict=True))
    p = "%s" if conn.dialect.name == "postgresql" else "?"
    sql = f"UPDATE readings SET issued_wh = wh WHERE id BETWEEN {p} AND {p} AND issued_wh < wh"
    with _driver_cursor(conn) as cursor:
        cursor.executemany(sql, runs)
        return cursor.rowcount


# -- bundles -----------------------------------------------------------------------------------


def get_bundle(
    conn: Connection, bundle_id: str, *, lock: bool = False
) -> tuple[Bundle, int] | None:
    """The bundle and its row version (for optimistic concurrency).

    A record still in its issuance run (``run_repos``) is read from there at version 0; with
    ``lock`` (a writer about to change it) it is first written to ``bundles``, so the change
    updates a row like any other (and on PostgreSQL the row is locked)."""
    q = select(t.bundles).where(t.bundles.c.id == bundle_id)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None:
        key = run_repos.parse_id(bundle_id)
        run = None if key is None else run_repos.fresh_record(conn, *key)
        if run is None:
            return None
        if not lock:
            return run.bundle(run.index_of(key[1], key[2])), 0
        run_repos.materialize(conn, *key)
        row = conn.execute(q).first()
        if row is None:
            return None
    return _bundle(row), row.version


def _bundle(row) -> Bundle:
    m = dict(row._mapping)
    m.pop("version", None)
    m.pop("batch_seq", None)
    return Bundle(**m)


def insert_bundles(conn: Connection, items: Sequence[Bundle], batch_seq: int | None = None) -> None:
    """Insert bundles (and count them in the totals, see totals_repos)."""
    rows = [dict(b.to_dict(), batch_seq=batch_seq, version=0) for b in items]
    if rows:
        conn.execute(insert(t.bundles), rows)
        totals_repos.count_bundles(
            conn,
            status=[b.status for b in items],
            serial_start=[b.serial_start for b in items],
            serial_end=[b.serial_end for b in items],
            issuer=[b.issuer for b in items],
            root=[b.parent_id is None for b in items],
        )


def insert_readings(conn: Connection, columns: Mapping[str, Sequence]) -> int:
    """Bulk-insert readings given column by column (``device_id``, ``interval_start``,
    ``interval_end``, ``wh``, ``issued_wh``) and count them in the totals."""
    n = bulk_insert(conn, t.readings, columns)
    totals_repos.count_readings(conn, columns["wh"])
    return n


def set_bundle_state(
    conn: Connection, bundle_id: str, version: int, *, expect_status: Status, **values
) -> bool:
    """Conditional update: succeeds only if nobody changed the bundle since it was read.

    A record read from its issuance run (version 0, no row yet) is written to ``bundles``
    first (``run_repos.materialize``)."""
    c = t.bundles.c
    stmt = (
        update(t.bundles)
        .where(c.id == bundle_id, c.version == version, c.status == int(expect_status))
        .values(version=c.version + 1, **values)
    )
    if conn.execute(stmt).rowcount == 1:
        return True
    key = run_repos.parse_id(bundle_id) if version == 0 else None
    if key is None or not run_repos.materialize(conn, *key):
        return False
    return conn.execute(stmt).rowcount == 1


#: The bundle columns in :class:`Bundle` field order (rows build records positionally).
_BUNDLE_COLUMNS = [t.bundles.c[f] for f in Bundle.__dataclass_fields__]


def bundle_page_key(bundle_ref: str) -> tuple[str, int, int]:
    """The keyset position ``(issuer, serial_start, serial_end)`` of a bundle id
    ``issuer/start-end`` (unique: a split parent and its first child share ``serial_start``)."""
    key = run_repos.parse_id(bundle_ref)
    if key is None:
        serials = bundle_ref.rpartition("/")[2].split("-")
        why = "not a bundle id"
        if all(x.isdigit() for x in serials) and max(map(int, serials)) >= 2**63:
            why = "serial beyond 2**63 - 1"  # serials are 64-bit signed in the store
        raise InvalidArgument("invalid page token", [FieldViolation("page_token", why)])
    return key


def bundles_page_query(
    *, owner: str | None, status: int | None, device: str | None, after: str, limit: int
):
    """One keyset page in serial order: ``(issuer, serial_start, serial_end) > after``, an
    index range scan on the filter's composite index (migrations 0014, 0019) with no sort,
    never OFFSET."""
    c = t.bundles.c
    q = select(*_BUNDLE_COLUMNS)
    # The filter's index: its equality columns, then the key.  The filter is written as a range
    # of that index, ordered as it is, and never as an equality: PostgreSQL would then drop the
    # constant column from the order, cannot estimate a row comparison, and may walk the
    # range index instead, filtering every row after the page start (a whole table's rows for
    # a small owner's page, 10 x slower for a large one).  Only the filter's index gives
    # this order.
    lead = [(col, v) for col, v in ((c.owner, owner), (c.status, status)) if v]
    if device:  # the device's index; owner and status, if given, filter its rows
        q = q.where(*(col == v for col, v in lead))
        lead = [(c.device_id, device)]
    cols = [col for col, _ in lead]
    vals = [literal(v) for _, v in lead]
    key = [c.issuer, c.serial_start, c.serial_end]
    if lead:
        q = q.where(tuple_(*cols) <= tuple_(*vals))  # and >= below: the filter's equality
    if after:
        after_key = map(literal, bundle_page_key(after))
        q = q.where(tuple_(*cols, *key) > tuple_(*vals, *after_key))
    elif lead:
        q = q.where(tuple_(*cols) >= tuple_(*vals))
    return q.order_by(*cols, *key).limit(limit)


def list_bundles(
    conn: Connection,
    *,
    owner: str | None,
    status: int | None,
    device: str | None,
    after: str,
    limit: int,
) -> list[Bundle]:
    return list(
        iter_bundles(conn, owner=owner, status=status, device=device, after=after, limit=limit)
    )


def iter_bundles(
    conn: Connection,
    *,
    owner: str | None,
    status: int | None,
    device: str | None,
    after: str,
    limit: int,
    chunk: int = 500,
) -> Iterator[Bundle]:
    """The page's bundles as they arrive: fetched ``chunk`` rows at a time (a server-side
    cursor on PostgreSQL), so a large page never sits in memory at once."""
    q = bundles_page_query(owner=owner, status=status, device=device, after=after, limit=limit)
    rows = (Bundle(*row) for row in conn.execute(q.execution_options(yield_per=chunk)))
    runs = fresh_page(conn, owner=owner, status=status, device=device, after=after)
    yield from itertools.islice(heapq.merge(rows, runs, key=_key), limit)


def all_bundles(conn: Connection) -> Iterator[Bundle]:
    """Every bundle in serial order, rows and run records alike (audits and tests)."""
    return iter_bundles(conn, owner=None, status=None, device=None, after="", limit=2**62)


def _key(b: Bundle) -> tuple[str, int, int]:
    return b.issuer, b.serial_start, b.serial_end


def fresh_page(
    conn: Connection, *, owner: str | None, status: int | None, device: str | None, after: str
) -> Iterator[Bundle]:
    """The run records without a row (``run_repos``) matching a listing's filters, past page
    token ``after``, in the listing's serial order (read lazily: a page takes what it needs)."""
    if status and status != int(Status.ACTIVE):
        return iter(())
    return run_repos.fresh_bundles(
        conn, owner=owner, device=device, after=bundle_page_key(after) if after else None
    )


# -- batches & claims --------------------------------------------------------------------------


def insert_batch(conn: Connection, **values) -> None:
    conn.execute(insert(t.batches).values(**values))


def batches_after(conn: Connection, seq: int, limit: int):
    return conn.execute(
        select(t.batches).where(t.batches.c.seq > seq).order_by(t.batches.c.seq).limit(limit)
    ).all()


def insert_claim(conn: Connection, seq: int, receipt: ClaimReceipt) -> None:
    conn.execute(
        insert(t.claims).values(
            seq=seq,
            id=receipt.id,
            bundle_id=receipt.bundle.id,
            beneficiary=receipt.beneficiary,
            purpose=receipt.purpose,
            consumption_start=receipt.consumption_start,
            consumption_end=receipt.consumption_end,
            consumption_zone=receipt.consumption_zone,
            wh=receipt.bundle.wh,
            claimed_at_ms=receipt.claimed_at_ms,
            digest=receipt.digest,
            signature=receipt.signature,
            key_id=receipt.key_id,
            sd_receipt=receipt.sd_receipt or None,
        )
    )


def list_claims(conn: Connection, beneficiary: str | None, after: int, limit: int):
    c = t.claims.c
    q = (
        select(t.claims, t.bundles)
        .join(t.bundles, t.bundles.c.id == c.bundle_id)
        .where(c.seq > after)
    )
    if beneficiary:
        q = q.where(c.beneficiary == beneficiary)
    return [
        (row._mapping[c.seq], _claim(row._mapping))
        for row in conn.execute(q.order_by(c.seq).limit(limit).execution_options(yield_per=500))
    ]


def get_claim(conn: Connection, claim_id: str) -> ClaimReceipt | None:
    """The claim ``claim_id`` (with its retired bundle), or None."""
    c = t.claims.c
    row = conn.execute(
        select(t.claims, t.bundles)
        .join(t.bundles, t.bundles.c.id == c.bundle_id)
        .where(c.id == claim_id)
    ).first()
    return None if row is None else _claim(row._mapping)


def _claim(m) -> ClaimReceipt:
    c = t.claims.c
    bundle = Bundle(**{k: m[t.bundles.c[k]] for k in Bundle.__dataclass_fields__})
    return ClaimReceipt(
        id=m[c.id],
        bundle=bundle,
        beneficiary=m[c.beneficiary],
        purpose=m[c.purpose],
        consumption_start=m[c.consumption_start],
        consumption_end=m[c.consumption_end],
        consumption_zone=m[c.consumption_zone],
        claimed_at_ms=m[c.claimed_at_ms],
        digest=bytes(m[c.digest]),
        signature=bytes(m[c.signature]),
        key_id=m[c.key_id],
        sd_receipt=m[c.sd_receipt] or "",
    )


def journal(conn: Connection, rows: Sequence[dict]) -> None:
    if rows:
        conn.execute(insert(t.journal), list(rows))


def audit(conn: Connection, **values) -> None:
    conn.execute(insert(t.audit_log).values(**values))


# -- obligations ------------------------------------------------------------------------------


def insert_obligation(conn: Connection, **values) -> None:
    conn.execute(insert(t.obligations).values(**values))


def obligations(conn: Connection, period: str | None, currency: str | None):
    c = t.obligations.c
    q = select(t.obligations)
    if period:
        q = q.where(c.period == period)
    if currency:
        q = q.where(c.currency == currency)
    return conn.execute(q.order_by(c.id)).all()


# -- idempotency -------------------------------------------------------------------------------


def get_idempotent(conn: Connection, request_id: str):
    return conn.execute(
        select(t.idempotency).where(t.idempotency.c.request_id == request_id)
    ).first()


def put_idempotent(
    conn: Connection, request_id: str, operation: str, request_hash: str, response: dict, at_ms: int
) -> None:
    try:
        conn.execute(
            insert(t.idempotency).values(
                request_id=request_id,
                operation=operation,
                request_hash=request_hash,
                response=json.dumps(response, sort_keys=True),
                created_at_ms=at_ms,
            )
        )
    except IntegrityError as exc:  # a concurrent request with the same id won
        raise InvalidArgument("request_id raced with a concurrent request") from exc


# -- statistics --------------------------------------------------------------------------------


INT64_MAX = 2**63 - 1


def _saturated(value) -> int:
    """A sum as a non-negative int64 (the wire type of every total), saturating, never raising."""
    return max(0, min(int(value or 0), INT64_MAX))


def _sum(conn: Connection, expr, *where, group_by=None) -> list[tuple]:
    """``SUM(expr)`` (per ``group_by`` if given) that survives values past int64.

    PostgreSQL sums BIGINT as NUMERIC; SQLite's SUM raises "integer overflow", so it falls back
    to TOTAL (a float: exact below 2**53, saturated afterwards).  Never raises on big values.
    """

    def run(agg):
        cols = (agg(expr),) if group_by is None else (group_by, agg(expr))
        q = select(*cols).where(*where)
        return conn.execute(q if group_by is None else q.group_by(group_by)).all()

    try:
        rows = run(func.sum)
    except OperationalError:  # SQLite only; a failed SELECT leaves its transaction usable
        rows = run(func.total)
    return [(*row[:-1], _saturated(row[-1])) for row in rows]


def totals(conn: Connection) -> dict[str, int]:
    """The node's totals from the maintained ``totals`` table (no scan; see totals_repos)."""
    from eap.node.store.totals_repos import totals as maintained

    return maintained(conn)


def full_totals(conn: Connection) -> dict[str, int]:
    """The same totals by full scans (the audit of the maintained ones)."""
    c = t.bundles.c
    wh = c.serial_end - c.serial_start
    by_status = dict(_sum(conn, wh, group_by=c.status))
    [(issued,)] = _sum(
        conn,
        wh,
        c.parent_id.is_(None),
        c.issuer == select(t.meta.c.value).where(t.meta.c.key == "node_id").scalar_subquery(),
    )
    [(metered,)] = _sum(conn, t.readings.c.wh)
    count = lambda tbl: conn.execute(select(func.count()).select_from(tbl)).scalar()  # noqa: E731
    active_n = conn.execute(select(func.count()).where(c.status == int(Status.ACTIVE))).scalar()
    # records still in their issuance runs: ACTIVE, this node's own issuance
    run_n, run_wh, rowed_n, rowed_wh = run_repos.totals(conn)
    if run_n:
        active = int(Status.ACTIVE)
        by_status[active] = int(by_status.get(active) or 0) + run_wh - rowed_wh
        active_n = int(active_n) + run_n - rowed_n
        issued = int(issued or 0) + run_wh - rowed_wh
    return {
        "devices": count(t.devices),
        "accounts": count(t.accounts),
        "readings": count(t.readings),
        "bundles_active": int(active_n),
        "wh_metered": metered,
        "wh_issued": issued,
        **{f"wh_{Status(s).name.lower()}": v for s, v in by_status.items()},
        # Cumulative Wh moved by committed cross-node transfers (a bundle may come back).
        **transfer_repos.totals(conn),
    }
