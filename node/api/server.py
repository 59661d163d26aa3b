"""Build and run the local API server: NodeApi + grpc.health.v1 + server reflection."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eap.node.api.guard import MalformedRequestGuard
from eap.node.api.servicer import NodeApiServicer
from eap.node.domain.node import Node
from eap.v1 import node_api_pb2, node_api_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = node_api_pb2.DESCRIPTOR.services_by_name["NodeApi"].full_name


def build_server(
    node: Node, listen: str, *, workers: int = 8, servicer: NodeApiServicer | None = None
) -> tuple[grpc.Server, int]:
    """Create (not start) the server; returns it and the bound port (``listen`` may use :0).

    ``servicer`` defaults to a :class:`NodeApiServicer` of ``node`` without a transfer engine.
    """
    limit = node.config.max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eap-api"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
        interceptors=(MalformedRequestGuard(),),
    )
    node_api_pb2_grpc.add_NodeApiServicer_to_server(servicer or NodeApiServicer(node), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not bind {listen}")
    return server, port


def serve_forever(node: Node, listen: str | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Refuse to start on loose secrets (ConfigError: one line from the CLI), not on first use.
    node.config.api_token()
    node.config.node_secret()
    address = listen or node.config.api_listen
    servicer = NodeApiServicer(node)
    server, port = build_server(node, address, servicer=servicer)
    from eap.node.federation.runtime import start_federation

    # Federation first, so that the API serves cross-node transfers from its first call.
    federation = start_federation(node)  # None when the home has no TLS material
    if federation is not None:
        servicer.transfers = federation.transfers
    server.start()
    host = address.rsplit(":", 1)[0]
    print(f"eap-node {node.node_id} serving eap.v1.NodeApi on {host}:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    if federation is not None:
        federation.stop()
    server.stop(grace=5).wait()
    node.close()
