"""Coordination of several ``eap-node serve`` replicas of one node sharing one database.

A city runs a node as several stateless replicas behind a load balancer, all on one PostgreSQL
database (docs/deploy.md).  Request handling needs no coordination beyond the database's own
(unique keys, conditional updates, row locks, ``FOR UPDATE SKIP LOCKED`` claims with leases in
the transfer outbox).  Background work does: each periodic task, the anchor queue, the
settlement executor and every settlement round a coordinator drives must run in exactly one
replica at a time.  This module is the one place that decides who:

* :meth:`Coordinator.exclusive` -- a named lock held for the length of a job.  On PostgreSQL a
  *session* advisory lock (``pg_try_advisory_lock``) on a connection of the pool kept in
  autocommit (no transaction stays open while the job runs).  A replica that dies, even by
  SIGKILL, closes its connections and PostgreSQL releases its locks, so another replica takes
  the job over on its next round; what the dead one left half-done is redone idempotently
  (outbox leases, inbox de-duplication, anchoring hooks idempotent per ``(node, seq)``,
  settlement backends idempotent per key).
* :meth:`Coordinator.run_exclusive` -- run a function under such a lock, or skip it when another
  replica holds the lock (how the serve worker runs each periodic task).
* :meth:`Coordinator.register_replica` -- each ``serve`` process announces itself for its
  lifetime (a *shared* advisory lock), so :meth:`Coordinator.others_alive` can tell a replica
  starting alone (catch up at once, ignoring leases) from one joining live peers (respect their
  leases).  On SQLite the registration is an exclusive file lock beside the database: a second
  ``serve`` on the same SQLite database is refused with :class:`~eap.node.errors.ConfigError`.

SQLite mode is one serving process, but CLI commands of the same home run beside it: there the
named locks are ``flock`` locks on files in ``<database>.locks/`` (released by the kernel when
a process dies), and in-process locks for an in-memory database.  Lock keys are scoped to the
database (PostgreSQL advisory locks are per database), so two nodes on one server never meet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from eap.node.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: First key of every advisory lock of eap-node (``'EAP1'``); the second is the name's CRC-32.
NAMESPACE = 0x45415031
#: Namespace of the replica registry (shared locks, one per serving process).
REPLICA_NAMESPACE = 0x45415032
#: Name of the lock file of the serving process in SQLite mode.
SERVE_LOCK = "serve"

#: Locks of the coordinated jobs (the serve worker's tasks, the anchor drain, the settlement
#: executor), for listings; a settlement round's lock is ``settlement-round:<round id>``.
JOBS: tuple[str, ...] = (
    "task:sync",
    "task:transfers",
    "task:settlement",
    "task:settlement-exec",
    "task:anchor-queue",
    "anchor-drain",
    "settlement-exec",
)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def lock_key(name: str) -> int:
    """The signed 32-bit second key of the advisory lock called ``name``."""
    key = zlib.crc32(name.encode())
    return key - 2**32 if key >= 2**31 else key


class Coordinator:
    """Named locks and the replica registry of one database (see the module docstring).

    Thread-safe.  One instance per :class:`~eap.node.store.engine.Store`
    (``store.coordinator``).
    """

    def __init__(self, engine: Engine, *, lock_engine: Engine | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        #: Connections that hold session locks: autocommit (no transaction stays open while a
        #: job runs), from their own pool so that the job's transactions never wait for them.
        self._locks_engine = lock_engine or engine
        self._local_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.lock_dir: Path | None = None
        if self.dialect == "sqlite":
            database = engine.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                path = Path(database).resolve()
                self.lock_dir = path.with_name(path.name + ".locks")
        self._replica: Any = None

    # -- named locks --------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self, name: str, *, wait: bool = False) -> Iterator[bool]:
        """Hold the lock ``name`` for the ``with`` block; yields whether this caller got it.

        ``wait=False`` (default) does not wait: the block runs with ``False`` when another
        replica, process or thread holds the lock.  ``wait=True`` waits for it (a dead holder's
        lock is released by PostgreSQL or the kernel).
        """
        if not name:
            raise ValueError("a lock needs a name")
        if self.dialect == "postgresql":
            with self._pg_lock(name, wait) as got:
                yield got
        elif self.lock_dir is not None:
            with self._file_lock(name, wait) as got:
                yield got
        else:
            with self._thread_lock(name, wait) as got:
                yield got

    def run_exclusive(self, name: str, fn: Callable[[], T]) -> tuple[bool, T | None]:
        """``fn()`` under the lock ``name`` if it is free: ``(True, result)``; ``(False, None)``
        without calling it when another holder has it."""
        with self.exclusive(name) as mine:
            if not mine:
                return False, None
            return True, fn()

    def _lock_connection(self) -> Connection:
        conn = self._locks_engine.connect()
        if self._locks_engine is self.engine:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn

    def dispose(self) -> None:
        """Close the lock connections' pool (not the store's)."""
        if self._locks_engine is not self.engine:
            self._locks_engine.dispose()

    @contextlib.contextmanager
    def _pg_lock(self, name: str, wait: bool) -> Iterator[bool]:
        conn = self._lock_connection()
        key = lock_key(name)
        try:
            sql = (
                "SELECT pg_advisory_lock(%s, %s)" if wait else "SELECT pg_try_advisory_lock(%s, %s)"
            )
            got = conn.exec_driver_sql(sql, (NAMESPACE, key)).scalar()
            got = True if wait else bool(got)
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        try:
            yield got
        finally:
            if got:
                _pg_unlock(conn, "SELECT pg_advisory_unlock(%s, %s)", NAMESPACE, key)
            conn.close()

    @contextlib.contextmanager
    def _file_lock(self, name: str, wait: bool) -> Iterator[bool]:
        import fcntl

        assert self.lock_dir is not None
        self.lock_dir.mkdir(mode=0o700, exist_ok=True)
        path = self.lock_dir / _lock_file(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
            except BlockingIOError:
                got = False
            try:
                yield got
            finally:
                if got:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _thread_lock(self, name: str, wait: bool) -> Iterator[bool]:
        with self._guard:
            lock = self._local_locks.setdefault(name, threading.Lock())
        got = lock.acquire(blocking=wait)
        try:
            yield got
        finally:
            if got:
                lock.release()

    # -- replicas -----------------------------------------------------------------------------

    def register_replica(self) -> None:
        """Announce this serving process until :meth:`unregister_replica` (or its death).

        Raises:
            ConfigError: SQLite, and another process serves this database already.
        """
        if self._replica is not None:
            return
        if self.dialect == "postgresql":
            conn = self._lock_connection()
            try:
                conn.exec_driver_sql(
                    "SELECT pg_advisory_lock_shared(%s, %s)", (REPLICA_NAMESPACE, 0)
                )
            except BaseException:
                conn.invalidate()
                conn.close()
                raise
            self._replica = conn
        elif self.lock_dir is not None:
            import fcntl

            self.lock_dir.mkdir(mode=0o700, exist_ok=True)
            path = self.lock_dir / f"{SERVE_LOCK}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(
                    f"another `eap-node serve` is running on the SQLite database "
                    f"{self.engine.url.database}: SQLite mode serves from one process only; "
                    "stop it first, or move the node to PostgreSQL to run several replicas "
                    "(docs/deploy.md)"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._replica = fd
        else:
            self._replica = True

    def unregister_replica(self) -> None:
        replica, self._replica = self._replica, None
        if replica is None or replica is True:
            return
        if isinstance(replica, int):
            os.close(replica)  # releases the flock
            return
        _pg_unlock(replica, "SELECT pg_advisory_unlock_shared(%s, %s)", REPLICA_NAMESPACE, 0)
        replica.close()

    def replicas(self) -> list[dict]:
        """Live serving processes of this database: ``[{pid, application, client, since_ms}]``
        (PostgreSQL: from ``pg_locks`` and ``pg_stat_activity``; SQLite: at most this one)."""
        if self.dialect != "postgresql":
            pid = os.getpid() if self._replica is not None else self._sqlite_server()
            return (
                []
                if pid is None
                else [{"pid": pid, "application": "eap-node", "client": "local", "since_ms": 0}]
            )
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT l.pid, a.application_name, a.client_addr::text, "
                "       (extract(epoch FROM a.backend_start) * 1000)::bigint "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s "
                "  AND l.objid = 0 AND l.objsubid = 2 "
                "  AND l.database = (SELECT oid FROM pg_database "
                "                    WHERE datname = current_database()) "
                "ORDER BY a.backend_start",
                (REPLICA_NAMESPACE,),
            ).all()
        return [
            {
                "pid": int(r[0]),
                "application": r[1] or "",
                "client": r[2] or "local",
                "since_ms": int(r[3] or 0),
            }
            for r in rows
        ]

    def _sqlite_server(self) -> int | None:
        """The pid of the process serving this SQLite database, if one does (its lock)."""
        import fcntl

        path = self.lock_dir / f"{SERVE_LOCK}.lock" if self.lock_dir else None
        if path is None or not path.exists():
            return None
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = f.read().strip()
                return int(text) if text.isdigit() else 0
            fcntl.flock(f, fcntl.LOCK_UN)
        return None

    def held(self, names: Iterable[str] = ()) -> list[dict]:
        """Named locks held now (PostgreSQL): ``[{pid, name}]``, the name found among
        ``names`` by its key, else ``"lock <key>"``.  Other backends: ``[]``."""
        if self.dialect != "postgresql":
            return []
        by_key = {lock_key(n): n for n in names}
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT pid, objid::bigint FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND classid = %s AND objsubid = 2 "
                "  AND database = (SELECT oid FROM pg_database "
                "                  WHERE datname = current_database()) ORDER BY pid",
                (NAMESPACE,),
            ).all()
        out = []
        for pid, objid in rows:
            key = int(objid) - 2**32 if int(objid) >= 2**31 else int(objid)
            out.append({"pid": int(pid), "name": by_key.get(key, f"lock {key}")})
        return out

    def applications(self) -> dict[int, str]:
        """PostgreSQL backend pid -> application name of this database's sessions."""
        if self.dialect != "postgresql":
            return {}
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT pid, application_name FROM pg_stat_activity "
                "WHERE datname = current_database()"
            ).all()
        return {int(pid): name or "" for pid, name in rows}

    def others_alive(self) -> bool:
        """Whether another serving process of this database is registered (always False on
        SQLite, which has one)."""
        if self.dialect != "postgresql":
            return False
        mine = None
        if self._replica is not None and self._replica is not True:
            try:
                mine = self._replica.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            except Exception:  # our registration's connection broke: assume company
                log.warning("replica registration lost its connection", exc_info=True)
                return True
        return any(r["pid"] != mine for r in self.replicas())


#: Lock files for names of one kind with many values (a settlement round each): the name's
#: kind and one of this many buckets, so the folder stays small; two values sharing a bucket
#: only wait for each other.
FILE_BUCKETS = 64


def _lock_file(name: str) -> str:
    key = lock_key(name) & 0xFFFFFFFF
    if len(name) <= 40 and "/" not in name:
        return f"{_SAFE.sub('_', name)}-{key:08x}.lock"
    return f"{_SAFE.sub('_', name.split(':', 1)[0])}-bucket{key % FILE_BUCKETS:02d}.lock"


def _pg_unlock(conn: Connection, sql: str, a: int, b: int) -> None:
    """Release a session lock; a connection that cannot is thrown away (closing it releases)."""
    try:
        if not conn.exec_driver_sql(sql, (a, b)).scalar():
            log.warning("advisory lock (%s, %s) was not held at release", a, b)
    except Exception:
        log.warning(
            "could not release advisory lock (%s, %s); dropping the connection", a, b, exc_info=True
        )
        conn.invalidate()
