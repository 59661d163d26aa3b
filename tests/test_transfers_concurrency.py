"""Concurrent senders and duplicate deliveries, on SQLite and PostgreSQL (row locks, advisory
locks, unique keys): a transfer is decided once and imported once whatever races."""

from __future__ import annotations

import threading
import uuid

import pytest
from test_transfers_support import Federation

from eap.node.crypto import VerifiedEnvelope
from eap.node.federation import transfers as T
from eap.node.records.enums import Status
from eap.node.store import transfer_repos as tr
from eap.v1 import federation_pb2 as fed


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ab(request, tmp_path):
    urls = None
    dbs: list[str] = []
    if request.param == "postgres":
        import psycopg

        server = request.getfixturevalue("pg_server")
        dbs = [f"eap_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
        with psycopg.connect(server, autocommit=True) as conn:
            for name in dbs:
                conn.execute(f'CREATE DATABASE "{name}"')
        base = server.rsplit("/", 1)[0]
        urls = {"a": f"{base}/{dbs[0]}", "b": f"{base}/{dbs[1]}"}
    f = Federation(tmp_path, "ab", db_urls=urls, hours=4)
    yield f
    f.close()
    if dbs:
        import psycopg

        with psycopg.connect(request.getfixturevalue("pg_server"), autocommit=True) as conn:
            for name in dbs:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(n: int, fn) -> list:
    results: list = [None] * n
    errors: list = []
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except Exception as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def _env(origin, payload, ptype):
    return VerifiedEnvelope(payload=payload, payload_type=ptype, origin=origin, key_id="k",
                            nonce=uuid.uuid4().bytes, expires_at_ms=0)


def test_duplicate_deliveries_race_to_one_outcome(ab):
    a, b = ab["a"], ab["b"]
    first = a.engine.start(a.bundles[0], to=ab.to("b"), request_id="t")
    tid = first.transfer.id
    with a.node.store.read() as conn:
        prepare = bytes(tr.outbox_unacked(conn, tid)[0].payload)
    answers = _run(6, lambda i: b.engine.on_prepare(_env(a.node_id, prepare, T.PT_PREPARE)))
    assert len(set(answers)) == 1
    # inline senders and background rounds all deliver and decide at once
    _run(6, lambda i: a.engine.pump(tid) if i % 2 else a.engine.tick(force=True))
    ab.settle()
    assert ab.states(tid) == {"a": "committed", "b": "committed"}
    assert [x.id for x in ab.active("b", b.account)] == [a.bundles[0]]
    ab.assert_conserved()
    ab.assert_agree()


def test_concurrent_senders_of_one_bundle_lock_it_once(ab):
    a = ab["a"]
    results = _run(5, lambda i: _try(lambda: a.engine.send(a.bundles[1], to=ab.to("b"),
                                                           request_id=f"r{i}")))
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 1 and won[0][1].state == T.COMMITTED
    assert all(isinstance(r, (T.FailedPrecondition, T.Aborted)) for r in results if r not in won)
    ab.assert_conserved()


def test_concurrent_prepares_of_overlapping_ranges_prepare_one(ab):
    a, b = ab["a"], ab["b"]
    wire, proof = ab.wire("a", a.bundles[2])
    now = int(ab.clock() * 1000)

    def prepare(i: int):
        msg = fed.TransferPrepare(transfer_id=f"{a.node_id}/dup-{i}", bundle=wire,
                                  to_account=b.account, expires_at_ms=now + 60_000,
                                  proof=proof)
        reply = b.engine.on_prepare(_env(a.node_id, msg.SerializeToString(), T.PT_PREPARE))
        return fed.TransferStatus.FromString(reply[1]).state

    states = _run(6, prepare)
    assert states.count(fed.TRANSFER_STATE_PREPARED) == 1, states
    assert ab.active("b", b.account) == []


def test_many_parallel_transfers_both_ways(ab):
    a, b = ab["a"], ab["b"]
    work = [("a", x, "b") for x in a.bundles] + [("b", x, "a") for x in b.bundles]

    def send(i: int):
        src, bid, dst = work[i]
        return ab[src].engine.send(bid, to=ab.to(dst), wh=100 + i, request_id=f"p{i}")[1]

    recs = _run(len(work), send)
    ab.settle()
    assert {r.id for r in recs} and all(ab.states(r.id) == {"a": "committed", "b": "committed"}
                                        for r in recs)
    assert ab.bundle("a", a.bundles[0]).status == Status.SPLIT
    ab.assert_conserved()
    ab.assert_agree()


def _try(fn):
    try:
        return fn()
    except Exception as exc:  # returned for the test to inspect
        return exc
