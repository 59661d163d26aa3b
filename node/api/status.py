"""The one place where node errors become gRPC status (with ``google.rpc`` details)."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from eap.node.errors import BackendError, EapError, ResourceExhausted

#: Retry hint sent with a transient settlement backend failure (the node retries by itself too).
BACKEND_RETRY_S = 5.0

log = logging.getLogger(__name__)


def to_status(exc: EapError) -> grpc.Status:
    """Build a ``grpc.Status`` carrying BadRequest field violations and RetryInfo."""
    details = []
    if exc.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in exc.violations
            ]
        )
        details.append(_pack(bad))
    if isinstance(exc, ResourceExhausted) and exc.retry_after:
        details.append(_pack(_retry_info(float(exc.retry_after))))
    info = error_details_pb2.ErrorInfo(reason=type(exc).__name__, domain="eap.v1")
    if isinstance(exc, BackendError):
        # UNAVAILABLE (transient) or FAILED_PRECONDITION (refused): say which backend, and
        # tell clients a transient failure is worth retrying.
        info.metadata["backend"] = exc.backend
        info.metadata["transient"] = "true" if exc.transient else "false"
        if exc.transient:
            details.append(_pack(_retry_info(BACKEND_RETRY_S)))
    details.append(_pack(info))
    code = exc.status.value[0]
    status = status_pb2.Status(code=code, message=str(exc), details=details)
    return rpc_status.to_status(status)


def _retry_info(secs: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration(seconds=int(secs), nanos=int((secs % 1) * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def abort_with(context: grpc.ServicerContext, exc: EapError) -> None:
    context.abort_with_status(to_status(exc))


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of a failed call."""
    status = rpc_status.from_call(error)
    out = []
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


def _pack(msg) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed
