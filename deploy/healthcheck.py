#!/usr/bin/env python3
"""Container health probe of eap-node: a ``grpc.health.v1`` Check against the local API.

Installed in the image as ``/usr/local/bin/eap-healthcheck`` (Docker ``HEALTHCHECK``, compose).
Exits 0 when the node's local API answers ``SERVING`` for ``eap.v1.NodeApi``, 1 otherwise.
The address is the home's ``[api] health_listen`` (the plaintext health-only port) when set,
else ``[api] listen`` (home: ``$EAP_NODE_HOME``), a wildcard host (``0.0.0.0``, ``::``)
replaced by loopback.  Over TLS (``[api] tls_cert``) it trusts the ``ca.crt`` beside the
certificate and, when the API requires client certificates, presents the API's own
(``eap.node.api.tls.local_api_channel``).  Kubernetes does not need this script: its
``grpc:`` probes call the health-only port.
"""

from __future__ import annotations

import argparse
import sys

SERVICE = "eap.v1.NodeApi"


def probe_address(listen: str) -> str:
    """Where to reach a server bound to ``listen`` from inside its own container."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eap-healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="host:port to probe in plaintext (default: the "
                        "home's [api] health_listen, else its [api] listen)")
    parser.add_argument("--service", default=SERVICE, help=f"health service (default {SERVICE})")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = args.address
    if address is None:
        from eap.node.api.tls import local_api_channel
        from eap.node.config import NodeConfig, default_home
        from eap.node.errors import EapError

        try:
            config = NodeConfig.load(default_home())
            if config.api_health_listen:
                address = probe_address(config.api_health_listen)
                channel = grpc.insecure_channel(address)
            else:
                address = probe_address(config.api_listen)
                channel = local_api_channel(config, address=address)
        except EapError as exc:
            print(f"unhealthy: {exc}", file=sys.stderr)
            return 1
    else:
        channel = grpc.insecure_channel(address)

    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {address}: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address} {args.service}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
