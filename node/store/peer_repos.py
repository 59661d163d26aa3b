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


def relax_commit_durability(conn: Connection) -> None:
    """Let this transaction commit without waiting for its WAL flush (PostgreSQL).

    Only for work that can be redone from elsewhere: an imported batch lost in an OS crash
    takes the cursor move with it (same transaction), so the next sync pulls it again.  The
    database stays consistent either way; SQLite is left as configured.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


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

_BE = {"q": ">i8", "i": ">i4", "h": ">i2"}
_WIDTH = {"q": 8, "i": 4, "h": 2}
#: Column order of the binary ``COPY``: fixed-width columns first, then the text columns, so a
#: row is a fixed-layout prefix plus one "string section" (see :func:`pgcopy_binary`).
COPY_ORDER: tuple[tuple[str, str], ...] = tuple(
    c for c in PEER_RECORD_COLUMNS if c[1] != "s"
) + tuple(c for c in PEER_RECORD_COLUMNS if c[1] == "s")
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
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        if not prepared.copy_data:
            raise ValueError("rows prepared for another database")
        names = ", ".join(name for name, _ in COPY_ORDER)
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
    names = ", ".join(name for name, _ in PEER_RECORD_COLUMNS)
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
    """PostgreSQL binary ``COPY`` data for ``n`` rows, columns in :data:`COPY_ORDER`.

    A row is ``int16 field count`` then, per field, ``int32 length`` and the big-endian value
    (text as UTF-8).  With the fixed-width columns first, a row is a fixed prefix plus a
    *string section* that depends only on the row's combination of text values.  The distinct
    combinations (a batch has about one per device) are encoded once; rows whose sections
    have the same length become one NumPy structured array filled column by column; ``COPY``
    takes rows in any order.  No Python object per record.
    """
    if n == 0:
        return _PGCOPY_HEADER + _PGCOPY_TRAILER
    fixed = [c for c in COPY_ORDER if c[1] != "s"]
    text = [name for name, kind in COPY_ORDER if kind == "s"]
    columns = [np.asarray(strings[name][0], dtype=np.int64) for name in text]
    sizes = [max(1, len(strings[name][1])) for name in text]
    if float(np.prod(np.asarray(sizes, dtype=np.float64))) < 2.0**62:
        key = np.zeros(n, dtype=np.int64)  # mixed-radix number of the row's text values
        for col, size in zip(columns, sizes, strict=True):
            key = key * size + col
        uniq, combo_of_row = np.unique(key, return_inverse=True)
        combos = np.empty((len(uniq), len(text)), dtype=np.int64)
        for k in range(len(text) - 1, -1, -1):
            combos[:, k] = uniq % sizes[k]
            uniq = uniq // sizes[k]
    else:  # pragma: no cover - dictionaries too large for one int64 key
        combos, combo_of_row = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
    combo_of_row = combo_of_row.reshape(-1)
    encoded = [
        [len(b).to_bytes(4, "big") + b for b in (v.encode("utf-8") for v in strings[name][1])]
        for name in text
    ]
    sections = [b"".join([encoded[k][c] for k, c in enumerate(combo)]) for combo in combos.tolist()]
    section_len = np.fromiter((len(x) for x in sections), np.int64, len(sections))
    layout = [("count", ">i2")]
    for name, kind in fixed:
        layout += [(f"{name}__len", ">i4"), (name, _BE[kind])]
    parts = [_PGCOPY_HEADER]
    row_len = section_len[combo_of_row]
    for length in np.unique(row_len).tolist():
        in_class = np.flatnonzero(section_len == length)
        local = np.full(len(sections), -1, dtype=np.int64)
        local[in_class] = np.arange(len(in_class))
        mat = np.frombuffer(
            b"".join(sections[i] for i in in_class.tolist()), dtype=np.uint8
        ).reshape(len(in_class), length)
        rows = np.flatnonzero(row_len == length)
        arr = np.empty(len(rows), dtype=np.dtype([*layout, ("text", np.uint8, (length,))]))
        arr["count"] = len(COPY_ORDER)
        for name, kind in fixed:
            arr[f"{name}__len"] = _WIDTH[kind]
            arr[name] = np.asarray(numbers[name])[rows]
        arr["text"] = mat[local[combo_of_row[rows]]]
        parts.append(arr.tobytes())
    parts.append(_PGCOPY_TRAILER)
    return b"".join(parts)
