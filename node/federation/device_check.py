"""Duplicate-device check over federation: the ``CheckDevices`` RPC, both sides.

Server side (:class:`DeviceCheckService`): evaluates this node's meter OPRF
(:mod:`eap.node.crypto.meter_oprf`) on the caller's blinded points — at most
:data:`MAX_POINTS` per call, each spending one token of the caller's own device-check bucket
(``[federation] device_checks_per_hour`` / ``device_check_burst``; RESOURCE_EXHAUSTED with
RetryInfo when spent) — and returns a page of this node's published meter tags.  It never
sees a meter id: a blinded point is a uniformly random group element.

Client side (:class:`DeviceChecker`, installed as ``node.meter_guard``):

* :meth:`DeviceChecker.check_new_meter` runs before each registration: one call per active
  peer offering ``devices.v1``, with a short deadline (``device_check_timeout_s``) and no
  retry; a peer that does not answer is skipped and checked by the sweep later.
* :meth:`DeviceChecker.sweep` (a worker task, and after each sync period): copies each peer's
  new tags, evaluates local meters not yet checked against that peer within the budget, and
  flags matches (:func:`eap.node.domain.sybil.flag_matches`).

Answers of a peer are checked like any untrusted input: as many evaluations as points, each a
valid subgroup element; tags of 16 bytes with increasing seqs after the cursor; at most
``max_peer_device_tags`` kept per peer.  What a lying peer can still do is in
docs/security.md "Duplicate devices".
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.message import DecodeError

from eap.node.crypto import meter_oprf
from eap.node.domain import sybil
from eap.node.errors import EapError, InvalidArgument, ResourceExhausted, invalid
from eap.node.federation.auth import RateLimiter
from eap.node.federation.peers import ACTIVE
from eap.node.federation.settings import FederationSettings
from eap.node.store import device_check_repos as dr
from eap.v1 import federation_pb2 as fed

log = logging.getLogger(__name__)

CAPABILITY = "devices.v1"
RPC = "CheckDevices"
PT_REQUEST = fed.DeviceCheckRequest.DESCRIPTOR.full_name
PT_RESPONSE = fed.DeviceCheckResponse.DESCRIPTOR.full_name
#: Most blinded points one call may carry.
MAX_POINTS = 64
#: Most tags one answer returns.
TAG_PAGE = 4096
#: Tag pages one sweep pulls from a peer before moving on.
PAGES_PER_SWEEP = 16
#: Seconds between sweeps of ``eap-node serve``.
SWEEP_INTERVAL_S = 30.0


class DeviceCheckService:
    """Answers ``CheckDevices`` for this node."""

    def __init__(self, node: Any, settings: FederationSettings) -> None:
        self.node = node
        self.key = sybil.oprf_key(node)
        self.limiter = RateLimiter(
            settings.device_checks_per_hour / 3600.0, settings.device_check_burst
        )

    def on_check_devices(self, envelope: Any) -> tuple[str, bytes]:
        try:
            req = fed.DeviceCheckRequest.FromString(envelope.payload)
        except DecodeError as exc:
            raise invalid("payload", "not a DeviceCheckRequest") from exc
        if len(req.blinded) > MAX_POINTS:
            raise invalid("blinded", f"at most {MAX_POINTS} points per call")
        if req.after_seq >= 2**63:
            raise invalid("after_seq", "must be below 2^63")
        if req.blinded:
            try:
                self.limiter.take(envelope.origin, float(len(req.blinded)))
            except ResourceExhausted as exc:
                err = ResourceExhausted(
                    f"device-check budget of {envelope.origin} spent "
                    f"({self.limiter.rate * 3600:g} per hour, burst "
                    f"{self.limiter.burst:g})"
                )
                err.retry_after = exc.retry_after
                log.warning("%s: %d point(s) refused", err.message, len(req.blinded))
                raise err from None
        evaluated = [
            meter_oprf.evaluate(self.key, b, f"blinded[{i}]") for i, b in enumerate(req.blinded)
        ]
        with self.node.store.read() as conn:
            rows = dr.own_tags_after(conn, int(req.after_seq), TAG_PAGE + 1)
        resp = fed.DeviceCheckResponse(
            evaluated=evaluated,
            tags=[fed.DeviceTag(seq=s, tag=g) for s, g in rows[:TAG_PAGE]],
            more=len(rows) > TAG_PAGE,
        )
        log.debug(
            "CheckDevices from %s: %d point(s) evaluated, %d tag(s) after %d",
            envelope.origin,
            len(evaluated),
            len(resp.tags),
            req.after_seq,
        )
        return PT_RESPONSE, resp.SerializeToString()


class DeviceChecker:
    """Checks this node's meters against its peers (see the module docstring)."""

    def __init__(self, node: Any, client: Any, trust: Any, settings: FederationSettings) -> None:
        self.node = node
        self.client = client
        self.trust = trust
        self.settings = settings

    def peers(self) -> list[str]:
        """Peers to check with: handshake done and offering ``devices.v1``."""
        return [
            p.node_id
            for p in self.trust.all()
            if p.status == ACTIVE and CAPABILITY in p.capabilities
        ]

    # -- one call ---------------------------------------------------------------------------------

    def _call(
        self,
        peer: str,
        points: list[bytes],
        *,
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> fed.DeviceCheckResponse:
        with self.node.store.read() as conn:
            cursor = dr.peer_cursor(conn, peer)
        req = fed.DeviceCheckRequest(blinded=points, after_seq=cursor)
        ptype, payload = self.client.call(
            peer, RPC, PT_REQUEST, req.SerializeToString(), timeout=timeout, attempts=attempts
        )
        if ptype != PT_RESPONSE:
            raise InvalidArgument(f"{peer} answered {RPC} with {ptype}")
        try:
            resp = fed.DeviceCheckResponse.FromString(payload)
        except DecodeError as exc:
            raise InvalidArgument(f"{peer} sent a malformed DeviceCheckResponse") from exc
        if len(resp.evaluated) != len(points):
            raise InvalidArgument(f"{peer} evaluated {len(resp.evaluated)} of {len(points)} points")
        self._store_tags(peer, cursor, resp)
        return resp

    def _store_tags(self, peer: str, cursor: int, resp: fed.DeviceCheckResponse) -> None:
        tags, last = [], cursor
        for t in resp.tags:
            if t.seq <= last or t.seq >= 2**63 or len(t.tag) != meter_oprf.TAG_LEN:
                raise InvalidArgument(f"{peer} sent a malformed tag page (seq {t.seq})")
            tags.append((int(t.seq), bytes(t.tag)))
            last = t.seq
        if not tags:
            return
        with self.node.store.transaction() as conn:
            if dr.peer_cursor(conn, peer) != cursor:
                return  # another thread stored this page meanwhile
            if dr.peer_tag_count(conn, peer) + len(tags) > self.settings.max_peer_device_tags:
                raise ResourceExhausted(
                    f"{peer} publishes more than {self.settings.max_peer_device_tags} meter tags"
                )
            dr.add_peer_tags(conn, peer, tags)

    def _tags_of(self, peer: str, meters: list[str], **kw: Any) -> tuple[list[bytes], bool]:
        """This node's tags of ``meters`` under ``peer``'s key, and whether tags follow."""
        blinds = [meter_oprf.blind(m) for m in meters]
        resp = self._call(peer, [b for _, b in blinds], **kw)
        out = [
            meter_oprf.tag(peer, meter_oprf.unblind(r, e, f"evaluated[{i}]"))
            for i, ((r, _), e) in enumerate(zip(blinds, resp.evaluated, strict=True))
        ]
        return out, resp.more

    def _catch_up(self, peer: str, more: bool, **kw: Any) -> None:
        pages = 0
        while more and pages < PAGES_PER_SWEEP:
            more = self._call(peer, [], **kw).more
            pages += 1

    # -- registration -----------------------------------------------------------------------------

    def check_new_meter(self, meter_id: str) -> tuple[list[tuple[str, bytes]], str | None]:
        """Test one meter against every peer that answers in time (see :class:`MeterGuard`)."""
        checked: list[tuple[str, bytes]] = []
        dup: str | None = None
        kw = {"timeout": self.settings.device_check_timeout_s, "attempts": 1}
        for peer in self.peers():
            try:
                (tag,), more = self._tags_of(peer, [meter_id], **kw)
                self._catch_up(peer, more, **kw)
            except EapError as exc:
                log.info(
                    "device check with %s skipped (%s); the sweep will retry", peer, exc.message
                )
                continue
            checked.append((peer, tag))
            with self.node.store.read() as conn:
                if dup is None and dr.peer_has_tag(conn, peer, tag):
                    dup = peer
        return checked, dup

    # -- sweep ------------------------------------------------------------------------------------

    def sweep_peer(self, peer: str) -> dict[str, Any]:
        """Bring one peer up to date; returns ``{"peer", "checked", "flagged", "error"}``."""
        done, flagged, error = 0, [], None
        try:
            more = self._call(peer, []).more
            self._catch_up(peer, more)
            while True:
                with self.node.store.read() as conn:
                    todo = dr.devices_unchecked_for(conn, peer, MAX_POINTS)
                if not todo:
                    break
                tags, _ = self._tags_of(peer, [m for _, m in todo])
                with self.node.store.transaction() as conn:
                    dr.add_peer_checks(
                        conn,
                        [(d, peer, g) for (d, _), g in zip(todo, tags, strict=True)],
                        sybil.now_ms(),
                    )
                done += len(todo)
        except EapError as exc:
            error = exc.message
            log.info("device sweep of %s stopped after %d meter(s): %s", peer, done, error)
        flagged = sybil.flag_matches(self.node, peer)
        return {"peer": peer, "checked": done, "flagged": len(flagged), "error": error}

    def sweep(self) -> list[dict[str, Any]]:
        """Sweep every peer (first publishing tags of devices that predate the check)."""
        while sybil.backfill_own_tags(self.node):
            pass
        return [self.sweep_peer(p) for p in self.peers()]


def install(runtime: Any) -> DeviceChecker:
    """Federation runtime extension: serve ``CheckDevices``, guard registrations, sweep."""
    service = DeviceCheckService(runtime.node, runtime.settings)
    runtime.servicer.add_handler("on_check_devices", PT_REQUEST, service.on_check_devices)
    checker = DeviceChecker(runtime.node, runtime.client, runtime.trust, runtime.settings)
    runtime.node.meter_guard = checker
    runtime.device_checker = checker
    interval = runtime.settings.sync_interval_s
    if interval > 0:  # sweeps run with the background sync, and are off when it is
        runtime.worker.every(
            "device-check",
            max(interval, SWEEP_INTERVAL_S),
            checker.sweep,
            initial_delay_s=min(2.0, interval),
        )
    return checker
