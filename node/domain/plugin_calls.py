"""Calling plugin hooks one implementation at a time, each bounded by ``[plugins] timeout_s``.

pluggy calls every implementation of a hook in one go and loses which plugin raised.  The node
calls them here instead, one by one, each in a daemon worker thread, so that every error names
its plugin and no plugin can hold an operation (or a database transaction) for longer than the
configured timeout.  Hooks called inside an operation run *before* its transaction
(:func:`call_each`, :func:`call_first`, :func:`violations`); hooks called after a commit go
through :func:`notify`, which logs failures and never raises.

Like :mod:`eap.node.domain.settlement_backends`, a call that timed out may still finish in its
thread: after-commit hooks must therefore be idempotent (anchoring is keyed by batch seq).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from eap.node.errors import ConfigError, EapError, FieldViolation, InvalidArgument, PluginError

log = logging.getLogger(__name__)
trace = logging.getLogger("eap.plugins.trace")

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PluginSettings:
    """``[plugins]`` of ``eap-node.toml``."""

    #: Longest a single hook implementation may run before the node gives up on it.
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: How often ``eap-node serve`` drains the anchor queue.
    anchor_interval_s: float = 30.0

    @classmethod
    def from_config(cls, config: Any) -> PluginSettings:
        table = dict(getattr(config, "extra", {}).get("plugins", {}) or {})
        values = {}
        for key, default in (("timeout_s", cls.timeout_s), ("anchor_interval_s", 30.0)):
            value = table.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"[plugins] {key} must be a positive number, not {value!r}")
            values[key] = float(value)
        return cls(**values)


def plugin_label(impl: Any) -> str:
    """The plugin's registered name; its class name when registered without one (pluggy then
    names an object by its ``id``)."""
    name = impl.plugin_name
    return type(impl.plugin).__name__ if name.isdigit() else name


def impls(plugins: Any, hook: str) -> Iterator[tuple[str, Any]]:
    """``(plugin name, implementation)`` of ``hook`` in pluggy's call order (last registered
    first, ``tryfirst`` / ``trylast`` honoured)."""
    for impl in reversed(getattr(plugins.hook, hook).get_hookimpls()):
        yield plugin_label(impl), impl


def call(impl: Any, kwargs: dict[str, Any], timeout_s: float, who: str = "") -> Any:
    """One hook implementation with the arguments it declares, in a worker thread.

    Raises:
        EapError: what the plugin raised, when it is one (a rejection with a reason).
        PluginError: the plugin raised anything else or did not answer within ``timeout_s``.
    """
    args = {k: kwargs[k] for k in impl.argnames if k in kwargs}
    hook = getattr(impl.function, "__name__", "hook")
    return bounded(lambda: impl.function(**args), timeout_s, plugin_label(impl), hook)


def in_thread(fn: Callable[[], Any], timeout_s: float, name: str) -> Any:
    """``fn()`` in a daemon worker thread named ``name``, waited for at most ``timeout_s``.

    Returns what ``fn`` returned and raises what it raised; ``TimeoutError`` when it did not
    answer in time (the thread is left to finish on its own: callers must be idempotent).
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(name)
    if "error" in box:
        raise box["error"]
    return box.get("result")


def bounded(fn: Callable[[], Any], timeout_s: float, plugin: str, what: str) -> Any:
    """``fn()`` on behalf of ``plugin`` (:func:`in_thread`), at most ``timeout_s``.

    Raises:
        EapError: what ``fn`` raised, when it is one.
        PluginError: ``fn`` raised anything else or did not answer in time; names the plugin.
    """
    try:
        result = in_thread(fn, timeout_s, f"eap-plugin-{plugin}")
    except TimeoutError:
        log.warning("plugin %s (%s) did not answer within %.1f s", plugin, what, timeout_s)
        raise PluginError(
            f"plugin {plugin} did not answer {what} within {timeout_s:g} s", plugin=plugin
        ) from None
    except EapError:
        raise
    except Exception as exc:
        log.error("plugin %s (%s) raised", plugin, what, exc_info=exc)
        raise PluginError(
            f"plugin {plugin} failed in {what}: {type(exc).__name__}: {exc}", plugin=plugin
        ) from exc
    if os.environ.get("EAP_TRACE_HOOKS") == "1":
        trace.debug("hook %s -> %s returned %r", what, plugin, result)
    return result


def call_each(plugins: Any, hook: str, kwargs: dict[str, Any], timeout_s: float) -> list:
    """Every implementation in call order: ``[(plugin name, result), ...]``.

    Raises:
        EapError: an implementation raised one.
        PluginError: an implementation raised anything else or timed out.
    """
    return [(name, call(impl, kwargs, timeout_s, name)) for name, impl in impls(plugins, hook)]


def call_first(
    plugins: Any, hook: str, kwargs: dict[str, Any], timeout_s: float
) -> tuple[str, Any] | None:
    """The first non-None result in call order (a ``firstresult`` hook): ``(plugin, result)``."""
    for name, impl in impls(plugins, hook):
        result = call(impl, kwargs, timeout_s, name)
        if result is not None:
            return name, result
    return None


def violations(
    plugins: Any, hook: str, kwargs: dict[str, Any], timeout_s: float, message: str
) -> None:
    """Run a validation hook; refuse with every violation any plugin returned.

    Raises:
        InvalidArgument: at least one violation; each description names its plugin.
        PluginError: a plugin raised (other than an EapError) or timed out.
    """
    found: list[FieldViolation] = []
    for name, result in call_each(plugins, hook, kwargs, timeout_s):
        for v in result or ():
            if isinstance(v, FieldViolation):
                field, text = v.field, v.description
            elif isinstance(v, dict):
                field, text = str(v.get("field", "")), str(v.get("description", ""))
            else:
                field, text = (str(x) for x in v)
            found.append(FieldViolation(field, f"{text} (plugin {name})"))
    if found:
        raise InvalidArgument(message, found)


def notify(plugins: Any, hook: str, kwargs: dict[str, Any], timeout_s: float) -> list[str]:
    """After a commit: call every implementation; log failures, never raise.

    Returns:
        The names of the plugins that failed (raised or timed out).
    """
    failed = []
    for name, impl in impls(plugins, hook):
        try:
            call(impl, kwargs, timeout_s, name)
        except Exception:
            log.exception("plugin %s failed in %s (after commit; the operation stands)", name, hook)
            failed.append(name)
    return failed


def hooks_of(plugins: Any, plugin: Any) -> list[str]:
    """Names of the hooks ``plugin`` implements."""
    return sorted(caller.name for caller in plugins.get_hookcallers(plugin) or ())


def timeout_of(node: Any) -> float:
    return PluginSettings.from_config(node.config).timeout_s
