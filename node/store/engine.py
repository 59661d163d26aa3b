"""Engines, transactions and the bulk insert path for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.engine import make_url

from eap.node.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Newest migration revision; tests/test_store_migrations.py checks it is Alembic's head.
SCHEMA_HEAD = "0017"


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
        from sqlalchemy import inspect, text

        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent; cheap when already there)."""
        if self.schema_revision() == SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()


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
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                               hide_parameters=True)
    store = Store(engine)
    if migrate:
        store.migrate()
    return store


def bulk_insert(conn: Connection, table: Table, rows: Mapping[str, Sequence]) -> int:
    """Insert columns of equal length with the database's bulk path.

    PostgreSQL uses ``COPY ... FROM STDIN``; SQLite one ``executemany`` inside the caller's
    transaction.  ``rows`` maps column name to a sequence (lists or NumPy arrays).
    """
    names = list(rows)
    columns = [rows[n].tolist() if hasattr(rows[n], "tolist") else list(rows[n]) for n in names]
    n = len(columns[0]) if columns else 0
    if n == 0:
        return 0
    records = list(zip(*columns, strict=True))
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        cols = ", ".join(names)
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as copy:
            for rec in records:
                copy.write_row(rec)
    else:
        placeholders = ", ".join("?" for _ in names)
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({placeholders})"
        conn.exec_driver_sql(sql, records)  # one executemany
    return n
