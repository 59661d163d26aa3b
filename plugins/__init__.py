"""Plugins of the EAP node: hook specifications, the plugin manager and the built-in plugins.

Every local system a node talks to (meter data, device attestation, anchoring of issuance
batches, settlement backends) is a pluggy plugin.  Built-in plugins are ordinary modules
listed in :data:`eap.plugins.manager.DEFAULT_PLUGINS` and registered exactly like third-party
ones, which are found through the ``eap.plugins`` entry-point group.

A plugin imports only this package::

    from eap.plugins import hookimpl

    @hookimpl
    def eap_meter_sources():
        return [MyUtilityApiSource()]

See ``docs/plugins.md``.
"""

import pluggy

PROJECT = "eap"

#: Marker for hook implementations in plugins.
hookimpl = pluggy.HookimplMarker(PROJECT)
#: Marker for hook specifications (used by :mod:`eap.plugins.hookspecs`).
hookspec = pluggy.HookspecMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec"]
