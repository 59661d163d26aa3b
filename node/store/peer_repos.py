"""Repositories of the federation tables: the trust list, imported peer batches and records.

Like :mod:`eap.node.store.repos`, every function takes an open connection inside the caller's
unit of work.  :func:`insert_peer_records` is the import hot path: PostgreSQL gets one binary
``COPY`` whose payload is assembled by NumPy from the batch columns (no Python object per
record); SQLite gets one ``executemany``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from eap.node.errors import AlreadyExists
from eap.node.store import schema as t

# -- trust list --------------------------------------------------------------------------------


def insert_peer(conn: Connection, values: Mapping) -> None:
    """Add a peer row.

    Raises:
        AlreadyExists: a peer with that node id is on the trust list already.
    """
    try:
        with conn.begin_nested():
            conn.execute(insert(t.peers).values(**values))
    except IntegrityError as exc:
        raise AlreadyExists(f"peer {values['node_id']} is on the trust list already") from exc


def get_peer(conn: Connection, node_id: str, *, lock: bool = False):
    q = select(t.peers).where(t.peers.c.node_id == node_id)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return conn.execute(q).first()


def list_peers(conn: Connection):
    return conn.execute(select(t.peers).order_by(t.peers.c.node_id)).all()


def update_peer(conn: Connection, node_id: str, **values) -> bool:
    done = conn.execute(update(t.peers).where(t.peers.c.node_id == node_id).values(**values))
    return done.rowcount == 1


def delete_peer(conn: Connection, node_id: str) -> bool:
    return conn.execute(delete(t.peers).where(t.peers.c.node_id == node_id)).rowcount == 1


def advance_cursor(conn: Connection, node_id: str, expect: int, new: int, at_ms: int) -> bool:
    """Move a peer's sync cursor from ``expect`` to ``new``; False if it was not at ``expect``."""
    c = t.peers.c
    done = conn.execute(
        update(t.peers)
        .where(c.node_id == node_id, c.cursor == expect)
        .values(cursor=new, last_sync_ms=at_ms, last_error=None)
    )
    return done.rowcount == 1


# -- imported batches ----------------------------------------------------------------------------


def insert_peer_batch(conn: Connection, **values) -> None:
    conn.execute(insert(t.peer_batches).values(**values))


def last_peer_batch(conn: Connection, issuer: str):
    c = t.peer_batches.c
    return conn.execute(
        select(t.peer_batches).where(c.issuer == issuer).order_by(c.seq.desc()).limit(1)
    ).first()


def peer_totals(conn: Connection) -> dict[str, tuple[int, int, int]]:
    """``issuer -> (batches, records, Wh)`` of everything imported."""
    c = t.peer_batches.c
    rows = conn.execute(
        select(
            c.issuer,
            func.count(),
            func.coalesce(func.sum(c.count), 0),
            func.coalesce(func.sum(c.wh), 0),
        ).group_by(c.issuer)
    )
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def count_peer_records(conn: Connection, issuer: str | None = None) -> int:
    q = select(func.count()).select_from(t.peer_records)
    if issuer is not None:
        q = q.where(t.peer_records.c.issuer == issuer)
    return int(conn.execute(q).scalar_one())


# -- the bulk path -------------------------------------------------------------------------------

#: Column order of ``peer_records`` and the PostgreSQL binary type of each: ``q`` int8,
#: ``i`` int4, ``h`` int2, ``s`` text (dictionary-encoded on the way in).
PEER_RECORD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("issuer", "s"),
    ("serial_start", "q"),
    ("serial_end", "q"),
    ("device_id", "s"),
    ("interval_start", "q"),
    ("interval_end", "q"),
    ("source", "h"),
    ("technology", "h"),
    ("renewable_ppm", "i"),
    ("carbon_mg", "i"),
    ("zone", "s"),
    ("owner", "s"),
    ("batch_seq", "q"),
)

_WIDTH = {"q": 8, "i": 4, "h": 2}
_BE = {"q": ">i8", "i": ">i4", "h": ">i2"}
_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_PGCOPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def prepare_peer_records(
    dialect: str,
    n: int,
    numbers: Mapping[str, np.ndarray],
    strings: Mapping[str, tuple[np.ndarray, Sequence[str]]],
) -> PreparedRows:
    """Turn ``n`` peer records given as columns into what the database's bulk path takes.

    Pure computation (no connection), so an importer can prepare the next batch while the
    database writes this one.

    Args:
        dialect: ``"postgresql"`` (binary ``COPY`` payload) or anything else (DB-API rows).
        n: number of records.
        numbers: integer columns by name (``serial_start`` … ``batch_seq``), length ``n``.
        strings: text columns by name as ``(int32 codes, dictionary)`` pairs; a scalar column
            (``issuer``) is a dictionary of one entry with all-zero codes.
    """
    if dialect == "postgresql":
        return PreparedRows(n, copy_data=pgcopy_binary(n, numbers, strings))
    cols = []
    for name, kind in PEER_RECORD_COLUMNS:
        if kind == "s":
            codes, table = strings[name]
            cols.append(np.asarray(table, dtype=object)[codes].tolist())
        else:
            cols.append(np.asarray(numbers[name], dtype=np.int64).tolist())
    return PreparedRows(n, rows=list(zip(*cols, strict=True)))


