"""Pytest fixtures for plugin authors (loaded automatically through the ``pytest11`` entry point).

``eap_node_factory(plugins=[...])`` builds a real node (SQLite, keys, config) in a temporary
home with your plugin objects registered beside the built-in ones::

    def test_my_source(eap_node_factory, tmp_path):
        node = eap_node_factory(plugins=[my_plugin_module])
        assert any(s.name == "my-format" for s in node.meter_sources())

``eap_flaky_backend(failures=2)`` is a settlement backend plugin that fails transiently
``failures`` times per idempotency key, then posts through the built-in co-op ledger: register
it and set ``[settlement] backend = "flaky"`` to exercise retries::

    def test_retries(eap_node_factory, eap_flaky_backend):
        flaky = eap_flaky_backend(failures=2)
        node = eap_node_factory(plugins=[flaky], settlement={"backend": "flaky"})

The same backend can be loaded into ``eap-node serve`` processes with the environment switch
``EAP_TEST_FLAKY_BACKEND=N`` (:mod:`eap.plugins.flaky_backend`).
"""

from __future__ import annotations

import pytest

from eap.plugins import hookimpl
from eap.plugins.flaky_backend import FlakyBackend

__all__ = ["FlakyBackend", "FlakyBackendPlugin", "eap_flaky_backend", "eap_node_factory"]


class FlakyBackendPlugin:
    """A plugin object offering one :class:`FlakyBackend` (``.backend``)."""

    def __init__(self, backend: FlakyBackend) -> None:
        self.backend = backend

    @hookimpl
    def eap_settlement_backends(self):
        return [self.backend]


@pytest.fixture
def eap_flaky_backend():
    """Factory: ``eap_flaky_backend(failures=2, name="flaky")`` -> a plugin to register;
    its backend is ``plugin.backend``."""

    def make(failures: int = 2, name: str = "flaky", delegate=None) -> FlakyBackendPlugin:
        return FlakyBackendPlugin(FlakyBackend(failures, name, delegate))

    return make


@pytest.fixture
def eap_node_factory(tmp_path_factory):
    from eap.node.config import create_home
    from eap.node.domain.node import Node
    from eap.plugins.manager import get_plugin_manager

    nodes = []

    def make(
        plugins=(),
        node_id: str = "plugin-test.example",
        zone: str = "ZZ",
        settlement=None,
        config=None,
        operator_signed=True,
    ):
        """``config``: extra tables of ``eap-node.toml``, e.g. ``{"plugins": {"timeout_s": 1}}``
        or your plugin's own ``{"my_plugin": {...}}``."""
        pm = get_plugin_manager(load_entry_points=False)
        for plugin in plugins:
            pm.register(plugin)
        home = tmp_path_factory.mktemp("eap-node")
        tables = dict(config or {})
        config = create_home(home / "home", node_id, zone, operator_signed=operator_signed)
        if settlement is not None:  # the [settlement] table, e.g. {"backend": "flaky"}
            tables["settlement"] = dict(settlement)
        if tables:
            config.extra.update(tables)
            config.save()
        node = Node.initialise(config, plugins=pm)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
