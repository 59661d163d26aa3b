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
