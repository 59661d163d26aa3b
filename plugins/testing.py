"""Pytest fixtures for plugin authors (loaded automatically through the ``pytest11`` entry point).

``eap_node_factory(plugins=[...])`` builds a real node (SQLite, keys, config) in a temporary
home with your plugin objects registered beside the built-in ones::

    def test_my_source(eap_node_factory, tmp_path):
        node = eap_node_factory(plugins=[my_plugin_module])
        assert any(s.name == "my-format" for s in node.meter_sources())
"""

from __future__ import annotations

import pytest


@pytest.fixture
def eap_node_factory(tmp_path_factory):
    from eap.node.config import create_home
    from eap.node.domain.node import Node
    from eap.plugins.manager import get_plugin_manager

    nodes = []

    def make(plugins=(), node_id: str = "plugin-test.example", zone: str = "ZZ"):
        pm = get_plugin_manager(load_entry_points=False)
        for plugin in plugins:
            pm.register(plugin)
        home = tmp_path_factory.mktemp("eap-node")
        node = Node.initialise(create_home(home / "home", node_id, zone), plugins=pm)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
