"""One node's telemetry: its tracer provider, meter provider, metrics and ``/metrics`` server.

Each node gets providers of its own (not the process-global ones), so several nodes in one
process (tests, ``eap-node demo``) export under their own resource (``service.instance.id``
= node id) and a test can attach an in-memory exporter to one node.  Spans are always made,
even with the ``none`` exporter: their ids reach the JSON logs and, through ``traceparent``,
the peers.

Metrics design: instruments are defined once over the OpenTelemetry metrics API
(:mod:`eap.node.telemetry.metrics`); the OpenTelemetry Prometheus reader turns them into a
``prometheus_client`` registry of this node, served on ``[telemetry] metrics_listen`` by
``prometheus_client``'s HTTP server; ``metrics_exporter = "otlp"`` adds a periodic OTLP push
of the same instruments.  One source of truth, two ways out, no double counting.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from prometheus_client import CollectorRegistry

from eap.node.errors import ConfigError
from eap.node.telemetry.metrics import NodeMetrics
from eap.node.telemetry.settings import TelemetrySettings, check_listen

log = logging.getLogger(__name__)
SCOPE = "eap.node"


class Telemetry:
    """Tracing and metrics of one node (see the module docstring)."""

    def __init__(self, node_id: str, settings: TelemetrySettings | None = None) -> None:
        self.node_id = node_id
        self.settings = settings or TelemetrySettings()
        resource = Resource.create(
            {
                **self.settings.resource_attributes,
                SERVICE_NAME: self.settings.service_name,
                SERVICE_INSTANCE_ID: node_id,
                "eap.node.id": node_id,
            }
        )
        self.tracer_provider = TracerProvider(resource=resource)
        exporter = _span_exporter(self.settings)
        if exporter is not None:
            self.tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.tracer_provider.get_tracer(SCOPE)
        #: The registry ``/metrics`` serves: this node's metrics only.
        self.registry = CollectorRegistry(auto_describe=True)
        readers: list[MetricReader] = [
            PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        ]
        if self.settings.metrics_exporter == "otlp":
            readers.append(
                PeriodicExportingMetricReader(
                    _metric_exporter(self.settings),
                    export_interval_millis=self.settings.metrics_interval_s * 1000,
                )
            )
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self.metrics = NodeMetrics(self.meter_provider.get_meter(SCOPE))
        self._http: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any) -> Telemetry:
        """For the node of ``config`` (``[telemetry]`` and ``OTEL_*``)."""
        return cls(config.node_id, TelemetrySettings.from_config(config))

    def install_global(self) -> None:
        """Make this node's tracer provider the process's (``serve``: one node per process),
        so that spans of node-agnostic code (``eap.kernels.*``) join the node's traces."""
        trace.set_tracer_provider(self.tracer_provider)

    def start_metrics_server(self, listen: str | None = None) -> int:
        """Serve ``/metrics`` (Prometheus text format) on ``listen`` (default ``[telemetry]
        metrics_listen``); returns the bound port (``listen`` may use port 0).

        Raises:
            ConfigError: no address configured, or a malformed one.
            OSError: the port cannot be bound.
        """
        from prometheus_client import start_http_server

        listen = listen or self.settings.metrics_listen
        if not listen:
            raise ConfigError("[telemetry] metrics_listen is not set")
        host, port = check_listen(listen, "metrics_listen")
        with self._lock:
            if self._http is not None:
                raise ConfigError("the metrics server already runs")
            server, thread = start_http_server(port, addr=host, registry=self.registry)
            self._http = (server, thread)
        return int(server.server_address[1])

    def stop_metrics_server(self) -> None:
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            server, thread = http
            server.shutdown()
            server.server_close()
            thread.join(5)

    def shutdown(self) -> None:
        """Stop ``/metrics``, flush and stop the exporters."""
        self.stop_metrics_server()
        try:
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()
        except Exception:  # an exporter that cannot reach its collector must not stop the node
            log.warning("telemetry shutdown failed", exc_info=True)


def of(node: Any) -> Telemetry:
    """The telemetry of ``node`` (anything with ``config``), created at first use."""
    tele = getattr(node, "_telemetry", None)
    if tele is None:
        tele = Telemetry.from_config(node.config)
        with contextlib.suppress(AttributeError):  # a frozen stand-in: made per call
            node._telemetry = tele
    return tele


def current_ids() -> tuple[str, str]:
    """``(trace_id, span_id)`` of the current span as hex, or empty strings."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _span_exporter(settings: TelemetrySettings):
    if settings.traces_exporter == "console":
        # stderr: stdout carries command output (`--json`)
        return ConsoleSpanExporter(service_name=settings.service_name, out=sys.stderr)
    if settings.traces_exporter != "otlp":
        return None
    kwargs: dict[str, Any] = {}
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if settings.otlp_endpoint:
            kwargs["endpoint"] = settings.otlp_endpoint
        kwargs["insecure"] = settings.otlp_insecure
        return OTLPSpanExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    if settings.otlp_endpoint:
        kwargs["endpoint"] = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    return HttpSpanExporter(**kwargs)


def _metric_exporter(settings: TelemetrySettings):
    kwargs: dict[str, Any] = {}
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        if settings.otlp_endpoint:
            kwargs["endpoint"] = settings.otlp_endpoint
        kwargs["insecure"] = settings.otlp_insecure
        return OTLPMetricExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    if settings.otlp_endpoint:
        kwargs["endpoint"] = settings.otlp_endpoint.rstrip("/") + "/v1/metrics"
    return HttpMetricExporter(**kwargs)
