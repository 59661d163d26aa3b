"""Thin hooks the domain uses: a span decorator for operations, metrics from committed
record events, and trace context carried into worker threads.

- :func:`traced` wraps a method of anything with ``node_id`` and ``config`` (or a ``node``)
  in a :func:`~eap.node.telemetry.spans.span`; ``describe(result)`` adds allowlisted
  attributes and ``measure(metrics, result, seconds)`` records metrics unless the call was an
  idempotent replay (``eap.replayed``, set by :func:`mark_replayed`).
- :func:`on_event` counts the Wh of committed operations: it is called with every record
  event (``issued``, ``transferred``, ``retired``, ``exported``, ``imported``), which the node
  emits only after a commit and never for a replay.
- :func:`in_context` runs a callable in another thread under the caller's trace context.
- :func:`traceparent` / :func:`resumed`: the current trace as a W3C ``traceparent`` stored
  with an outbox message, and a span that continues that trace when a worker sends it later.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from eap.node.telemetry.core import of
from eap.node.telemetry.metrics import NodeMetrics
from eap.node.telemetry.spans import annotate, span

__all__ = [
    "annotate",
    "in_context",
    "mark_replayed",
    "of",
    "on_event",
    "resumed",
    "traced",
    "traceparent",
    "transfer_aborted",
]
_PROPAGATOR = TraceContextTextMapPropagator()
log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

LOCAL = {"scope": "local", "direction": "local", "outcome": "committed"}


def traced(
    name: str,
    describe: Callable[[Any], dict] | None = None,
    measure: Callable[[NodeMetrics, Any, float], None] | None = None,
) -> Callable[[F], F]:
    """Decorate a method as the span ``name`` (see the module docstring)."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            node = getattr(self, "node", self)
            started = time.perf_counter()
            with span(node, name) as s:
                result = fn(self, *args, **kwargs)
                try:  # the operation is done: telemetry must not turn it into a failure
                    if describe is not None:
                        annotate(s, **describe(result))
                    replayed = bool((getattr(s, "attributes", None) or {}).get("eap.replayed"))
                    if measure is not None and not replayed:
                        measure(of(node).metrics, result, time.perf_counter() - started)
                except Exception:
                    log.exception("telemetry of %s failed", name)
                return result

        return wrapper  # type: ignore[return-value]

    return deco


def mark_replayed() -> None:
    """Mark the current span as an idempotent replay (its metrics were counted the first
    time)."""
    trace.get_current_span().set_attribute("eap.replayed", True)


def on_event(node: Any, kind: str, fields: dict[str, Any]) -> None:
    """Count a committed record event (see the module docstring); never raises."""
    try:
        _count(of(node).metrics, kind, fields)
    except Exception:
        log.exception("counting the %s event failed", kind)


def _count(m: NodeMetrics, kind: str, fields: dict[str, Any]) -> None:
    wh = int(fields.get("wh") or 0)
    if kind == "issued":
        m.issued_wh.add(wh)
    elif kind == "retired":
        m.claimed_wh.add(wh)
    elif kind == "transferred":
        m.transferred_wh.add(wh, {"scope": "local", "direction": "local"})
        m.transfers.add(1, LOCAL)
    elif kind in ("exported", "imported"):
        direction = "out" if kind == "exported" else "in"
        m.transferred_wh.add(wh, {"scope": "cross_node", "direction": direction})
        m.transfers.add(1, {"scope": "cross_node", "direction": direction, "outcome": "committed"})


def transfer_aborted(node: Any, direction: str) -> None:
    """Count a cross-node transfer that ended aborted (``direction`` ``out`` or ``in``)."""
    of(node).metrics.transfers.add(
        1, {"scope": "cross_node", "direction": direction, "outcome": "aborted"}
    )


def in_context(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` bound to the current trace context, for a thread pool."""
    ctx = otel_context.get_current()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(ctx)
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return run


def traceparent() -> str | None:
    """The current span as a W3C ``traceparent`` (None outside a span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def resumed(node: Any, name: str, stored: str | None, **attributes: Any) -> Iterator[Span]:
    """The span ``name``, child of the current span, or, when there is none (a background
    worker), of the stored ``traceparent`` the node itself wrote earlier."""
    token = None
    if stored and not trace.get_current_span().get_span_context().is_valid:
        token = otel_context.attach(_PROPAGATOR.extract({"traceparent": stored}))
    try:
        with span(node, name, **attributes) as s:
            yield s
    finally:
        if token is not None:
            otel_context.detach(token)
