"""Duplicate devices across nodes (Sybil): one meter registered at two nodes.

Device pseudonyms are unlinkable across nodes on purpose, so the same meter registered at two
nodes would go unnoticed.  Each node instead publishes, per local meter, a tag of an
oblivious PRF of the normalised meter id under its own key
(:mod:`eap.node.crypto.meter_oprf`); a node learns the tag of *its* meter under a peer's key
only through a blinded, rate-limited evaluation by that peer, and compares it with the tags the
peer publishes.  The transport (``CheckDevices``) lives in
:mod:`eap.node.federation.device_check`; this module owns the node side:

* :func:`precheck` — before a registration: asks the installed :class:`MeterGuard` (the
  federation checker, when the node federates) to test the meter against every peer that
  answers in time; a match refuses the registration (``AlreadyExists`` naming the peer) and
  leaves a durable ``refused`` alert.
* :func:`record_registration` — in the registration transaction: the meter's own tag and its
  tags under the peers' keys obtained by the precheck.
* :func:`flag_matches` — after a sweep (peers that did not answer in time, devices registered
  while offline or before this check existed): every local device whose tag a peer publishes
  gets a durable ``flagged`` alert, a warning in the log and an ``eap_record_event`` event
  ``device_duplicate``.  Both nodes sweep, so both operators are told.

Nothing here stores, logs or sends a meter id.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from eap.node.crypto import meter_oprf
from eap.node.domain.ledger import now_ms
from eap.node.errors import AlreadyExists, FieldViolation
from eap.node.store import device_check_repos as dr
from eap.node.store import repos

log = logging.getLogger(__name__)

REFUSED = "refused"
FLAGGED = "flagged"
EVENT = "device_duplicate"


class MeterGuard(Protocol):
    """What the federation layer installs as ``node.meter_guard``."""

    def check_new_meter(self, meter_id: str) -> tuple[list[tuple[str, bytes]], str | None]:
        """Test a meter against the peers: ``(tags under each answering peer's key, the first
        peer that publishes the same tag or None)``."""
        ...


def oprf_key(node: Any) -> bytes:
    """This node's meter OPRF key (derived from its pseudonym secret)."""
    return meter_oprf.derive_key(node.config.node_secret())


def own_tag(node: Any, meter_id: str) -> bytes:
    """The tag this node publishes for one of its meters."""
    return meter_oprf.tag(node.node_id, meter_oprf.element(oprf_key(node), meter_id))


def precheck(node: Any, *, meter_id: str, local_ref: str) -> list[tuple[str, bytes]]:
    """Run before a device registration (see the module docstring).

    Returns:
        ``(peer, tag)`` pairs to store with the device (:func:`record_registration`).

    Raises:
        InvalidArgument: the meter id normalises to nothing.
        AlreadyExists: a peer publishes the same meter; a ``refused`` alert is stored first.
    """
    meter_oprf.normalise_meter_id(meter_id)
    guard: MeterGuard | None = getattr(node, "meter_guard", None)
    if guard is None:
        return []
    with node.store.read() as conn:
        if repos.device_conflicts(conn, local_ref, meter_id):
            return []  # a replay or a local conflict: the registration itself answers
    checked, dup_peer = guard.check_new_meter(meter_id)
    if dup_peer is None:
        return checked
    peer_tag = dict(checked)[dup_peer]
    with node.store.transaction() as conn:
        dr.add_duplicate(
            conn,
            peer=dup_peer,
            device_id="",
            local_ref=local_ref,
            action=REFUSED,
            peer_tag=peer_tag,
            at_ms=now_ms(),
        )
    log.warning("refused device %s: its meter is registered at peer %s", local_ref, dup_peer)
    node.record_event(EVENT, "", action=REFUSED, peer=dup_peer, local_ref=local_ref)
    raise AlreadyExists(
        f"meter already registered at peer node {dup_peer}",
        [FieldViolation("device.meter_id", f"registered at peer node {dup_peer}")],
    )


def record_registration(
    conn: Any, node: Any, device_id: str, meter_id: str, peer_tags: list[tuple[str, bytes]]
) -> None:
    """In the registration transaction: publish the meter's tag, keep its peer tags."""
    at = now_ms()
    dr.add_own_tag(conn, device_id, own_tag(node, meter_id), at)
    dr.add_peer_checks(conn, [(device_id, peer, tag) for peer, tag in peer_tags], at)


def backfill_own_tags(node: Any, limit: int = 1000) -> int:
    """Publish tags of devices registered before this check existed; how many were added."""
    with node.store.transaction() as conn:
        rows = dr.devices_without_own_tag(conn, limit)
        at = now_ms()
        for device_id, meter_id in rows:
            dr.add_own_tag(conn, device_id, own_tag(node, meter_id), at)
    return len(rows)


def flag_matches(node: Any, peer: str) -> list[dict[str, Any]]:
    """Store a ``flagged`` alert for each local device whose tag ``peer`` publishes; returns
    the new alerts (each also logged and sent as an ``eap_record_event`` event)."""
    new: list[dict[str, Any]] = []
    with node.store.transaction() as conn:
        at = now_ms()
        for device_id, local_ref, tag in dr.matches(conn, peer):
            if dr.add_duplicate(
                conn,
                peer=peer,
                device_id=device_id,
                local_ref=local_ref,
                action=FLAGGED,
                peer_tag=tag,
                at_ms=at,
            ):
                new.append({"peer": peer, "device_id": device_id, "local_ref": local_ref})
    for alert in new:
        log.warning(
            "duplicate device %s (%s): its meter is registered at peer %s too",
            alert["device_id"],
            alert["local_ref"],
            peer,
        )
        node.record_event(
            EVENT,
            "",
            action=FLAGGED,
            peer=peer,
            device_id=alert["device_id"],
            local_ref=alert["local_ref"],
        )
    return new


def list_duplicates(node: Any) -> list[dict[str, Any]]:
    """Every duplicate alert, oldest first (operator view)."""
    with node.store.read() as conn:
        rows = dr.duplicates(conn)
    return [
        {
            "id": int(r.id),
            "peer": r.peer,
            "device_id": r.device_id,
            "local_ref": r.local_ref,
            "action": r.action,
            "detected_at_ms": int(r.detected_at_ms),
        }
        for r in rows
    ]
