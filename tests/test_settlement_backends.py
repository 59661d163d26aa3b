"""Executing settlement instructions through the configured backend (``execute(node, item)``)."""

from __future__ import annotations

import threading

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from eap.node.api.status import to_status
from eap.node.domain import settlement_backends as sb
from eap.node.errors import BackendError, ConfigError
from eap.plugins import coop_ledger, hookimpl

PEER = "barcelona.example"
REMOTE = f"{PEER}/acct_" + "f" * 26


def item(node, payer, n=0, amount=100, side="debit", payee=REMOTE):
    return {
        "instruction_id": f"{node.node_id}/2026-01-01/r/{n}",
        "round_id": f"{node.node_id}/2026-01-01/r",
        "side": side,
        "payer": f"{node.node_id}/{payer}" if "/" not in payer else payer,
        "payee": payee,
        "amount_minor": amount,
        "currency": "EUR",
    }


def funded(node, minor=10_000):
    payer = node.create_account(request_id="payer").account.id
    coop_ledger.set_credit_line(node.store, node.node_id, payer, "EUR", minor)
    return payer


class Raising:
    name = "raising"

    def execute(self, ctx, item, idempotency_key):
        raise KeyError("rpc_url")

    def health(self, ctx):
        raise RuntimeError("down")


class Hanging:
    name = "hanging"

    def __init__(self):
        self.release = threading.Event()

    def execute(self, ctx, item, idempotency_key):
        self.release.wait(10)
        return {"reference": "late"}

    def health(self, ctx):
        return {"ok": True, "detail": ""}


class Offers:
    def __init__(self, *backends):
        self.backends = backends

    @hookimpl
    def eap_settlement_backends(self):
        return list(self.backends)


def test_default_backend_is_the_coop_ledger_and_replays_return_the_first_receipt(
    eap_node_factory,
):
    node = eap_node_factory()
    payer = funded(node)
    receipt = sb.execute(node, item(node, payer))
    assert receipt["backend"] == "coop-ledger" and receipt["reference"].startswith("le_")
    assert sb.execute(node, item(node, payer)) == receipt
    [entry] = coop_ledger.entries(node.store)
    assert entry["idempotency_key"] == f"{node.node_id}/2026-01-01/r/0:debit"
    assert entry["entry_id"] == receipt["reference"]
    assert coop_ledger.check(node.store) == []


def test_unknown_backend_is_a_config_error_listing_the_available_ones(eap_node_factory):
    node = eap_node_factory(plugins=[Offers(Raising())], settlement={"backend": "nowhere"})
    available = r"available: coop-ledger, coopdb, evm, raising"
    with pytest.raises(ConfigError, match=r"'nowhere' is not loaded; " + available):
        sb.execute(node, item(node, funded(node)))


@pytest.mark.parametrize(
    ("table", "match"),
    [({"backend": 3}, "backend must be"), ({"timeout_s": 0}, "timeout_s must be")],
)
def test_bad_settlement_table_is_a_config_error(eap_node_factory, table, match):
    node = eap_node_factory(settlement=table)
    with pytest.raises(ConfigError, match=match):
        sb.execute(node, item(node, funded(node)))


def test_two_plugins_offering_one_name_is_a_config_error(eap_node_factory):
    node = eap_node_factory(plugins=[Offers(coop_ledger.CoopLedger())])
    with pytest.raises(ConfigError, match="offered by both plugins coop_ledger and Offers"):
        sb.execute(node, item(node, funded(node)))


def test_a_plugin_that_raises_gives_a_transient_backend_error_naming_it(eap_node_factory):
    node = eap_node_factory(plugins=[Offers(Raising())], settlement={"backend": "raising"})
    with pytest.raises(BackendError, match=r"'raising' \(plugin Offers\) failed: KeyError") as e:
        sb.execute(node, item(node, funded(node)))
    assert e.value.transient and e.value.backend == "raising"
    assert e.value.status == grpc.StatusCode.UNAVAILABLE


def test_a_plugin_that_hangs_past_the_timeout_gives_a_backend_error_naming_it(
    eap_node_factory,
):
    hanging = Hanging()
    node = eap_node_factory(
        plugins=[Offers(hanging)], settlement={"backend": "hanging", "timeout_s": 0.2}
    )
    try:
        with pytest.raises(
            BackendError,
            match=r"'hanging' \(plugin Offers\) did not answer "
            r"within 0.2 s",
        ) as e:
            sb.execute(node, item(node, funded(node)))
        assert e.value.transient
    finally:
        hanging.release.set()


