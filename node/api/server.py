"""Build and run the local API server: NodeApi + grpc.health.v1 + server reflection.

TLS, client certificates and the plaintext health-only port: :mod:`eap.node.api.tls`.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import replace
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eap.node.api.guard import MalformedRequestGuard
from eap.node.api.servicer import NodeApiServicer
from eap.node.api.tls import ApiSettings, resolve
from eap.node.domain.node import Node
from eap.v1 import node_api_pb2, node_api_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = node_api_pb2.DESCRIPTOR.services_by_name["NodeApi"].full_name


def build_server(
    node: Node,
    listen: str,
    *,
    workers: int = 8,
    servicer: NodeApiServicer | None = None,
    tls: ApiSettings | None = None,
) -> tuple[grpc.Server, int]:
    """Create (not start) the server; returns it and the bound port (``listen`` may use :0).

    ``servicer`` defaults to a :class:`NodeApiServicer` of ``node`` without a transfer engine.
    ``tls`` (see :mod:`eap.node.api.tls`) serves TLS; without it the server is plaintext, which
    is refused (``ConfigError``) on a non-loopback ``listen``.
    """
    server, port, _ = _build(node, listen, workers=workers, servicer=servicer, tls=tls)
    return server, port


def _build(
    node: Node,
    listen: str,
    *,
    workers: int = 8,
    servicer: NodeApiServicer | None = None,
    tls: ApiSettings | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    settings = replace(tls, listen=listen) if tls is not None else ApiSettings(listen=listen)
    settings.check()
    credentials = settings.server_credentials()
    limit = node.config.max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eap-api"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
        interceptors=(_tracing(node), MalformedRequestGuard()),
    )
    node_api_pb2_grpc.add_NodeApiServicer_to_server(servicer or NodeApiServicer(node), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"could not bind {listen}")
    return server, port, health_servicer


def _tracing(node: Node) -> grpc.ServerInterceptor:
    """RPC spans and latency; the API adopts a caller's trace context only when ``[telemetry]
    api_accept_traceparent`` is set (:mod:`eap.node.telemetry.grpc`)."""
    from eap.node import telemetry
    from eap.node.telemetry import grpc as tgrpc

    tele = telemetry.of(node)
    adopt = tgrpc.always if tele.settings.api_accept_traceparent else tgrpc.never
    return tgrpc.TracingInterceptor(tele, adopt)


def build_health_server(
    health_servicer: health.HealthServicer, listen: str
) -> tuple[grpc.Server, int]:
    """A plaintext server with ``grpc.health.v1`` only (``[api] health_listen``), sharing the
    API's health states: for probes that cannot speak TLS.  It carries no tokens and no data.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="eap-health")
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not bind {listen}")
    return server, port


def start_node_tasks(node: Node) -> Any:
    """Background tasks of ``serve`` that need no federation: the anchor queue's catch-up,
    every ``[plugins] anchor_interval_s`` seconds (:mod:`eap.node.domain.anchoring`); one
    replica at a time (:mod:`eap.node.store.coordination`)."""
    from eap.node.domain import anchoring
    from eap.node.domain.plugin_calls import PluginSettings
    from eap.node.federation.runtime import Worker

    worker = Worker(node.store.coordinator)
    interval = PluginSettings.from_config(node.config).anchor_interval_s
    worker.every("anchor-queue", interval, lambda: anchoring.drain(node), initial_delay_s=1.0)
    worker.start()
    return worker


def serve_forever(node: Node, listen: str | None = None, *, log_format: str | None = None,
                  log_level: str | None = None, **api_options: Any) -> None:
    """Serve until SIGINT/SIGTERM.  ``api_options`` override ``[api]`` settings (see
    :func:`eap.node.api.tls.resolve`: ``tls_cert``, ``tls_key``, ``client_ca``,
    ``require_client_cert``, ``allow_plaintext_remote``); ``log_format`` / ``log_level``
    override ``[telemetry] log_format`` and INFO.  ``[telemetry] metrics_listen`` serves
    Prometheus ``/metrics`` (docs/observability.md).

    Raises:
        ConfigError: unusable API settings, e.g. a non-loopback address without TLS.
    """
    from eap.node import telemetry
    from eap.node.telemetry import logs

    tele = telemetry.of(node)  # ConfigError on a bad [telemetry] table, before anything binds
    tele.install_global()
    logs.configure(log_format or tele.settings.log_format, log_level or logging.INFO)
    # Refuse to start on loose secrets (ConfigError: one line from the CLI), not on first use.
    node.config.api_token()
    node.config.node_secret()
    settings = resolve(node.config, listen=listen, **api_options)
    # One serving process per SQLite database (ConfigError otherwise); on PostgreSQL a replica
    # among others (docs/deploy.md "Several replicas").
    coordinator = node.store.coordinator
    coordinator.register_replica()
    address = settings.listen
    servicer = NodeApiServicer(node)
    server, port, health_servicer = _build(node, address, servicer=servicer, tls=settings)
    health_server = None
    if settings.health_listen:
        health_server, health_port = build_health_server(health_servicer, settings.health_listen)
    from eap.node.federation.runtime import start_federation

    # Federation first, so that the API serves cross-node transfers from its first call.
    federation = start_federation(node)  # None when the home has no TLS material
    tasks = start_node_tasks(node)  # with or without federation: the anchor queue drains
    if federation is not None:
        servicer.transfers = federation.transfers
    server.start()
    if tele.settings.metrics_listen:
        metrics_port = tele.start_metrics_server()
        host = tele.settings.metrics_listen.rsplit(":", 1)[0]
        print(f"eap-node {node.node_id} serving Prometheus /metrics on {host}:{metrics_port}",
              flush=True)
    if health_server is not None:
        health_server.start()
        host = settings.health_listen.rsplit(":", 1)[0]
        print(f"eap-node {node.node_id} serving grpc.health.v1 (plaintext, health only) on "
              f"{host}:{health_port}", flush=True)
    host = address.rsplit(":", 1)[0]
    print(
        f"eap-node {node.node_id} serving eap.v1.NodeApi on {host}:{port} ({settings.describe()})",
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    tasks.stop()
    if federation is not None:
        federation.stop()
    if health_server is not None:
        health_server.stop(grace=1)
    server.stop(grace=5).wait()
    coordinator.unregister_replica()
    node.close()
