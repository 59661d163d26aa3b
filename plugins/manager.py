"""The plugin manager: built-in plugins, entry points, an allow-list and hook tracing.

* ``EAP_PLUGINS=name,name`` loads only the named plugins (built-in module names such as
  ``meter_files``, or entry-point names); unset loads all.
* ``EAP_TRACE_HOOKS=1`` logs every hook call and its result at DEBUG on ``eap.plugins.trace``.
* ``EAP_TEST_FLAKY_BACKEND=N`` (a testing aid) also registers :mod:`eap.plugins.flaky_backend`,
  a settlement backend ``flaky`` failing transiently N times per idempotency key.
* ``EAP_TEST_SLOW_ANCHOR=<seconds>:<folder>`` (a testing aid) also registers
  :mod:`eap.plugins.slow_anchor`, an anchoring plugin that waits before anchoring.
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points

import pluggy

from eap.plugins import PROJECT, hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "eap.plugins"
DEFAULT_PLUGINS = (
    "eap.plugins.meter_files",
    "eap.plugins.operator_attestation",
    "eap.plugins.utility_allowlist",
    "eap.plugins.anchor_log",
    "eap.plugins.coop_ledger",
    # inactive (health "not configured") until [settlement.coopdb] url is set
    "eap.plugins.coopdb",
    "eap.plugins.evm",
    # inactive until [meters.greenbutton_connect] is configured
    "eap.plugins.greenbutton_connect",
)

#: Set, registers the test backend ``flaky`` (:mod:`eap.plugins.flaky_backend`).
FLAKY_ENV = "EAP_TEST_FLAKY_BACKEND"
#: Set, registers the slow test anchor ``slow_anchor`` (:mod:`eap.plugins.slow_anchor`).
SLOW_ANCHOR_ENV = "EAP_TEST_SLOW_ANCHOR"


def _allowed() -> set[str] | None:
    raw = os.environ.get("EAP_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


class EapPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from.

    ``versions`` maps a plugin name to its distribution's version (entry-point plugins) or
    ``"built-in"``; plugins registered directly (tests, ``eap_node_factory``) are absent.
    """

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.versions: dict[str, str] = {}

    def version_of(self, name: str) -> str:
        return self.versions.get(name, "registered in-process")


def get_plugin_manager(*, load_entry_points: bool = True) -> EapPluginManager:
    """A manager with the hook specs, the built-in plugins and (optionally) entry points."""
    pm = EapPluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    allowed = _allowed()
    for name in DEFAULT_PLUGINS:
        short = name.rsplit(".", 1)[1]
        if allowed is None or short in allowed or name in allowed:
            pm.register(importlib.import_module(name), name=short)
            pm.versions[short] = "built-in"
    if os.environ.get(FLAKY_ENV):  # fault tests of `eap-node serve` processes only
        pm.register(importlib.import_module("eap.plugins.flaky_backend"), name="flaky_backend")
        pm.versions["flaky_backend"] = "built-in (test)"
    if os.environ.get(SLOW_ANCHOR_ENV):  # fault tests of replicas draining the anchor queue
        pm.register(importlib.import_module("eap.plugins.slow_anchor"), name="slow_anchor")
        pm.versions["slow_anchor"] = "built-in (test)"
    if load_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed:
                continue
            if pm.get_plugin(ep.name) is None:
                pm.register(ep.load(), name=ep.name)
                dist = getattr(ep, "dist", None)
                pm.versions[ep.name] = f"{dist.name} {dist.version}" if dist else "unknown"
    if os.environ.get("EAP_TRACE_HOOKS") == "1":
        trace = logging.getLogger("eap.plugins.trace")

        def before(hook_name, impls, kwargs):
            trace.debug("hook %s -> %s %s", hook_name, [i.plugin_name for i in impls], kwargs)

        def after(outcome, hook_name, impls, kwargs):
            trace.debug("hook %s returned %r", hook_name, outcome.get_result())

        pm.add_hookcall_monitoring(before, after)
    return pm
