"""Real concurrency: two transfers of the same bundle race; exactly one wins, Wh conserved."""

from __future__ import annotations

import itertools
import threading

import pytest

from eap.node.errors import EapError
from eap.node.records.enums import Purpose, Status
from eap.node.records.models import Principal


def _race(calls):
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, fn):
        barrier.wait()
        try:
            results[i] = fn()
        except EapError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    return results


@pytest.mark.parametrize("rounds", [8])
def test_concurrent_spends_of_one_bundle(node, solar, meter_csv, rounds):
    owner, _ = solar
    node.import_readings(meter_csv, request_id="i")
    node.issue(request_id="s")
    owner_token = node.create_account(request_id="tok").token  # a second holder for partials
    del owner_token
    buyers = [node.create_account(request_id=f"b{i}").account.id for i in range(2)]
    holder = Principal("account", owner)
    bundles = node.list_bundles(
        purpose=Purpose.OPERATIONS, owner=owner, status=int(Status.ACTIVE), page_size=200
    ).items
    bundles = sorted(bundles, key=lambda b: -b.wh)[: 2 * rounds]
    for r in range(rounds):
        whole, part = bundles[2 * r], bundles[2 * r + 1]
        # The holder sends the same whole bundle to two buyers at once.
        res = _race(
            [
                lambda b=whole, to=to, i=i, r=r: node.transfer(
                    b.id, to_account=to, principal=holder, request_id=f"w{r}-{i}"
                )
                for i, to in enumerate(buyers)
            ]
        )
        assert sum(not isinstance(x, Exception) for x in res) == 1, res
        # Two partial transfers (splits) of one bundle at once.
        res = _race(
            [
                lambda b=part, to=to, i=i, r=r: node.transfer(
                    b.id, to_account=to, wh=1, principal=holder, request_id=f"p{r}-{i}"
                )
                for i, to in enumerate(buyers)
            ]
        )
        assert sum(not isinstance(x, Exception) for x in res) == 1, res
        assert all(
            x.status.name in ("FAILED_PRECONDITION", "ABORTED", "PERMISSION_DENIED")
            for x in res
            if isinstance(x, Exception)
        )
    st = node.status()
    assert st.wh_active == st.wh_issued  # nothing duplicated, nothing lost
    children = node.list_bundles(
        purpose=Purpose.OPERATIONS, status=int(Status.ACTIVE), page_size=1000
    ).items
    serials = sorted((b.serial_start, b.serial_end) for b in children)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(serials))


def test_concurrent_replays_of_one_request_id(node, solar, meter_csv):
    owner, _ = solar
    node.import_readings(meter_csv, request_id="i")
    node.issue(request_id="s")
    buyer = node.create_account(request_id="b").account.id
    b = node.list_bundles(purpose=Purpose.OPERATIONS, owner=owner, page_size=1).items[0]
    res = _race([lambda: node.transfer(b.id, to_account=buyer, wh=1, request_id="same")] * 3)
    assert not any(isinstance(x, Exception) for x in res), res
    assert len({x.transferred.id for x in res}) == 1


@pytest.mark.parametrize("wh", [0, 1], ids=["whole", "split"])
def test_racing_copies_of_an_account_transfer_all_get_the_first_result(node, solar, meter_csv, wh):
    """Copies of one holder's transfer (same request id) racing: every copy answers with the
    first result, none with PERMISSION_DENIED because the winner moved the bundle away."""
    owner, _ = solar
    node.import_readings(meter_csv, request_id="i")
    node.issue(request_id="s")
    buyer = node.create_account(request_id="b").account.id
    holder = Principal("account", owner)
    bundles = node.list_bundles(
        purpose=Purpose.OPERATIONS, owner=owner, status=int(Status.ACTIVE), page_size=10
    ).items
    for r, b in enumerate(bundles[:6]):
        res = _race(
            [
                lambda b=b, r=r: node.transfer(
                    b.id, to_account=buyer, wh=wh, principal=holder, request_id=f"same-{r}"
                )
            ]
            * 8
        )
        assert not any(isinstance(x, Exception) for x in res), res
        assert len({x.transferred.id for x in res}) == 1
        assert {x.transferred.owner for x in res} == {buyer}
    st = node.status()
    assert st.wh_active == st.wh_issued
