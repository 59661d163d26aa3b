"""Domain spans: ``with span(node, "eap.transfer", wh=…) as s:`` and the attribute allowlist.

Every domain operation of the node is one span named ``eap.<operation>`` with the node id and
an ``eap.outcome`` (``ok`` or the error's gRPC status name).  Attributes must be on
:data:`ALLOWED`: counts, Wh, node ids of peers, public ids of transfers and rounds, never an
account, label, token, meter id, location or beneficiary.  An attribute off the list is a
programming error (``ValueError``), so a new one is reviewed here before it can leak.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from eap.node.telemetry.core import of

#: Attribute names (without the ``eap.`` prefix) a domain span may carry.
ALLOWED = frozenset(
    {
        "node_id",
        "peer",
        "outcome",
        "wh",
        "bundles",
        "records",
        "readings",
        "batches",
        "batch_seq",
        "cursor",
        "split",
        "scope",
        "direction",
        "phase",
        "transfer_id",
        "round_id",
        "period",
        "state",
        "participants",
        "obligations",
        "plugins",
        "anchored",
        "failed",
        "pending",
        "unknown_meters",
        "priced",
        "format",
        "messages",
        "replayed",
    }
)


@contextmanager
def span(
    node: Any, name: str, *, kind: trace.SpanKind = trace.SpanKind.INTERNAL, **attributes: Any
) -> Iterator[Span]:
    """A span of ``node``'s tracer, child of the current one; ``eap.outcome`` is set on exit
    (``ok``, or the gRPC status name of an :class:`~eap.node.errors.EapError`, else
    ``INTERNAL``) and re-raised errors mark the span as failed."""
    with of(node).tracer.start_as_current_span(
        name, kind=kind, record_exception=False, set_status_on_exception=False
    ) as s:
        s.set_attribute("eap.node_id", node.node_id)
        annotate(s, **attributes)
        try:
            yield s
        except BaseException as exc:
            status = getattr(getattr(exc, "status", None), "name", None) or "INTERNAL"
            s.set_attribute("eap.outcome", status)
            s.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        else:
            if "eap.outcome" not in (getattr(s, "attributes", None) or {}):  # unsampled: none
                s.set_attribute("eap.outcome", "ok")


def annotate(s: Span, **attributes: Any) -> None:
    """Set allowlisted attributes (``None`` values are skipped) as ``eap.<name>``.

    Raises:
        ValueError: a name off :data:`ALLOWED`.
    """
    for key, value in attributes.items():
        if key not in ALLOWED:
            raise ValueError(f"span attribute {key!r} is not on the telemetry allowlist")
        if value is None:
            continue
        s.set_attribute(
            f"eap.{key}", value if isinstance(value, bool | int | float | str) else str(value)
        )
