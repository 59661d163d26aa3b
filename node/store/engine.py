"""Engines, transactions and the bulk insert path for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from eap.node.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Newest migration revision; tests/test_store_migrations.py checks it is Alembic's head.
SCHEMA_HEAD = "0023"
#: Advisory lock (PostgreSQL) serialising migrations of replicas starting at once.
MIGRATION_LOCK = (0x45415031, 0x4D494752)


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and select the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_engine(url: str) -> Engine:
    # hide_parameters: a database error (logged with its traceback) never quotes the private
    # values it was bound with (labels, meter ids, locations).
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                           hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - driver callback
        # Let SQLAlchemy, not the driver, decide when transactions start (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed transfer decision survives power loss, not only a process crash.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # 64 MiB of page cache (the default is 2 MiB): bulk imports and issuance insert into
        # several indexes at once, and at city scale their hot pages outgrow 2 MiB.
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # pragma: no cover - driver callback
        # Take the write lock up front: two writers never deadlock upgrading a read lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@dataclass
class Store:
    """A node's database: an engine plus transaction helpers."""

    engine: Engine
    _coordinator: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def coordinator(self) -> Any:
        """Named locks and the replica registry of this database
        (:class:`eap.node.store.coordination.Coordinator`)."""
        if self._coordinator is None:
            from eap.node.store.coordination import Coordinator

            lock_engine = None
            if self.dialect == "postgresql":
                # autocommit connections of their own: no isolation switch per lock, and a
                # job's transactions never queue behind the connections holding locks
                lock_engine = create_engine(
                    self.engine.url,
                    isolation_level="AUTOCOMMIT",
                    pool_size=4,
                    max_overflow=12,
                    connect_args=_pg_connect_args(self.engine.url),
                )
            self._coordinator = Coordinator(self.engine, lock_engine=lock_engine)
        return self._coordinator

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One atomic unit of work: commits on success, rolls back on any exception."""
        with self.engine.begin() as conn:
            yield conn

    def read(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection for reads (on SQLite also a transaction, for a consistent snapshot)."""
        return self.transaction()

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None for an empty database)."""
        with self.engine.connect() as conn:
            return _revision(conn)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent; cheap when already there)."""
        if self.schema_revision() == SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Replicas starting together migrate one after the other: the first upgrades,
                # the others find the schema at its head once they hold the lock.
                conn.exec_driver_sql(
                    "SELECT pg_advisory_xact_lock(%s, %s)", (MIGRATION_LOCK[0], MIGRATION_LOCK[1])
                )
                if _revision(conn) == SCHEMA_HEAD:
                    return
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        if self._coordinator is not None:
            self._coordinator.dispose()
        self.engine.dispose()


def _revision(conn: Connection) -> str | None:
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def application_name() -> str:
    """How this process names itself to PostgreSQL (``pg_stat_activity``, replica listings):
    ``eap-node <host> <pid>``."""
    return f"eap-node {socket.gethostname()} {os.getpid()}"[:63]


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the database at ``url``."""
    try:
        url = normalise_url(url)
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url)
    else:
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            connect_args=_pg_connect_args(parsed),
            hide_parameters=True,
        )
    store = Store(engine)
    if migrate:
        store.migrate()
    return store


#: TCP keepalives both ways (unless the URL sets them): a replica whose machine vanished
#: without closing its connections has its sessions, and so its advisory locks
#: (:mod:`eap.node.store.coordination`), ended by the server within about a minute; a replica
#: notices a vanished server as fast.
PG_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3",
}


def _pg_connect_args(parsed: Any) -> dict:
    """Name the process (unless the URL does) so operators can tell replicas apart, and turn
    keepalives on (:data:`PG_KEEPALIVES`)."""
    args = {k: v for k, v in PG_KEEPALIVES.items() if k not in parsed.query}
    if "application_name" not in parsed.query:
        args["application_name"] = application_name()
    return args


def insert_if_absent(
    conn: Connection, table: Table, values: Mapping[str, Any], *, key: Sequence[str] | None = None
) -> bool:
    """``INSERT ... ON CONFLICT DO NOTHING`` of one row; whether this call wrote it.

    A conflicting row already there (or being written by a transaction not yet committed: on
    PostgreSQL this waits for it) leaves that row as it is.  ``key``: the columns of the one
    unique constraint to ignore conflicts on (any, when None).  Tells by ``RETURNING``, not by
    the row count, which PostgreSQL's driver gives as -1 for this statement."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    ins = dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=key)
    returned = list(table.primary_key.columns)[:1]
    return conn.execute(ins.returning(*returned)).first() is not None


def bulk_insert(conn: Connection, table: Table, rows: Mapping[str, Sequence]) -> int:
    """Insert columns of equal length with the database's bulk path.

    PostgreSQL uses ``COPY ... FROM STDIN`` with the rows rendered column by column into COPY
    text (NULL, bytes and escapes handled); SQLite one ``executemany`` inside the caller's
    transaction.  ``rows`` maps column name to a sequence
    (lists or NumPy arrays).
    """
    names = list(rows)
    # integer arrays need no look at each value's type for COPY
    whole = [getattr(getattr(rows[n], "dtype", None), "kind", "") in ("i", "u") for n in names]
    n = len(rows[names[0]]) if names else 0
    if n == 0:
        return 0
    if any(len(rows[name]) != n for name in names):
        raise ValueError("bulk insert columns differ in length")

    def parts(step: int) -> Iterator[list[list]]:
        """The rows a part at a time, each column as a list: the Python objects of a whole
        issuance batch (20 columns x 100,000 rows) are never all alive at once."""
        for i in range(0, n, step):
            yield [_as_list(rows[name][i : i + step]) for name in names]

    if conn.dialect.name == "postgresql":
        from psycopg.copy import QueuedLibpqWriter  # the optional driver, PostgreSQL only

        raw = conn.connection.driver_connection
        cols = ", ".join(names)
        sql = f"COPY {table.name} ({cols}) FROM STDIN"
        # Rendered and sent a part at a time, through a queue a helper thread drains: the
        # server stores one part while the next is rendered.
        with raw.cursor() as cur, cur.copy(sql, writer=QueuedLibpqWriter(cur)) as copy:
            for part in parts(20_000):
                text = [
                    list(map(str, c)) if ints else _copy_text(c)
                    for c, ints in zip(part, whole, strict=True)
                ]
                lines = "\n".join(map("\t".join, zip(*text, strict=True)))
                copy.write(lines.encode() + b"\n")
    else:
        placeholders = ", ".join("?" for _ in names)
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({placeholders})"
        for part in parts(20_000):  # one executemany per part
            conn.exec_driver_sql(sql, list(zip(*part, strict=True)))
    return n


def _as_list(values: Sequence) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(values: list) -> list[str]:
    """One column as PostgreSQL COPY text values."""
    kinds = {type(v) for v in values}
    if kinds <= {int}:
        return list(map(str, values))
    if kinds <= {str}:
        joined = "".join(values)
        if not any(ch in joined for ch in "\\\t\n\r"):
            return values
        return [v.translate(_COPY_ESCAPES) for v in values]
    out = []
    for v in values:
        if v is None:
            out.append("\\N")
        elif isinstance(v, bytes | bytearray | memoryview):
            out.append("\\\\x" + bytes(v).hex())
        elif isinstance(v, bool):
            out.append("t" if v else "f")
        elif isinstance(v, str):
            out.append(v.translate(_COPY_ESCAPES))
        else:
            out.append(str(v))
    return out
