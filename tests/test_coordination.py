"""Coordination of replicas sharing one database (eap.node.store.coordination): named locks,
the replica registry, coordinated worker rounds, counters and migrations under concurrency.

Every check runs on the local PostgreSQL server and on SQLite; holders that die are real
processes killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from eap.node.errors import ConfigError
from eap.node.federation.runtime import Worker
from eap.node.store import open_store, repos
from eap.node.store.coordination import lock_key


@pytest.fixture
def two_stores(db_url):
    """Two stores (two engines, as two replicas have) on one migrated database."""
    a, b = open_store(db_url), open_store(db_url)
    yield a, b
    a.dispose()
    b.dispose()


def test_lock_keys_are_signed_32_bit_and_stable():
    for name in ("task:sync", "anchor-drain", "settlement-round:x/2026-01-01/" + "f" * 32, "é"):
        key = lock_key(name)
        assert -(2**31) <= key < 2**31
        assert key == lock_key(name)
    assert lock_key("task:sync") != lock_key("task:transfers")


def test_exclusive_lock_has_one_holder_across_engines(two_stores):
    a, b = two_stores
    with a.coordinator.exclusive("job") as first:
        assert first
        with b.coordinator.exclusive("job") as second:
            assert not second
        with b.coordinator.exclusive("other-job") as other:
            assert other  # locks are per name
        # also within one engine, from another thread
        seen = []
        th = threading.Thread(
            target=lambda: seen.append(a.coordinator.run_exclusive("job", lambda: "ran"))
        )
        th.start()
        th.join()
        assert seen == [(False, None)]
    with b.coordinator.exclusive("job") as after:
        assert after  # released at the end of the block
    assert b.coordinator.run_exclusive("job", lambda: 42) == (True, 42)


def test_exclusive_lock_is_released_when_the_body_raises(two_stores):
    a, b = two_stores
    with pytest.raises(RuntimeError), a.coordinator.exclusive("job") as got:
        assert got
        raise RuntimeError("boom")
    with b.coordinator.exclusive("job") as got:
        assert got


def test_waiting_for_a_lock_gets_it_once_released(two_stores):
    a, b = two_stores
    order: list[str] = []
    held = threading.Event()
    release = threading.Event()

    def holder():
        with a.coordinator.exclusive("job") as got:
            assert got
            order.append("a-in")
            held.set()
            release.wait(30)
            order.append("a-out")

    th = threading.Thread(target=holder)
    th.start()
    held.wait(30)
    waiter = threading.Thread(target=lambda: _wait_and_note(b, order))
    waiter.start()
    release.set()
    th.join(30)
    waiter.join(30)
    assert order == ["a-in", "a-out", "b-in"]


def _wait_and_note(store, order):
    with store.coordinator.exclusive("job", wait=True) as got:
        assert got
        order.append("b-in")


HOLDER = textwrap.dedent("""
    import sys, time
    from eap.node.store import open_store
    store = open_store(sys.argv[1])
    with store.coordinator.exclusive(sys.argv[2]) as got:
        print("held" if got else "busy", flush=True)
        time.sleep(600)
""")


def _holder(url: str, name: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, name], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_sigkilled_holder_releases_its_lock(two_stores, db_url):
    a, _ = two_stores
    proc = _holder(db_url, "job")
    try:
        with a.coordinator.exclusive("job") as got:
            assert not got  # held by the other process
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        # PostgreSQL ends the dead session (its socket closed) and releases the lock; the
        # kernel releases the flock.  Waiting for it must therefore return.
        with a.coordinator.exclusive("job", wait=True) as got:
            assert got
    finally:
        proc.kill()
        proc.wait(30)


def test_replica_registry(two_stores, db_url):
    a, b = two_stores
    a.coordinator.register_replica()
    try:
        assert not a.coordinator.others_alive()
        if db_url.startswith("sqlite"):
            with pytest.raises(ConfigError, match=r"another `eap-node serve`.*PostgreSQL"):
                b.coordinator.register_replica()
            assert a.coordinator.replicas() == b.coordinator.replicas()  # b sees the server
            assert [r["pid"] for r in b.coordinator.replicas()] == [os.getpid()]
        else:
            b.coordinator.register_replica()
            assert a.coordinator.others_alive() and b.coordinator.others_alive()
            names = [r["application"] for r in a.coordinator.replicas()]
            assert len(names) == 2 and all(n.startswith("eap-node ") for n in names)
            b.coordinator.unregister_replica()
            assert not a.coordinator.others_alive()
    finally:
        a.coordinator.unregister_replica()
    b.coordinator.register_replica()  # the first one gone, a new one may serve
    b.coordinator.unregister_replica()


def test_worker_rounds_of_one_task_never_overlap_across_replicas(two_stores):
    a, b = two_stores
    active, peak, runs = [0], [0], {"a": 0, "b": 0}
    guard = threading.Lock()
    enough = threading.Event()

    def task(who):
        def fn():
            with guard:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                threading.Event().wait(0.02)  # long enough for the other replica to try
            finally:
                with guard:
                    active[0] -= 1
                    runs[who] += 1
                    if sum(runs.values()) >= 30:
                        enough.set()

        return fn

    workers = []
    for who, store in (("a", a), ("b", b)):
        w = Worker(store.coordinator)
        w.every("job", 0.005, task(who), jitter=0.5)
        workers.append(w)
    for w in workers:
        w.start()
    try:
        assert enough.wait(120)
    finally:
        for w in workers:
            w.stop()
    assert peak[0] == 1
    skipped = sum(w.tasks["job"].skipped for w in workers)
    assert sum(w.tasks["job"].runs for w in workers) == sum(runs.values())
    assert skipped > 0  # the replicas did meet


def test_counters_stay_unique_under_concurrent_first_bumps(two_stores):
    stores = two_stores
    values: list[int] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def bump(i):
        store = stores[i % 2]
        barrier.wait()
        for _ in range(5):
            with store.transaction() as conn:
                v = repos.bump(conn, "race")
            with lock:
                values.append(v)

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert sorted(values) == list(range(40))


MIGRATE = textwrap.dedent("""
    import sys
    from eap.node.store import open_store
    from eap.node.store.engine import SCHEMA_HEAD
    store = open_store(sys.argv[1])
    assert store.schema_revision() == SCHEMA_HEAD
    print("ok", flush=True)
