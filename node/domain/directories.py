"""Account directories: map a member id of an external system to a node account.

A directory is any object a plugin returns from the ``eap_account_directories`` hook with:

* ``name``: a short unique name (``coopdb``);
* ``lookup(ctx, member_ref) -> str | None``: the node account id (``acct_...``) of that member,
  or None when the directory does not know the member.  Only the mapping crosses: names,
  addresses and other personal data stay in the external system;
* ``health(ctx) -> dict``: ``{"ok": bool, "detail": str}``, cheap, for listings.

``ctx`` is the context settlement backends get too (node id, home, store, ``settings``): here
``settings`` is the directory's ``[settlement.<name>]`` table merged with its
``[directories.<name>]`` table, so a plugin that is both a directory and a settlement backend
(``coopdb``) is configured once.

:func:`lookup` calls one directory in a worker thread bounded by ``[plugins] timeout_s`` and
turns a failure into an error naming the directory's plugin.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Protocol

from eap.node.domain import plugin_calls
from eap.node.errors import ConfigError, EapError, NotFound, PluginError

log = logging.getLogger(__name__)


class AccountDirectory(Protocol):
    """The shape of an object returned by ``eap_account_directories``."""

    name: str

    def lookup(self, ctx: Any, member_ref: str) -> str | None: ...

    def health(self, ctx: Any) -> dict: ...


def available(plugins: Any, timeout_s: float = plugin_calls.DEFAULT_TIMEOUT_S) -> dict:
    """Every directory the loaded plugins offer: ``{name: (plugin name, directory)}``.

    Raises:
        ConfigError: two directories share a name, or one has none.
        PluginError: a plugin failed to list its directories.
    """
    found: dict[str, tuple[str, Any]] = {}
    for plugin, offered in plugin_calls.call_each(
        plugins, "eap_account_directories", {}, timeout_s
    ):
        for directory in offered or ():
            name = getattr(directory, "name", None)
            if not isinstance(name, str) or not name:
                raise ConfigError(f"plugin {plugin} offers an account directory without a name")
            if name in found:
                raise ConfigError(
                    f"account directory {name!r} is offered by both plugins "
                    f"{found[name][0]} and {plugin}"
                )
            found[name] = (plugin, directory)
    return found


def lookup(node: Any, directory: str, member_ref: str) -> str | None:
    """The node account of ``member_ref`` in the named directory (None: unknown member).

    Raises:
        NotFound: no loaded directory has that name.
        PluginError: the directory raised or did not answer in time (names its plugin).
    """
    timeout_s = plugin_calls.timeout_of(node)
    dirs = available(node.plugins, timeout_s)
    if directory not in dirs:
        names = ", ".join(sorted(dirs)) or "none"
        raise NotFound(f"no account directory {directory!r}; loaded: {names}")
    plugin, obj = dirs[directory]
    ctx = context(node, directory)
    result = _bounded(lambda: obj.lookup(ctx, member_ref), timeout_s, plugin, "lookup")
    if result is not None and not isinstance(result, str):
        raise PluginError(
            f"plugin {plugin}: directory {directory!r} returned {result!r}, not an account id",
            plugin=plugin,
        )
    return result


def health(node: Any, timeout_s: float = 5.0) -> list[dict]:
    """``[{name, plugin, ok, detail}]`` of every directory; never raises for a directory."""
    out = []
    for name, (plugin, obj) in sorted(available(node.plugins, timeout_s).items()):
        try:
            state = _bounded(functools.partial(obj.health, context(node, name)), timeout_s,
                             plugin, "health")
            ok, detail = bool(state.get("ok")), str(state.get("detail", ""))
        except (EapError, AttributeError) as exc:
            ok, detail = False, str(exc)
        out.append({"name": name, "plugin": plugin, "ok": ok, "detail": detail})
    return out


def context(node: Any, name: str) -> Any:
    """The ``ctx`` a directory named ``name`` is called with (see the module docstring)."""
    from eap.node.domain import settlement_backends as sb

    ctx = sb._context(node, sb.SettlementSettings.from_config(node.config), name)
    extra = (getattr(node.config, "extra", None) or {}).get("directories", {}).get(name, {})
    ctx.settings.update(extra if isinstance(extra, dict) else {})
    return ctx


def _bounded(fn: Any, timeout_s: float, plugin: str, what: str) -> Any:
    return plugin_calls.bounded(fn, timeout_s, plugin, f"account directory {what}")
