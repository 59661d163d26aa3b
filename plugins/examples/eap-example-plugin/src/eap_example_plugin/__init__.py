"""An eap-node validation policy: refuse devices above ``[max_capacity] limit_w`` watts.

Registered through the ``eap.plugins`` entry point ``max_capacity`` (see ``pyproject.toml``).
The limit is read from the node's own config at each registration, so one installed plugin
serves every node home; without the table the plugin objects to nothing.
"""

from __future__ import annotations

from eap.plugins import hookimpl

__version__ = "0.1.0"

#: The config table this plugin reads: ``[max_capacity] limit_w = 10000``.
TABLE = "max_capacity"


@hookimpl
def eap_validate_device(device, config):
    limit = (config.get(TABLE) or {}).get("limit_w")
    if limit is None or device["capacity_w"] <= limit:
        return []
    return [("device.capacity_w", f"{device['capacity_w']} W is above this node's {limit} W limit")]
