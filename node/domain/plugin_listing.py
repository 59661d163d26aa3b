"""What ``eap-node plugins`` shows: each loaded plugin, its version, its hooks and the health
of the backends it offers (settlement backends, account directories, anchoring queues)."""

from __future__ import annotations

import logging
from typing import Any

from eap.node.domain import anchoring, directories, plugin_calls, settlement_backends
from eap.node.errors import EapError

log = logging.getLogger(__name__)


def listing(node: Any, *, health_timeout_s: float = 5.0) -> dict:
    """``{"plugins": [{name, version, hooks}], "backends": [{kind, name, plugin, ok, detail}]}``.

    Never raises for a plugin: a backend whose listing or health fails is reported not ok.
    """
    pm = node.plugins
    version_of = getattr(pm, "version_of", lambda _name: "registered in-process")
    plugins = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda x: str(x[0])):
        if plugin is None:  # blocked
            continue
        label = type(plugin).__name__ if name.isdigit() else name
        plugins.append(
            {
                "name": label,
                "version": version_of(name),
                "hooks": plugin_calls.hooks_of(pm, plugin),
            }
        )
    backends: list[dict] = []
    try:
        for b in settlement_backends.health(node, timeout_s=health_timeout_s):
            detail = b["detail"] + (" (selected)" if b["selected"] else "")
            backends.append(_row("settlement", b["name"], b["plugin"], b["ok"], detail))
    except EapError as exc:
        backends.append(_row("settlement", "?", getattr(exc, "backend", "?"), False, str(exc)))
    try:
        for d in directories.health(node, timeout_s=health_timeout_s):
            backends.append(_row("directory", d["name"], d["plugin"], d["ok"], d["detail"]))
    except EapError as exc:
        backends.append(_row("directory", "?", getattr(exc, "plugin", "?"), False, str(exc)))
    for a in anchoring.status(node):
        ok = a["loaded"] and not a["last_error"]
        detail = f"{a['anchored']} anchored, {a['pending']} queued"
        if a["oldest_pending"] is not None:
            detail += f" (oldest seq {a['oldest_pending']})"
        if not a["loaded"]:
            detail += "; plugin not loaded"
        if a["last_error"]:
            detail += f"; last error: {a['last_error']}"
        probe = getattr(pm.get_plugin(a["plugin"]), "health", None) if a["loaded"] else None
        if callable(probe):  # an anchoring plugin may say how its target is doing
            try:
                state = plugin_calls.bounded(
                    lambda p=probe: p(node.config.home), health_timeout_s, a["plugin"], "health"
                )
                ok = ok and bool(state.get("ok"))
                detail += f"; {state.get('detail', '')}"
            except (EapError, AttributeError) as exc:
                ok, detail = False, f"{detail}; {exc}"
        backends.append(_row("anchoring", a["plugin"], a["plugin"], ok, detail))
    return {"plugins": plugins, "backends": backends}


def _row(kind: str, name: str, plugin: str, ok: bool, detail: str) -> dict:
    return {"kind": kind, "name": name, "plugin": plugin, "ok": bool(ok), "detail": detail}