@dataclass(frozen=True)
class PreparedRows:
    """Peer records ready for one bulk write (see :func:`prepare_peer_records`)."""

    n: int
    copy_data: bytes = b""
    rows: list[tuple] | None = None


def write_peer_records(conn: Connection, prepared: PreparedRows) -> int:
    """Write prepared records: one binary ``COPY`` (PostgreSQL) or one ``executemany``."""
    if prepared.n == 0:
        return 0
    names = ", ".join(name for name, _ in PEER_RECORD_COLUMNS)
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        if not prepared.copy_data:
            raise ValueError("rows prepared for another database")
        with (
            raw.cursor() as cur,
            cur.copy(
                f"COPY {t.peer_records.name} ({names}) FROM STDIN WITH (FORMAT binary)"
            ) as copy,
        ):
            copy.write(prepared.copy_data)
        return prepared.n
    if prepared.rows is None:
        raise ValueError("rows prepared for another database")
    marks = ", ".join("?" for _ in PEER_RECORD_COLUMNS)
    cur = raw.cursor()  # the DB-API cursor of this transaction's connection: no per-row layer
    try:
        cur.executemany(
            f"INSERT INTO {t.peer_records.name} ({names}) VALUES ({marks})", prepared.rows
        )
    finally:
        cur.close()
    return prepared.n


def insert_peer_records(
    conn: Connection,
    n: int,
    numbers: Mapping[str, np.ndarray],
    strings: Mapping[str, tuple[np.ndarray, Sequence[str]]],
) -> int:
    """Bulk-insert ``n`` peer records given as columns (prepare + write in one call)."""
    return write_peer_records(conn, prepare_peer_records(conn.dialect.name, n, numbers, strings))


def pgcopy_binary(
    n: int,
    numbers: Mapping[str, np.ndarray],
    strings: Mapping[str, tuple[np.ndarray, Sequence[str]]],
) -> bytes:
    """PostgreSQL binary ``COPY`` data for ``n`` rows of :data:`PEER_RECORD_COLUMNS`.

    Each row is ``int16 field count`` then, per field, ``int32 length`` and the big-endian
    value (text as UTF-8).  Fixed-width fields are written with strided NumPy assignments;
    text fields are gathered from their dictionary with one fancy-indexing pass per column.
    """
    # Per-row length of every text field (from the dictionary), hence each row's size.
    blobs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    row_len = np.full(n, 2 + 4 * len(PEER_RECORD_COLUMNS), dtype=np.int64)
    for name, kind in PEER_RECORD_COLUMNS:
        if kind == "s":
            codes, table = strings[name]
            encoded = [s.encode("utf-8") for s in table]
            lens = np.fromiter((len(b) for b in encoded), np.int64, len(encoded))
            starts = np.zeros(len(encoded), dtype=np.int64)
            if len(encoded) > 1:
                np.cumsum(lens[:-1], out=starts[1:])
            blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            codes = np.asarray(codes, dtype=np.intp)
            per_row = lens[codes]
            blobs[name] = (blob, starts[codes], per_row, codes)
            row_len += per_row
        else:
            row_len += _WIDTH[kind]
    row_off = np.zeros(n, dtype=np.int64)
    np.cumsum(row_len[:-1], out=row_off[1:])
    body = int(row_len.sum())
    out = np.zeros(len(_PGCOPY_HEADER) + body + 2, dtype=np.uint8)
    base = len(_PGCOPY_HEADER)
    out[:base] = np.frombuffer(_PGCOPY_HEADER, dtype=np.uint8)
    out[base + body :] = np.frombuffer(_PGCOPY_TRAILER, dtype=np.uint8)
    pos = base + row_off  # write cursor of every row

    def put(values: np.ndarray, width: int) -> None:
        # Scatter the big-endian bytes of one value per row at each row's cursor.
        raw = values.view(np.uint8).reshape(n, width)
        idx = pos[:, None] + np.arange(width)
        out[idx] = raw

    put(np.full(n, len(PEER_RECORD_COLUMNS), dtype=">i2"), 2)
    pos += 2
    for name, kind in PEER_RECORD_COLUMNS:
        if kind == "s":
            blob, src, lens, _ = blobs[name]
            put(lens.astype(">i4"), 4)
            pos += 4
            total = int(lens.sum())
            if total:
                first = np.zeros(n, dtype=np.int64)
                np.cumsum(lens[:-1], out=first[1:])
                within = np.arange(total, dtype=np.int64) - np.repeat(first, lens)
                out[np.repeat(pos, lens) + within] = blob[np.repeat(src, lens) + within]
            pos += lens
        else:
            width = _WIDTH[kind]
            put(np.full(n, width, dtype=">i4"), 4)
            pos += 4
            put(np.asarray(numbers[name]).astype(_BE[kind]), width)
            pos += width
    return out.tobytes()
