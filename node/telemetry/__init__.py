"""Observability of a node: OpenTelemetry traces and metrics, Prometheus ``/metrics`` and
structured logs.

- :mod:`.settings`: ``[telemetry]`` and ``OTEL_*``;
- :mod:`.core`: the per-node :class:`Telemetry` (providers, exporters, ``/metrics``);
- :mod:`.metrics`: the instruments; :mod:`.spans`: domain spans and their allowlist;
- :mod:`.grpc`: RPC spans with trust-gated trace context; :mod:`.logs`: text/JSON logs.

Reference: ``docs/observability.md``.
"""

from eap.node.telemetry.core import Telemetry, current_ids, of
from eap.node.telemetry.settings import TelemetrySettings
from eap.node.telemetry.spans import annotate, span

__all__ = ["Telemetry", "TelemetrySettings", "annotate", "current_ids", "of", "span"]
