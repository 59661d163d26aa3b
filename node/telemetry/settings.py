"""Telemetry settings: the ``[telemetry]`` table of ``eap-node.toml`` and the ``OTEL_*``
environment variables.

Precedence: an ``OTEL_*`` variable that is set wins over the config file, which wins over the
defaults, so a container can redirect a node's telemetry without editing its home.  Keys and
variables are listed in ``docs/observability.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eap.node.errors import ConfigError

#: Trace exporters this node can build.
TRACE_EXPORTERS = ("none", "console", "otlp")
#: Metric pushers this node can build (Prometheus scraping is always there when enabled).
METRIC_EXPORTERS = ("none", "otlp", "prometheus")
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
LOG_FORMATS = ("text", "json")
DEFAULT_SERVICE_NAME = "eap-node"


@dataclass(frozen=True)
class TelemetrySettings:
    """What a node's :class:`~eap.node.telemetry.core.Telemetry` is built from."""

    #: ``none`` (spans are made, so trace ids reach logs and peers, but not exported),
    #: ``console`` (JSON spans on stderr) or ``otlp``.
    traces_exporter: str = "none"
    #: ``none`` or ``otlp`` (periodic push); ``prometheus`` is accepted as "scrape only".
    metrics_exporter: str = "none"
    #: OTLP collector endpoint (``http://collector:4317``); empty: the exporter's default.
    otlp_endpoint: str = ""
    otlp_protocol: str = "grpc"
    #: Plaintext OTLP (a collector on the same host or pod network).
    otlp_insecure: bool = False
    service_name: str = DEFAULT_SERVICE_NAME
    #: Extra resource attributes (``OTEL_RESOURCE_ATTRIBUTES`` is merged in by the SDK).
    resource_attributes: dict[str, str] = field(default_factory=dict)
    #: ``host:port`` of the Prometheus ``/metrics`` endpoint; empty: not served.
    metrics_listen: str = ""
    #: Interval of the OTLP metric push, seconds.
    metrics_interval_s: float = 30.0
    #: ``text`` or ``json`` (one object per line).
    log_format: str = "text"
    #: Whether the local API adopts a caller's ``traceparent`` (the federation server adopts
    #: one only from authenticated, trusted peers, whatever this says).
    api_accept_traceparent: bool = False

    @classmethod
    def from_config(cls, config: Any, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        """From ``config.extra["telemetry"]`` and ``env`` (default ``os.environ``).

        Raises:
            ConfigError: an unknown exporter, protocol or log format, or a value of the wrong
                type; names the key.
        """
        env = os.environ if env is None else env
        table = (getattr(config, "extra", None) or {}).get("telemetry", {})
        if not isinstance(table, dict):
            raise ConfigError("[telemetry] must be a table")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"[telemetry]: unknown key(s) {unknown}; known: {sorted(known)}")

        def text(key: str, default: str) -> str:
            value = table.get(key, default)
            if not isinstance(value, str):
                raise ConfigError(f"[telemetry] {key} must be a string, not {value!r}")
            return value.strip()

        traces = _env(env, "OTEL_TRACES_EXPORTER") or text("traces_exporter", "none")
        metrics = _env(env, "OTEL_METRICS_EXPORTER") or text("metrics_exporter", "none")
        protocol = (
            _env(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or _env(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
            or text("otlp_protocol", "grpc")
        )
        insecure_env = _env(env, "OTEL_EXPORTER_OTLP_INSECURE")
        insecure = table.get("otlp_insecure", False)
        if not isinstance(insecure, bool):
            raise ConfigError(f"[telemetry] otlp_insecure must be true or false, not {insecure!r}")
        if insecure_env:
            insecure = insecure_env.lower() in ("1", "true", "yes")
        accept = table.get("api_accept_traceparent", False)
        if not isinstance(accept, bool):
            raise ConfigError(
                f"[telemetry] api_accept_traceparent must be true or false, not {accept!r}"
            )
        interval = table.get("metrics_interval_s", 30.0)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ConfigError(f"[telemetry] metrics_interval_s must be > 0, not {interval!r}")
        attrs = table.get("resource_attributes", {})
        if not isinstance(attrs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()
        ):
            raise ConfigError("[telemetry] resource_attributes must be a table of strings")
        settings = cls(
            traces_exporter=_one(traces, TRACE_EXPORTERS, "traces_exporter"),
            metrics_exporter=_one(metrics, METRIC_EXPORTERS, "metrics_exporter"),
            otlp_endpoint=_env(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
            or text("otlp_endpoint", ""),
            otlp_protocol=_one(protocol, OTLP_PROTOCOLS, "otlp_protocol"),
            otlp_insecure=insecure,
            service_name=_env(env, "OTEL_SERVICE_NAME")
            or text("service_name", DEFAULT_SERVICE_NAME),
            resource_attributes=dict(attrs),
            metrics_listen=text("metrics_listen", ""),
            metrics_interval_s=float(interval),
            log_format=_one(text("log_format", "text"), LOG_FORMATS, "log_format"),
            api_accept_traceparent=accept,
        )
        if settings.metrics_listen:
            check_listen(settings.metrics_listen, "metrics_listen")
        return settings


def check_listen(value: str, key: str) -> tuple[str, int]:
    """``host:port`` as ``(host, port)``.

    Raises:
        ConfigError: not ``host:port`` with a port in 0..65535.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"[telemetry] {key} must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


def _env(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _one(value: str, allowed: tuple[str, ...], key: str) -> str:
    # OTEL_TRACES_EXPORTER may list several; this node builds one.
    first = value.split(",")[0].strip().lower()
    if first not in allowed:
        raise ConfigError(f"[telemetry] {key} must be one of {list(allowed)}, not {value!r}")
    return first