def test_a_refusal_is_not_transient_and_maps_to_failed_precondition(eap_node_factory):
    node = eap_node_factory()
    payer = funded(node, minor=50)
    with pytest.raises(BackendError, match="credit line 50") as e:
        sb.execute(node, item(node, payer, amount=51))
    assert not e.value.transient and e.value.backend == "coop-ledger"
    status = to_status(e.value)
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION
    assert coop_ledger.entries(node.store) == []


def test_transient_errors_map_to_unavailable_with_retry_info():
    status = to_status(BackendError("chain down", transient=True, backend="evm"))
    assert status.code == grpc.StatusCode.UNAVAILABLE
    details = [d for d in status.trailing_metadata if d[0] == "grpc-status-details-bin"]
    parsed = status_pb2.Status.FromString(details[0][1])
    kinds = {d.type_url.rsplit("/", 1)[1] for d in parsed.details}
    assert "google.rpc.RetryInfo" in kinds
    info = error_details_pb2.ErrorInfo()
    next(d for d in parsed.details if d.Is(info.DESCRIPTOR)).Unpack(info)
    assert dict(info.metadata) == {"backend": "evm", "transient": "true"}


def test_malformed_item_is_refused_before_any_backend(eap_node_factory):
    node = eap_node_factory()
    bad = item(node, funded(node))
    del bad["currency"]
    with pytest.raises(BackendError, match="lacks currency"):
        sb.execute(node, bad)
    with pytest.raises(BackendError, match="side must be"):
        sb.execute(node, {**item(node, "x/acct_" + "a" * 26), "side": "both"})


def test_flaky_backend_fails_transiently_then_posts_once(eap_node_factory, eap_flaky_backend):
    flaky = eap_flaky_backend(failures=2)
    node = eap_node_factory(plugins=[flaky], settlement={"backend": "flaky"})
    it = item(node, funded(node))
    for attempt in (1, 2):
        with pytest.raises(BackendError, match=f"simulated outage \\({attempt} of 2\\)") as e:
            sb.execute(node, it)
        assert e.value.transient
    receipt = sb.execute(node, it)
    assert receipt["backend"] == "flaky"
    assert sb.execute(node, it) == receipt
    assert len(coop_ledger.entries(node.store)) == 1
    assert flaky.backend.calls == [f"{it['instruction_id']}:debit"] * 4


def test_health_lists_every_backend_and_survives_a_broken_one(eap_node_factory):
    node = eap_node_factory(plugins=[Offers(Raising())])
    rows = {r["name"]: r for r in sb.health(node)}
    assert rows["coop-ledger"]["ok"] and rows["coop-ledger"]["selected"]
    assert rows["coop-ledger"]["plugin"] == "coop_ledger"
    assert not rows["raising"]["ok"] and "RuntimeError: down" in rows["raising"]["detail"]


def test_execute_many_posts_a_batch_in_one_call_and_reports_each_item(eap_node_factory):
    node = eap_node_factory()
    payer = funded(node, minor=250)
    items = [item(node, payer, n=n, amount=100) for n in range(3)]
    first, second, third = sb.execute_many(node, items)
    assert first["backend"] == second["backend"] == "coop-ledger"
    assert isinstance(third, BackendError) and "credit line 250" in str(third)
    assert sb.execute(node, items[0]) == first  # one idempotency key space for both paths
    assert len(coop_ledger.entries(node.store)) == 2 and coop_ledger.check(node.store) == []


def test_execute_many_falls_back_to_one_call_per_item(eap_node_factory, eap_flaky_backend):
    flaky = eap_flaky_backend(failures=1)
    node = eap_node_factory(plugins=[flaky], settlement={"backend": "flaky"})
    payer = funded(node)
    items = [item(node, payer, n=n) for n in range(2)]
    assert all(isinstance(r, BackendError) and r.transient for r in sb.execute_many(node, items))
    assert [r["backend"] for r in sb.execute_many(node, items)] == ["flaky", "flaky"]
