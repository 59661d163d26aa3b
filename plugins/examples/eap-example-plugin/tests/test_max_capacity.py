"""The example plugin, tested the way a plugin author tests theirs: with ``eap_node_factory``."""

from __future__ import annotations

import importlib.metadata

import pytest

eap_example_plugin = pytest.importorskip(
    "eap_example_plugin",
    reason="the example plugin is not installed "
    "(pip install -e plugins/examples/eap-example-plugin; .ci/run does)",
)

from eap.node.errors import InvalidArgument  # noqa: E402


def _register(node, capacity_w, ref):
    owner = node.create_account(request_id=f"o-{ref}").account.id
    return node.register_device(
        request_id=f"d-{ref}",
        local_ref=ref,
        capacity_w=capacity_w,
        source="solar",
        technology="photovoltaic",
        commissioned_on="2020-05-01",
        latitude=6.2,
        longitude=-75.5,
        zone="CO-ANT",
        owner=owner,
        meter_id=f"m-{ref}",
        attestation_evidence="grid connection 1",
    )


def test_refuses_devices_above_the_configured_limit(eap_node_factory):
    node = eap_node_factory(
        plugins=[eap_example_plugin], config={"max_capacity": {"limit_w": 5000}}
    )
    assert _register(node, 5000, "ok").capacity_w == 5000
    with pytest.raises(InvalidArgument, match="above this node's 5000 W limit"):
        _register(node, 5001, "big")
    assert node.status().devices == 1


def test_no_limit_without_its_table(eap_node_factory):
    node = eap_node_factory(plugins=[eap_example_plugin])
    assert _register(node, 900_000, "plant").capacity_w == 900_000


def test_found_through_its_entry_point():
    eps = importlib.metadata.entry_points(group="eap.plugins", name="max_capacity")
    assert [ep.load() for ep in eps] == [eap_example_plugin]
    from eap.plugins.manager import get_plugin_manager

    pm = get_plugin_manager()
    assert pm.get_plugin("max_capacity") is eap_example_plugin
    assert pm.version_of("max_capacity") == "eap-example-plugin 0.1.0"
