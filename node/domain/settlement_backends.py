"""Settlement backends: the one door through which a node executes a settlement instruction.

A backend is any object a plugin returns from the ``eap_settlement_backends`` hook with:

* ``name``: a short unique name (``coop-ledger``, ``evm``, ``coopdb``);
* ``execute(ctx, item, idempotency_key) -> dict``: carry out one side of one instruction and
  return at least ``{"reference": str}`` (a ledger entry id, a transaction hash), optionally
  ``"at_ms"``.  Idempotent by key: a replay returns the first receipt and moves nothing.
  Raise :class:`~eap.node.errors.BackendError` (``transient=True`` when a retry may succeed);
* ``health(ctx) -> dict``: ``{"ok": bool, "detail": str}``, cheap, for listings;
* optionally ``execute_many(ctx, [(item, key), ...]) -> [receipt | BackendError, ...]``, for
  backends that do a batch cheaper than its items one by one (:func:`execute_many`).

``ctx`` is a :class:`BackendContext`: the node id, its home, the backend's own settings
(``[settlement.<name>]``) and the node's store.

:func:`execute` is what the settlement executor calls.  It picks the backend named by
``[settlement] backend`` (default ``coop-ledger``), runs it in a worker thread bounded by
``[settlement] timeout_s`` (default 30) and turns whatever goes wrong into a
:class:`~eap.node.errors.BackendError` naming the backend and its plugin.  A call that times
out may still finish in its thread: that is why every backend must be idempotent by key, and
why the executor retries with the same key.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eap.node.crypto.keys import now_ms
from eap.node.domain import plugin_calls
from eap.node.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_BACKEND = "coop-ledger"
DEFAULT_TIMEOUT_S = 30.0
SIDES = ("debit", "credit")
#: Keys of an instruction item, as the settlement executor builds it.
ITEM_KEYS = ("instruction_id", "side", "round_id", "payer", "payee", "amount_minor", "currency")


@dataclass(frozen=True)
class BackendContext:
    """What a backend learns about the node it executes for."""

    node_id: str
    home: Path
    #: The backend's own table of the config, ``[settlement.<backend name>]``.
    settings: dict[str, Any] = field(default_factory=dict)
    #: The node's database (:class:`eap.node.store.Store`); only built-ins should need it.
    store: Any = None


class SettlementBackend(Protocol):
    """The shape of an object returned by ``eap_settlement_backends``."""

    name: str

    def execute(self, ctx: BackendContext, item: dict, idempotency_key: str) -> dict: ...

    def health(self, ctx: BackendContext) -> dict: ...


@dataclass(frozen=True)
class SettlementSettings:
    """``[settlement]`` of ``eap-node.toml``."""

    backend: str = DEFAULT_BACKEND
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: ``[settlement.<name>]`` tables, by backend name.
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any) -> SettlementSettings:
        table = dict(getattr(config, "extra", {}).get("settlement", {}) or {})
        backend = table.pop("backend", DEFAULT_BACKEND)
        timeout = table.pop("timeout_s", DEFAULT_TIMEOUT_S)
        if not isinstance(backend, str) or not backend:
            raise ConfigError(f"[settlement] backend must be a backend name, not {backend!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"[settlement] timeout_s must be a positive number, not {timeout!r}")
        backends = {k: v for k, v in table.items() if isinstance(v, dict)}
        return cls(backend=backend, timeout_s=float(timeout), backends=backends)


def available(plugins: Any) -> dict[str, tuple[str, Any]]:
    """Every backend the loaded plugins offer: ``{name: (plugin name, backend)}``.

    Backends are listed per hook implementation (not through one hook call) so that each is
    known with its plugin's name, which every error about it carries.

    Raises:
        ConfigError: two plugins offer a backend of the same name, or one without a name.
        BackendError: a plugin's hook implementation raised (transient, naming the plugin).
    """
    found: dict[str, tuple[str, Any]] = {}
    hook = plugins.hook.eap_settlement_backends
    for impl in hook.get_hookimpls():
        plugin = _plugin_label(impl)
        try:
            offered = list(impl.function() or ())
        except Exception as exc:
            log.exception("plugin %s failed to list its settlement backends", plugin)
            raise BackendError(
                f"plugin {plugin} failed to list its settlement backends: "
                f"{type(exc).__name__}: {exc}",
                transient=True,
                backend=plugin,
            ) from exc
        if os.environ.get("EAP_TRACE_HOOKS") == "1":  # called per plugin, so trace it here
            logging.getLogger("eap.plugins.trace").debug(
                "hook eap_settlement_backends -> %s returned %r", plugin, offered
            )
        for backend in offered:
            name = getattr(backend, "name", None)
            if not isinstance(name, str) or not name:
                raise ConfigError(f"plugin {plugin} offers a backend without a name")
            if name in found:
                raise ConfigError(
                    f"settlement backend {name!r} is offered by both plugins "
                    f"{found[name][0]} and {plugin}"
                )
            found[name] = (plugin, backend)
    return found


def _plugin_label(impl: Any) -> str:
    """The plugin's registered name; its class name when registered without one (pluggy
    then names an object by its ``id``)."""
    name = impl.plugin_name
    return type(impl.plugin).__name__ if name.isdigit() else name


def select(node: Any) -> tuple[str, Any, BackendContext, float]:
    """The configured backend: ``(plugin name, backend, context, timeout_s)``.

    Raises:
        ConfigError: the configured name is not among the loaded backends (the message lists
            those that are) or the ``[settlement]`` table is invalid.
    """
    settings = SettlementSettings.from_config(node.config)
    backends = available(node.plugins)
    if settings.backend not in backends:
        names = ", ".join(sorted(backends)) or "none (no plugin offers one)"
        raise ConfigError(
            f"[settlement] backend {settings.backend!r} is not loaded; available: {names}"
        )
    plugin, backend = backends[settings.backend]
    return plugin, backend, _context(node, settings, settings.backend), settings.timeout_s


def execute(node: Any, item: dict) -> dict:
    """Execute one side of one settlement instruction through the configured backend.

    Args:
        node: the :class:`~eap.node.domain.node.Node` (its config, plugins and store).
        item: ``{instruction_id, side, round_id, payer, payee, amount_minor, currency}``;
            ``side`` is ``"debit"`` (this node's account pays) or ``"credit"`` (this node's
            account is paid); ``payer`` / ``payee`` are ``"<node id>/acct_..."``.

    Returns:
        The receipt ``{"backend": name, "reference": str, "at_ms": int}``; executing the same
        item again returns the first receipt (idempotency key ``<instruction_id>:<side>``).

    Raises:
        ConfigError: no such backend is loaded (the message lists the available ones).
        BackendError: the backend failed; ``transient`` tells whether retrying (with the same
            item) may succeed.  A plugin that raises anything else, or that does not answer
            within ``[settlement] timeout_s``, gives a transient ``BackendError`` naming it.
    """
    _check_item(item)
    plugin, backend, ctx, timeout_s = select(node)
    key = f"{item['instruction_id']}:{item['side']}"
    who = f"settlement backend {backend.name!r} (plugin {plugin})"
    result = _call(lambda: backend.execute(ctx, dict(item), key), timeout_s, who, backend.name)
    if not isinstance(result, dict) or not isinstance(result.get("reference"), str):
        raise BackendError(
            f"{who} returned {result!r}, not a receipt with a reference",
            transient=True,
            backend=backend.name,
        )
    at_ms = result.get("at_ms")
    return {
        "backend": backend.name,
        "reference": result["reference"],
        "at_ms": int(at_ms) if isinstance(at_ms, int) else now_ms(),
    }


def execute_many(node: Any, items: list[dict]) -> list[dict | BackendError]:
    """:func:`execute` for many items at once; one receipt or ``BackendError`` per item.

    A backend with ``execute_many(ctx, [(item, key), ...])`` gets them in one call (the
    co-op ledger posts them in one transaction); any other backend is called item by item.
    The whole call is bounded by ``[settlement] timeout_s``; a failure of the call itself
    (raise, hang, wrong shape) is the same transient ``BackendError`` for every item.

    Raises:
        ConfigError: as :func:`execute`.
    """
    for it in items:
        _check_item(it)
    plugin, backend, ctx, timeout_s = select(node)
    who = f"settlement backend {backend.name!r} (plugin {plugin})"
    batch = [(dict(it), f"{it['instruction_id']}:{it['side']}") for it in items]
    many = getattr(backend, "execute_many", None)
    if many is None:
        out: list[dict | BackendError] = []
        for it in items:
            try:
                out.append(execute(node, it))
            except BackendError as exc:
                out.append(exc)
        return out
    try:
        results = _call(lambda: many(ctx, batch), timeout_s, who, backend.name)
        if not isinstance(results, list) or len(results) != len(items):
            raise BackendError(
                f"{who} returned {type(results).__name__} for {len(items)} items",
                transient=True,
                backend=backend.name,
            )
    except BackendError as exc:
        return [exc] * len(items)
    now = now_ms()
    return [
        r
        if isinstance(r, BackendError)
        else {
            "backend": backend.name,
            "reference": r["reference"],
            "at_ms": int(r.get("at_ms") or now),
        }
        for r in results
    ]


def health(node: Any, *, timeout_s: float = 5.0) -> list[dict]:
    """Health of every loaded backend, for listings: ``[{name, plugin, selected, ok, detail}]``.

    A backend whose ``health`` raises or hangs is reported not ok; this never raises for it.
    """
    settings = SettlementSettings.from_config(node.config)
    out = []
    for name, (plugin, backend) in sorted(available(node.plugins).items()):
        ctx = _context(node, settings, name)
        who = f"settlement backend {name!r} (plugin {plugin})"
        try:
            state = _call(lambda b=backend, c=ctx: b.health(c), timeout_s, who, name)
            if not isinstance(state, dict):
                raise BackendError(f"{who} health returned {state!r}", backend=name)
            ok, detail = bool(state.get("ok")), str(state.get("detail", ""))
        except BackendError as exc:
            ok, detail = False, str(exc)
        out.append(
            {
                "name": name,
                "plugin": plugin,
                "selected": name == settings.backend,
                "ok": ok,
                "detail": detail,
            }
        )
    return out


def _context(node: Any, settings: SettlementSettings, name: str) -> BackendContext:
    return BackendContext(
        node_id=node.config.node_id,
        home=Path(node.config.home),
        settings=dict(settings.backends.get(name, {})),
        store=node.store,
    )


def _check_item(item: dict) -> None:
    missing = [k for k in ITEM_KEYS if k not in item]
    if missing:
        raise BackendError(f"settlement item lacks {', '.join(missing)}")
    if item["side"] not in SIDES:
        raise BackendError(f"settlement item side must be debit or credit, not {item['side']!r}")
    amount = item["amount_minor"]
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount < 2**63:
        raise BackendError(f"settlement item amount_minor must be a positive int64: {amount!r}")


def _call(fn: Any, timeout_s: float, who: str, name: str) -> Any:
    """``fn()`` bounded by ``timeout_s`` (:func:`~.plugin_calls.in_thread`); every failure a
    :class:`BackendError` naming the backend (transient unless the backend said otherwise)."""
    try:
        return plugin_calls.in_thread(fn, timeout_s, f"eap-settlement-{name}")
    except TimeoutError:
        log.warning("%s did not answer within %.1f s", who, timeout_s)
        raise BackendError(
            f"{who} did not answer within {timeout_s:g} s", transient=True, backend=name
        ) from None
    except BackendError as exc:
        if not exc.backend:
            exc.backend = name
        raise
    except Exception as exc:
        log.exception("%s raised", who, exc_info=exc)
        raise BackendError(
            f"{who} failed: {type(exc).__name__}: {exc}", transient=True, backend=name
        ) from exc
