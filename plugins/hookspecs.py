"""Hook specifications: every hook a plugin may implement, with its calling rule.

Bodies are empty on purpose; the docstring of each hook is its contract.  Hooks are grouped by
the role a plugin plays.  A test fails when a hook has no docstring or no test.

Every hook the node calls inside an operation (validation, attestation) runs before anything
is written, in a worker thread bounded by ``[plugins] timeout_s`` (default 10 s): a plugin that
raises or does not answer in time refuses the operation with an error naming the plugin, and
nothing changes.  Hooks called after a commit (anchoring, record events) are bounded the same
way, but their failures are logged and never undo or block the operation.
"""

from __future__ import annotations

from typing import Any

from eap.plugins import hookspec

# -- meter-data sources ------------------------------------------------------------------------


@hookspec
def eap_meter_sources() -> list[Any]:
    """Meter-data readers this plugin provides (objects implementing
    ``eap.node.meters.MeterSource``). All results are collected; plugin sources are tried
    before the built-in ones, in reverse registration order."""


@hookspec
def eap_meter_pullers() -> list[Any]:
    """Remote meter-data sources the node pulls from (a utility's API): objects with ``name``,
    ``pull_into_node(node, subscriptions, request_id) -> list[(pull, ImportResult)]`` and
    ``health(node) -> {"ok", "detail"}``. All results are collected; ``eap-node meter pull``
    runs every configured one (or the one named by ``--source``). A puller keeps its own cursor
    and moves it only after the node committed the import, so a failure pulls the same window
    again and the node stores identical readings once."""


# -- device attestation ------------------------------------------------------------------------


@hookspec(firstresult=True)
def eap_attest_device(
    device: dict[str, Any], scheme: str, evidence: str, settings: dict[str, Any]
) -> dict[str, str] | None:
    """Check the attestation of a device registration (Sybil resistance). firstresult, last
    registered first: return None when the scheme is not yours; return ``{"ref": ...}`` to
    accept; raise ``eap.node.errors.InvalidArgument`` (or ``PermissionDenied``) to reject with a
    reason. ``settings`` is the ``[attestation]`` table of the node's config (paths relative to
    the home are resolved by the plugin with ``settings["home"]``). Called before the
    registration transaction; a scheme no plugin accepts refuses the registration."""


# -- anchoring ---------------------------------------------------------------------------------


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
    """Anchor the Merkle root of a committed, signed issuance batch (a chain, a public log).
    Every implementation is called, each on its own, from the node's durable anchor queue
    (``eap.node.domain.anchoring``): a batch is queued in its issuance transaction and handed
    to each plugin in seq order until the plugin returns. Raising (or running past
    ``[plugins] timeout_s``) leaves the batch queued for that plugin, to be sent again later;
    issuance is never undone. A batch may be sent again after a crash, so an implementation
    must be idempotent per ``(node_id, seq)``."""


# -- settlement backends -----------------------------------------------------------------------


@hookspec
def eap_settlement_backends() -> list[Any]:
    """Settlement backends this plugin provides: objects with a unique ``name``,
    ``execute(ctx, item, idempotency_key) -> {"reference": ...}`` and ``health(ctx)`` (see
    ``eap.node.domain.settlement_backends``). All results are collected, each with its plugin's
    name; the node calls only the one named by ``[settlement] backend``, in a worker thread
    bounded by ``[settlement] timeout_s``. ``execute`` must be idempotent by key (a replay
    returns the first receipt) and raise ``eap.node.errors.BackendError`` (``transient=True``
    when a retry may succeed); anything else raised, or a timeout, is a transient failure."""


# -- account directories -----------------------------------------------------------------------


@hookspec
def eap_account_directories() -> list[Any]:
    """Account directories this plugin provides: objects with a unique ``name``,
    ``lookup(member_ref) -> account id | None`` and ``health() -> {"ok", "detail"}`` (see
    ``eap.node.domain.directories``): a map from a member id in an external system (a co-op's
    member database) to a node account, without copying personal data into the node. All
    results are collected, each with its plugin's name; a lookup calls one named directory in a
    worker thread bounded by ``[plugins] timeout_s``; raising or timing out is an
    ``Unavailable`` error naming the plugin."""


# -- record lifecycle events -------------------------------------------------------------------


@hookspec
def eap_record_event(event: dict[str, Any]) -> None:
    """A record changed, after its transaction committed. ``event["type"]`` is ``issued``,
    ``transferred`` or ``retired`` (``imported`` / ``exported`` are reserved for cross-node
    transfers), with ``node_id``, ``at_ms``, ``request_id`` and fields of the type (batch seq,
    bundle ids, Wh, accounts); ``device_duplicate`` when a meter is found registered at a peer
    node too (``action`` ``refused`` or ``flagged``, ``peer``, ``local_ref``, ``device_id``;
    docs/security.md §7a). Never for a replayed request. Every implementation is called,
    last registered first, each in a worker thread bounded by ``[plugins] timeout_s``;
    exceptions and timeouts are logged and never undo or fail the operation. Not queued: a
    crash right after the commit may lose an event."""


# -- extra validation policies -----------------------------------------------------------------


@hookspec
def eap_validate_device(device: dict[str, Any], config: dict[str, Any]) -> list[Any]:
    """Extra rules for a device registration, checked after the node's own field rules and
    before attestation and the transaction (``config``: the node's config tables other than
    its core ones, so a plugin reads its own ``[table]``). Every implementation is called;
    return violations, each ``(field, description)`` or ``{"field", "description"}`` (empty
    or None: no objection). Any violation refuses the registration with
    ``InvalidArgument`` naming the plugin; raising or running past ``[plugins] timeout_s``
    refuses it with ``Unavailable`` naming the plugin. Nothing is written in either case."""


@hookspec
def eap_validate_readings(readings: Any, source: str, config: dict[str, Any]) -> list[Any]:
    """Extra rules for imported meter data (``readings`` is the columnar
    ``eap.node.meters.MeterReadings`` of the whole file, ``source`` the reader's name,
    ``config`` as for ``eap_validate_device``), checked
    before the import transaction. Every implementation is called; return violations as for
    ``eap_validate_device``. Any violation refuses the whole import with ``InvalidArgument``;
    raising or timing out refuses it with ``Unavailable`` naming the plugin; nothing is
    stored."""
