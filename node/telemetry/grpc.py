"""RPC spans and latency of the node's gRPC servers, and trace context on outbound channels.

Server side (:class:`TracingInterceptor`, on the NodeApi and the Federation server): every
RPC is a ``SERVER`` span named ``<service>/<method>`` with the ``rpc.*`` attributes and its
latency lands in ``eap.rpc.server.duration``.  The caller's W3C ``traceparent`` becomes the
span's parent only when ``adopt(context)`` says the caller may set it: on the federation
server, a peer whose mutual-TLS certificate names a node on the trust list (not ``pending``);
on the local API, only when ``[telemetry] api_accept_traceparent`` is set.  Anyone else
starts a new trace, with a span link to the context it offered marked
``eap.link.untrusted``, so an operator can still follow it without letting strangers join
(or steer the sampling of) the node's traces.  The upstream OpenTelemetry server interceptor
adopts every caller's context, which is why it is not used here.

Client side, the upstream ``opentelemetry-instrumentation-grpc`` client interceptor
(:func:`instrument_channel`) makes a ``CLIENT`` span per call and injects ``traceparent``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from eap.node.telemetry.core import Telemetry

_PROPAGATOR = TraceContextTextMapPropagator()
#: ``adopt(servicer_context) -> (may adopt, caller node id or "")``.
Adopt = Callable[[grpc.ServicerContext], tuple[bool, str]]


def never(_context: grpc.ServicerContext) -> tuple[bool, str]:
    return False, ""


def always(_context: grpc.ServicerContext) -> tuple[bool, str]:
    return True, ""


def trusted_peer(trust: Any) -> Adopt:
    """Adopt only from a caller whose mTLS certificate names a peer on ``trust`` that is not
    ``pending``; the caller's node id is returned either way (for the span) when known."""
    from eap.node.crypto import peer_node_id_from_auth_context
    from eap.node.errors import EapError
    from eap.node.federation.peers import PENDING

    def adopt(context: grpc.ServicerContext) -> tuple[bool, str]:
        try:
            node_id = peer_node_id_from_auth_context(context)
        except (EapError, AttributeError, TypeError):
            return False, ""
        try:
            peer = trust.get(node_id)
        except EapError:
            return False, ""
        return (peer is not None and peer.status != PENDING), node_id

    return adopt


class TracingInterceptor(grpc.ServerInterceptor):
    """Span and latency of every RPC (see the module docstring)."""

    def __init__(self, telemetry: Telemetry, adopt: Adopt = never) -> None:
        self.telemetry = telemetry
        self.adopt = adopt

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method or ""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # the node serves no client-streaming RPCs

    def _start(self, method: str, context: grpc.ServicerContext):
        service, _, name = method.lstrip("/").partition("/")
        carrier = {
            md.key: md.value
            for md in (context.invocation_metadata() or ())
            if md.key in ("traceparent", "tracestate")
        }
        adopt, caller = self.adopt(context) if carrier else (False, "")
        links: list[Link] = []
        parent = otel_context.Context()  # a new trace unless the caller may continue its own
        if carrier:
            offered = _PROPAGATOR.extract(carrier)
            if adopt:
                parent = offered
            else:
                remote = trace.get_current_span(offered).get_span_context()
                if remote.is_valid:
                    links.append(Link(remote, {"eap.link.untrusted": True}))
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "eap.node_id": self.telemetry.node_id,
        }
        if caller:
            attributes["eap.peer"] = caller
        cm = self.telemetry.tracer.start_as_current_span(
            method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            links=links,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        return cm, {"rpc.service": service, "rpc.method": name}

    def _finish(
        self,
        span: Any,
        labels: dict,
        context: grpc.ServicerContext,
        started: float,
        error: BaseException | None,
    ) -> None:
        code = _code(context, error)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        self.telemetry.metrics.rpc_duration.record(
            time.perf_counter() - started, {**labels, "rpc.grpc.status_code": code.name}
        )

    def _unary(self, behavior, method: str):
        def call(request, context):
            started = time.perf_counter()
            cm, labels = self._start(method, context)
            with cm as span:
                error = None
                try:
                    return behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._finish(span, labels, context, started, error)

        return call

    def _stream(self, behavior, method: str):
        def call(request, context):
            started = time.perf_counter()
            cm, labels = self._start(method, context)
            with cm as span:
                error = None
                try:
                    yield from behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._finish(span, labels, context, started, error)

        return call


def _code(context: grpc.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    try:
        code = context.code()
    except (AttributeError, RuntimeError):
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpcio versions keep the raw enum value
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK


def instrument_channel(channel: grpc.Channel, telemetry: Telemetry) -> grpc.Channel:
    """``channel`` with the OpenTelemetry client interceptor of ``telemetry``'s provider:
    a ``CLIENT`` span per call and the current trace context in ``traceparent``."""
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    return intercept_channel(channel, client_interceptor(tracer_provider=telemetry.tracer_provider))
