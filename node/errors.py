"""One error hierarchy for the node, mapped once to gRPC status codes at the edge.

Domain, store, kernels and federation code raise these; ``eap.node.api`` turns them into a
``grpc.Status`` with ``google.rpc`` details and the CLI into one line on stderr and an exit
code.  Nothing else should catch-and-translate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: a dotted path (``device.capacity_w``, ``records[12].interval``) and why."""

    field: str
    description: str


@dataclass
class EapError(Exception):
    """Base of every error the node reports to a caller."""

    message: str
    violations: list[FieldViolation] = field(default_factory=list)

    status = grpc.StatusCode.INTERNAL
    #: Process exit code used by the CLI.
    exit_code = 1

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.violations:
            return self.message
        details = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:5])
        more = f" (+{len(self.violations) - 5} more)" if len(self.violations) > 5 else ""
        return f"{self.message}: {details}{more}"


class InvalidArgument(EapError):
    """The request itself is malformed or breaks a field rule; nothing was changed."""

    status = grpc.StatusCode.INVALID_ARGUMENT
    exit_code = 2


class NotFound(EapError):
    """A referenced id (bundle, device, account, peer, transfer) does not exist."""

    status = grpc.StatusCode.NOT_FOUND
    exit_code = 3


class AlreadyExists(EapError):
    """The object to create exists already (device id, account, peer)."""

    status = grpc.StatusCode.ALREADY_EXISTS
    exit_code = 4


class FailedPrecondition(EapError):
    """The system is not in a state that allows the request (spend more than held, retired...)."""

    status = grpc.StatusCode.FAILED_PRECONDITION
    exit_code = 5


class Aborted(EapError):
    """A concurrent change won the race; the caller may retry with a fresh read."""

    status = grpc.StatusCode.ABORTED
    exit_code = 6


class OutOfRange(EapError):
    """An arithmetic result left its representable range (int64 overflow in netting)."""

    status = grpc.StatusCode.OUT_OF_RANGE
    exit_code = 7


class PermissionDenied(EapError):
    """The caller is known but may not do this (wrong owner, untrusted peer, wrong destination)."""

    status = grpc.StatusCode.PERMISSION_DENIED
    exit_code = 8


class Unauthenticated(EapError):
    """The caller could not be authenticated (bad signature, expired envelope, no token)."""

    status = grpc.StatusCode.UNAUTHENTICATED
    exit_code = 9


class ResourceExhausted(EapError):
    """A limit was hit (message size, batch size, rate); ``retry_after`` seconds may help."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    exit_code = 10
    retry_after: float | None = None


class Unavailable(EapError):
    """A peer or backend could not be reached; safe to retry."""

    status = grpc.StatusCode.UNAVAILABLE
    exit_code = 11


class BackendError(EapError):
    """A settlement backend did not execute an instruction; nothing was posted by this call.

    ``transient``: the same call may succeed later (backend down, timed out, a plugin bug):
    the caller retries with the same idempotency key, and the status is ``UNAVAILABLE``.
    Otherwise the backend refused the instruction for a reason a retry does not change
    (credit line exceeded, unknown account): ``FAILED_PRECONDITION``, an operator must act.
    ``backend`` names the backend (or plugin) that failed.
    """

    def __init__(
        self,
        message: str,
        transient: bool = False,
        *,
        backend: str = "",
        violations: list[FieldViolation] | None = None,
    ) -> None:
        self.transient = transient
        self.backend = backend
        super().__init__(message, violations or [])

    @property
    def status(self) -> grpc.StatusCode:  # type: ignore[override]
        if self.transient:
            return grpc.StatusCode.UNAVAILABLE
        return grpc.StatusCode.FAILED_PRECONDITION

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return Unavailable.exit_code if self.transient else FailedPrecondition.exit_code


class ConfigError(EapError):
    """The node home or its configuration is missing or invalid."""

    status = grpc.StatusCode.FAILED_PRECONDITION
    exit_code = 12


def invalid(field_name: str, description: str, message: str = "invalid request") -> InvalidArgument:
    """Shorthand for an :class:`InvalidArgument` with a single field violation."""
    return InvalidArgument(message, [FieldViolation(field_name, description)])


class PluginError(Unavailable):
    """A plugin raised something other than an :class:`EapError`, or did not answer within
    ``[plugins] timeout_s``; the operation it was called for changed nothing (or, after a
    commit, went ahead without it).  ``plugin`` names the plugin."""

    def __init__(self, message: str, *, plugin: str = "") -> None:
        self.plugin = plugin
        super().__init__(message)
