"""Crash at every durability point of a transfer, restart, recover: every Wh ends in one place.

In-process: the crash is :class:`~eap.node.federation.crashpoints.SimulatedCrash` raised at the
named point; the crashed node's objects are dropped and its database reopened (a restart),
after a while during which the other node keeps working.  Real processes killed with
``os._exit`` / SIGKILL are in ``test_transfers_processes.py``.

A bounded, seeded share runs by default; ``--runslow`` runs the whole matrix.
"""

from __future__ import annotations

import itertools
import random

import pytest
from test_transfers_support import FAST, Federation

from eap.node.federation import crashpoints
from eap.node.federation import transfers as T
from eap.node.federation.crashpoints import SimulatedCrash
from eap.node.federation.inprocess import Faults

#: Points each scenario passes through.
COMMIT_POINTS = ("source.in_prepare_txn", "source.after_prepare_commit", "dest.in_prepare_txn",
                 "dest.after_prepared_commit", "source.after_send_prepare",
                 "source.after_decision_commit", "dest.in_commit_txn", "dest.after_commit_commit",
                 "source.after_send_commit")
EXPIRED_POINTS = ("dest.after_prepared_commit", "source.after_decision_commit",
                  "dest.after_abort_commit", "source.after_send_abort")
INQUIRY_POINTS = ("dest.after_status_reply", "dest.in_commit_txn")
#: A third party's serials (issuer a, source b, destination c): the custody hop.
CUSTODY_POINTS = ("source.after_prepare_commit", "dest.after_prepared_commit",
                  "source.after_send_prepare", "issuer.in_custody_txn",
                  "issuer.after_custody_commit", "source.after_send_custody",
                  "source.after_decision_commit", "dest.in_commit_txn",
                  "dest.after_commit_commit", "source.after_send_commit")
SCENARIOS = {"commit": COMMIT_POINTS, "partial": COMMIT_POINTS, "expired": EXPIRED_POINTS,
             "inquiry": INQUIRY_POINTS, "custody": CUSTODY_POINTS}
#: Who plays which part in a scenario (node keys of the Federation).
ROLES = {"custody": {"issuer": "a", "source": "b", "dest": "c"}}
DEFAULT_ROLES = {"source": "a", "dest": "b"}
#: Seconds the crashed node stays down (0 = restarted at once; 45 > the prepare's 30 s TTL).
DOWNTIMES = (0, 5, 45)


@pytest.fixture(autouse=True)
def _disarm():
    yield
    crashpoints.disarm()


class _LoseDecisions:
    """Transport wrapper losing every COMMIT/ABORT (D must ask S)."""

    def __init__(self, inner):
        self.inner = inner

    def call(self, peer, rpc, *args, **kw):
        if rpc == "DecideTransfer":
            raise T.Unavailable("decision lost")
        return self.inner.call(peer, rpc, *args, **kw)


def _settle_unless_crashed(f: Federation) -> None:
    for _ in range(200):
        if f.net.crashed:
            return
        f.tick()
        if not f.unsettled():
            return
        f.clock.advance(1)


def _drive(f: Federation, scenario: str) -> None:
    a = f["a"]
    if scenario in ("commit", "partial"):
        a.engine.send(a.bundles[1], to=f.to("b"), wh=321 if scenario == "partial" else 0,
                      request_id="t")
        _settle_unless_crashed(f)
    elif scenario == "expired":
        f.net.faults = Faults(drop_reply=1.0)  # B prepares, A never hears it in time
        try:
            a.engine.send(a.bundles[1], to=f.to("b"), request_id="t")
        finally:
            f.net.faults = Faults()
        f.clock.advance(FAST.ttl_s + 1)
        _settle_unless_crashed(f)
    elif scenario == "custody":
        b = f["b"]
        b.engine.send(f.bundle("b", a.bundles[1]).id, to=f.to("c"), wh=321, request_id="t")
        _settle_unless_crashed(f)
    elif scenario == "inquiry":
        real = a.engine.transport
        a.engine.transport = _LoseDecisions(real)
        try:
            a.engine.send(a.bundles[1], to=f.to("b"), request_id="t")
            f.clock.advance(FAST.inquire_after_s + 1)
            f["b"].engine.tick()
        finally:
            a.engine.transport = real
        _settle_unless_crashed(f)
    else:  # pragma: no cover
        raise ValueError(scenario)


def run_case(tmp_path, scenario: str, point: str, downtime: float, seed: int = 0) -> Federation:
    roles = ROLES.get(scenario, DEFAULT_ROLES)
    f = Federation(tmp_path, "abc" if scenario == "custody" else "ab")
    try:
        rng = random.Random(seed)
        if scenario == "custody":  # b first buys a's bundle (no crash): a is the issuer
            f["a"].engine.send(f["a"].bundles[1], to=f.to("b"), request_id="buy")
        crashpoints.arm(point)
        crashed = None
        try:
            _drive(f, scenario)
        except SimulatedCrash as crash:
            crashed = roles[crash.point.split(".")[0]]
        if f.net.crashed:
            node_id = f.net.crashed[0][0]
            crashed = next(k for k, c in f.cities.items() if c.node_id == node_id)
        assert crashed, f"{scenario} never reached {point}"
        # the crashed node is down; the other one keeps retrying / resolving
        f.down(crashed)
        waited = 0.0
        while waited < downtime:
            step = rng.uniform(0.2, 3.0)
            f.clock.advance(step)
            waited += step
            f.tick()
        f.restart(crashed)
        f[crashed].engine.recover()
        if point == "source.in_prepare_txn":  # nothing happened: the caller retries its request
            assert f["a"].engine.list() == []
            f["a"].engine.send(f["a"].bundles[1], to=f.to("b"),
                               wh=321 if scenario == "partial" else 0, request_id="t")
        f.settle()
        f.assert_conserved()
        f.assert_agree()
        if scenario == "custody":  # the issuer's custody agrees with where the Wh ended up
            _assert_custody_follows(f)
        return f
    except BaseException:
        f.close()
        raise


def _assert_custody_follows(f: Federation) -> None:
    from eap.node.store import custody_repos as cr

    a = f["a"]
    with a.node.store.read() as conn:
        custody = cr.all_ranges(conn)
    for key, city in f.cities.items():
        for bundle in f.active(key):
            if bundle.issuer != a.node_id:
                continue
            with a.node.store.read() as conn:
                held = cr.holder_of(conn, bundle.serial_start, bundle.serial_end)
            assert held == (city.node_id, False), (bundle.id, key, custody)


def _final(f: Federation) -> set[str]:
    return {r.state for c in f.cities.values() for r in c.engine.list()}


def _case_id(case):
    return "-".join(str(x) for x in case)


ALL_CASES = [(s, p, d) for s, points in SCENARIOS.items() for p in points for d in DOWNTIMES]
_rng = random.Random(20260101)
#: Default run: every point of the commit and abort paths restarted at once, plus a seeded
#: sample of partial transfers and longer downtimes.
DEFAULT_CASES = ([(s, p, 0) for s in ("commit", "expired", "inquiry") for p in SCENARIOS[s]]
                 + _rng.sample([c for c in ALL_CASES if c[0] == "partial" or c[2]], 6)
                 + _rng.sample([c for c in ALL_CASES if c[0] == "custody"], 8))
SLOW_CASES = [c for c in ALL_CASES if c not in DEFAULT_CASES]


@pytest.mark.parametrize("case", DEFAULT_CASES, ids=_case_id)
def test_crash_point_default(tmp_path, case):
    scenario, point, downtime = case
    f = run_case(tmp_path, scenario, point, downtime)
    try:
        if downtime == 0 and scenario in ("commit", "partial", "inquiry", "custody"):
            assert _final(f) == {T.COMMITTED}
        if scenario == "expired":
            assert _final(f) == {T.ABORTED}
    finally:
        f.close()


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=_case_id)
def test_crash_point_matrix(tmp_path, case):
    run_case(tmp_path, *case).close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_random_crashes_under_a_lossy_network(tmp_path, seed):
    """Many transfers among three nodes; random crash points, downtimes and message faults."""
    rng = random.Random(seed)
    f = Federation(tmp_path, "abc", faults=Faults(drop_request=0.1, drop_reply=0.1,
                                                  duplicate=0.1, seed=seed), hours=4)
    try:
        points = [p for p in crashpoints.TRANSFER_POINTS if p != "source.in_prepare_txn"]

        def revive_crashed():
            for node_id, _point in f.net.crashed:  # destinations that died inside a handler
                f.restart(next(k for k, c in f.cities.items() if c.node_id == node_id))
            f.net.crashed.clear()

        for i in range(10):
            src = rng.choice("abc")
            dst = rng.choice([k for k in "abc" if k != src])
            mine = f.active(src)
            if not mine:
                continue
            bundle = rng.choice(mine)
            crashpoints.arm(rng.choice(points))
            wh = rng.choice([0, max(1, bundle.wh // 2)]) if bundle.wh > 1 else 0
            try:
                f[src].engine.send(bundle.id, to=f.to(dst), wh=wh, request_id=f"r{i}")
            except SimulatedCrash:
                f.restart(src)
            revive_crashed()
            for _ in range(rng.randint(0, 5)):
                f.clock.advance(rng.uniform(0.5, 4))
                for key in "abc":
                    try:
                        f[key].engine.tick()
                    except SimulatedCrash:
                        f.restart(key)
                revive_crashed()
            crashpoints.disarm()
        f.net.faults = Faults()
        for key in "abc":
            f[key].engine.recover()
        f.clock.advance(60)
        f.settle()
        f.assert_conserved()
        f.assert_agree()
    finally:
        f.close()


def test_matrix_covers_every_crash_point():
    covered = set(itertools.chain.from_iterable(SCENARIOS.values()))
    assert covered == set(crashpoints.TRANSFER_POINTS)