""")


@pytest.mark.postgres
def test_replicas_starting_together_migrate_one_database_once(pg_url):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, pg_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
    assert all(o.strip() == "ok" for o, _ in outs)


def test_sqlite_locks_live_beside_the_database(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        with store.coordinator.exclusive("task:sync") as got:
            assert got
        assert store.coordinator.lock_dir == tmp_path / "n.db.locks"
        assert any(p.name.startswith("task_sync-") for p in store.coordinator.lock_dir.iterdir())
    finally:
        store.dispose()


def test_recovery_leaves_rounds_another_replica_drives(node):
    """A replica starting up fails the undecided rounds of a dead coordinator (presumed
    abort), never one another live replica is driving (it holds the round's lock)."""
    from eap.node.federation.settlement import GATHERING, Settlement, round_lock
    from eap.node.store import open_store
    from eap.node.store import settlement_repos as srr

    ids = [f"{node.node_id}/2026-01-0{i}/{'a' * 31}{i}" for i in (1, 2)]
    with node.store.transaction() as conn:
        for i, rid in enumerate(ids):
            srr.insert_round(
                conn,
                round_id=rid,
                period=f"2026-01-0{i + 1}",
                coordinator=node.node_id,
                state=GATHERING,
                request_id=None,
                started_at_ms=1,
            )
    other = open_store(node.store.engine.url.render_as_string(hide_password=False))
    try:
        with other.coordinator.exclusive(round_lock(ids[0])) as driving:
            assert driving
            assert Settlement(node).recover() == 1  # only the orphan
            with node.store.read() as conn:
                states = [srr.get_round(conn, r).state for r in ids]
            assert states == [GATHERING, "failed"]
        assert Settlement(node).recover() == 1  # its driver gone: presumed abort now
        with node.store.read() as conn:
            assert srr.get_round(conn, ids[0]).state == "failed"
    finally:
        other.dispose()


def test_one_anchor_drain_at_a_time_across_stores(node, monkeypatch):
    """While another replica drains the anchor queue, a drain here waits for it (and then
    finds the work done) instead of sending the same batches beside it."""
    from eap.node.domain import anchoring

    other = open_store(node.store.engine.url.render_as_string(hide_password=False))
    calls: list[str] = []
    monkeypatch.setattr(
        anchoring.plugin_calls, "impls", lambda plugins, hook: calls.append("drain") or []
    )
    try:
        with other.coordinator.exclusive(anchoring.DRAIN_LOCK) as held:
            assert held
            th = threading.Thread(target=anchoring.drain, args=(node,))
            th.start()
            th.join(0.5)
            assert th.is_alive() and calls == []  # waiting for the other drain
        th.join(30)
        assert not th.is_alive() and calls == ["drain"]
    finally:
        other.dispose()


def test_sqlite_lock_files_stay_few_for_many_values(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        for i in range(500):
            with store.coordinator.exclusive(f"settlement-round:n.example/2026-01-01/{i:032x}"):
                pass
        names = [p.name for p in store.coordinator.lock_dir.iterdir()]
        assert len(names) <= 64 and all(n.startswith("settlement-round-bucket") for n in names)
    finally:
        store.dispose()


@pytest.mark.postgres
def test_held_locks_name_the_job_and_the_process(pg_url):
    from eap.node.store.coordination import JOBS
    from eap.node.store.engine import application_name

    store = open_store(pg_url)
    try:
        assert store.coordinator.held(JOBS) == []
        with store.coordinator.exclusive("task:sync"), store.coordinator.exclusive("odd"):
            held = store.coordinator.held(JOBS)
            assert sorted(h["name"] for h in held) == sorted(
                ["task:sync", f"lock {lock_key('odd')}"]
            )
            apps = store.coordinator.applications()
            assert {apps[h["pid"]] for h in held} == {application_name()}
        assert store.coordinator.held(JOBS) == []
    finally:
        store.dispose()
