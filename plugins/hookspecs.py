"""Hook specifications: every hook a plugin may implement, with its calling rule.

Bodies are empty on purpose; the docstring of each hook is its contract.  A test fails when a
hook has no docstring or no test.
"""

from __future__ import annotations

from typing import Any

from eap.plugins import hookspec


@hookspec
def eap_meter_sources() -> list[Any]:
    """Meter-data readers this plugin provides (objects implementing
    ``eap.node.meters.MeterSource``). All results are collected; plugin sources are tried
    before the built-in ones, in reverse registration order."""


@hookspec(firstresult=True)
def eap_attest_device(device: dict[str, Any], scheme: str, evidence: str) -> dict[str, str] | None:
    """Check the attestation of a device registration (Sybil resistance). firstresult: return
    None when the scheme is not yours; return ``{"ref": ...}`` to accept; raise
    ``eap.node.errors.InvalidArgument`` (or ``PermissionDenied``) to reject with a reason."""


@hookspec
def eap_batch_issued(
    node_id: str,
    seq: int,
    count: int,
    wh: int,
    merkle_root: bytes,
    signature: bytes,
    key_id: str,
    home: str,
) -> None:
    """Called after a signed issuance batch committed: anchor its Merkle root to a chain or a
    public log. Every implementation is called; exceptions are logged, never undo issuance."""


@hookspec
def eap_settlement_backends() -> list[Any]:
    """Settlement backends this plugin provides: objects with a unique ``name``,
    ``execute(ctx, item, idempotency_key) -> {"reference": ...}`` and ``health(ctx)`` (see
    ``eap.node.domain.settlement_backends``). All results are collected, each with its plugin's
    name; the node calls only the one named by ``[settlement] backend``, in a worker thread
    bounded by ``[settlement] timeout_s``. ``execute`` must be idempotent by key (a replay
    returns the first receipt) and raise ``eap.node.errors.BackendError`` (``transient=True``
    when a retry may succeed); anything else raised, or a timeout, is a transient failure."""
