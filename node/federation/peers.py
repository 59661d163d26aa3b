"""The trust list: which peer nodes this node accepts, and what it knows about each.

A peer enters the trust list only by an operator's act (``eap-node peer add``):

* **from a signed descriptor file** — the descriptor's self-signature must verify, and when
  ``--fingerprint`` is given it must be the fingerprint of the key that signed it (compare it
  with the peer's operator out of band).  The peer's keys are known at once: status ``trusted``.
* **by node id, endpoint and key fingerprint** — no keys yet: status ``pending``.  The first
  handshake (either direction) presents the peer's signed descriptor; it is accepted only if it
  is signed by a key with exactly the pinned fingerprint.

A successful ``Hello`` makes a peer ``active`` and records the negotiated protocol version and
capabilities.  **Key update rule**: a descriptor received in a ``Hello`` replaces the stored
keys only when it is signed by a key we already trust for that peer and that is valid now, or
— for a ``pending`` peer — by the key with the pinned fingerprint.  The endpoint is never
taken from a ``Hello``: where to reach a peer is the operator's setting.  A descriptor
signed by any other key (e.g. after the peer rotated its key) changes nothing; the peer's
operator sends the new descriptor and ours re-adds it (``peer add FILE --update``).

:class:`TrustList` keeps a :class:`~eap.node.crypto.PeerKeys` built from the ``peers`` table,
re-read at most every ``trust_cache_s`` seconds so that ``peer add`` / ``peer remove`` run by
another process (the CLI beside ``eap-node serve``) take effect within that delay.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from eap.node.crypto import PeerKeys, PublicKeyInfo, is_node_id
from eap.node.crypto.keys import now_ms
from eap.node.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    invalid,
)
from eap.node.federation.descriptor import NodeDescriptor, check_endpoint
from eap.node.store import Store, peer_repos

log = logging.getLogger(__name__)

PENDING = "pending"  # added by fingerprint; keys not known yet
TRUSTED = "trusted"  # keys known; no handshake yet
ACTIVE = "active"  # handshake done, versions negotiated
STATUSES = (PENDING, TRUSTED, ACTIVE)


@dataclass
class Peer:
    """One entry of the trust list (a row of ``peers``)."""

    node_id: str
    endpoint: str
    status: str
    added_at_ms: int
    keys: dict[str, PublicKeyInfo] = field(default_factory=dict)
    fingerprint: str | None = None
    descriptor: str | None = None
    protocol_version: str | None = None
    capabilities: tuple[str, ...] = ()
    last_hello_ms: int | None = None
    last_sync_ms: int | None = None
    cursor: int = 0
    last_error: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Peer:
        keys = {}
        for entry in json.loads(row.public_keys or "[]"):
            info = PublicKeyInfo.from_dict(entry)
            keys[info.key_id] = info
        return cls(node_id=row.node_id, endpoint=row.endpoint, status=row.status,
                   added_at_ms=row.added_at_ms, keys=keys, fingerprint=row.fingerprint,
                   descriptor=row.descriptor, protocol_version=row.protocol_version,
                   capabilities=tuple(json.loads(row.capabilities or "[]")),
                   last_hello_ms=row.last_hello_ms, last_sync_ms=row.last_sync_ms,
                   cursor=int(row.cursor), last_error=row.last_error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id, "endpoint": self.endpoint, "status": self.status,
            "protocol_version": self.protocol_version, "capabilities": list(self.capabilities),
            "key_ids": sorted(self.keys), "fingerprint": self.fingerprint,
            "added_at_ms": self.added_at_ms, "last_hello_ms": self.last_hello_ms,
            "last_sync_ms": self.last_sync_ms, "cursor": self.cursor,
            "last_error": self.last_error,
        }


def keys_json(keys: dict[str, PublicKeyInfo]) -> str:
    ordered = sorted(keys.values(), key=lambda k: (k.created_at_ms, k.key_id))
    return json.dumps([k.as_dict() for k in ordered], sort_keys=True)


class TrustList:
    """The ``peers`` table plus a cached :class:`PeerKeys` view of it; thread-safe."""

    def __init__(self, store: Store, me: str, *, cache_s: float = 1.0) -> None:
        self.store = store
        self.me = me
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._loaded_at = -1e18
        self._peers: dict[str, Peer] = {}
        self._keys = PeerKeys()

    # -- reading (cached) --------------------------------------------------------------------------

    def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at < self.cache_s:
            return
        self.reload()

    def reload(self) -> None:
        """Re-read the trust list from the database now."""
        with self.store.read() as conn:
            rows = peer_repos.list_peers(conn)
        peers = {}
        for row in rows:
            try:
                peers[row.node_id] = Peer.from_row(row)
            except (InvalidArgument, ValueError) as exc:  # a corrupt row trusts nobody
                log.error("ignoring peer %s: unreadable keys (%s)", row.node_id, exc)
        keys = PeerKeys({p.node_id: p.keys for p in peers.values() if p.keys})
        with self._lock:
            self._peers, self._keys = peers, keys
            self._loaded_at = time.monotonic()

    @property
    def peer_keys(self) -> PeerKeys:
        """Public keys of every peer whose keys are known (``trusted`` and ``active``)."""
        self._fresh()
        return self._keys

    def get(self, node_id: str) -> Peer | None:
        """The cached entry for ``node_id`` (None if not on the trust list)."""
        self._fresh()
        return self._peers.get(node_id)

    def require(self, node_id: str) -> Peer:
        """The entry for a caller, which must be on the trust list.

        Raises:
            PermissionDenied: ``node_id`` is not a peer.
        """
        peer = self.get(node_id)
        if peer is None:
            raise PermissionDenied(f"{node_id!r} is not on the trust list")
        return peer

    def lookup(self, node_id: str) -> Peer:
        """Fresh from the database.

        Raises:
            NotFound: no such peer.
        """
        with self.store.read() as conn:
            row = peer_repos.get_peer(conn, node_id)
        if row is None:
            raise NotFound(f"no peer {node_id!r} on the trust list")
        return Peer.from_row(row)

    def all(self) -> list[Peer]:
        with self.store.read() as conn:
            return [Peer.from_row(r) for r in peer_repos.list_peers(conn)]

    # -- operator actions --------------------------------------------------------------------------

    def add_descriptor(self, desc: NodeDescriptor, *, fingerprint: str | None = None,
                       update: bool = False, endpoint: str | None = None) -> Peer:
        """Trust the node a (self-signature verified) descriptor describes.

        Args:
            desc: the peer's descriptor (already verified by :meth:`NodeDescriptor.from_json`).
            fingerprint: if given, must be the fingerprint of the key that signed ``desc``.
            update: replace the keys/endpoint of a peer already on the list (keeps its cursor).
            endpoint: override the advertised endpoint (e.g. an address reachable from here).

        Raises:
            Unauthenticated: the fingerprint does not match the signing key.
            InvalidArgument: the descriptor is our own.
            AlreadyExists: the peer is on the list and ``update`` is false.
        """
        if desc.node_id == self.me:
            raise invalid("descriptor.node_id", "is this node; a node does not peer with itself")
        if fingerprint is not None and desc.signer_fingerprint() != fingerprint.strip():
            raise Unauthenticated(
                f"descriptor of {desc.node_id} is signed by key {desc.signing_key_id} with "
                f"fingerprint {desc.signer_fingerprint()}, not {fingerprint}")
        at = now_ms()
        values = {
            "endpoint": check_endpoint(endpoint) if endpoint else desc.endpoint,
            "descriptor": desc.to_json(), "public_keys": keys_json(desc.public_keys),
            "fingerprint": fingerprint or desc.signer_fingerprint(),
        }
        with self.store.transaction() as conn:
            row = peer_repos.get_peer(conn, desc.node_id, lock=True)
            if row is not None and update:
                status = ACTIVE if row.status == ACTIVE else TRUSTED
                peer_repos.update_peer(conn, desc.node_id, status=status, **values)
            else:
                peer_repos.insert_peer(conn, {
                    "node_id": desc.node_id, "status": TRUSTED, "added_at_ms": at,
                    "capabilities": json.dumps(list(desc.capabilities)), "cursor": 0, **values})
        log.info("trust list: %s %s (key %s)", "updated" if update and row else "added",
                 desc.node_id, desc.signing_key_id)
        self.reload()
        return self.lookup(desc.node_id)

    def add_pinned(self, node_id: str, endpoint: str, fingerprint: str) -> Peer:
        """Trust ``node_id`` at ``endpoint`` once it proves it holds the key ``fingerprint``."""
        if not is_node_id(node_id):
            raise invalid("node_id", "must be a lowercase DNS-like name")
        if node_id == self.me:
            raise invalid("node_id", "is this node")
        fingerprint = fingerprint.strip()
        if not fingerprint.startswith("SHA256:") or len(fingerprint) != 50:
            raise invalid("fingerprint", "must be a key fingerprint like SHA256:<43 base64 chars>")
        with self.store.transaction() as conn:
            peer_repos.insert_peer(conn, {
                "node_id": node_id, "endpoint": check_endpoint(endpoint), "descriptor": None,
                "public_keys": "[]", "fingerprint": fingerprint, "status": PENDING,
                "capabilities": "[]", "added_at_ms": now_ms(), "cursor": 0})
        log.info("trust list: added %s (pending, key %s)", node_id, fingerprint)
        self.reload()
        return self.lookup(node_id)

    def remove(self, node_id: str) -> None:
        """Stop trusting ``node_id`` (its imported records stay, read-only)."""
        with self.store.transaction() as conn:
            if not peer_repos.delete_peer(conn, node_id):
                raise NotFound(f"no peer {node_id!r} on the trust list")
        log.info("trust list: removed %s", node_id)
        self.reload()

    # -- handshake ---------------------------------------------------------------------------------

    def keys_for_handshake(self, peer: Peer, descriptor: bytes) -> PeerKeys:
        """Keys to verify a ``Hello`` from/to ``peer``: the trusted ones, or for a pending peer
        the keys of its descriptor if that is signed by the pinned key.

        Raises:
            PermissionDenied: a pending peer whose descriptor is missing or not for it.
            Unauthenticated: a pending peer's descriptor is not signed by the pinned key.
        """
        if peer.status != PENDING:
            return self.peer_keys
        if not descriptor:
            raise PermissionDenied(f"peer {peer.node_id} is pending: its Hello must carry its "
                                   "descriptor")
        desc = NodeDescriptor.from_json(descriptor)
        if desc.node_id != peer.node_id:
            raise PermissionDenied(f"descriptor is for {desc.node_id!r}, not {peer.node_id!r}")
        if desc.signer_fingerprint() != peer.fingerprint:
            raise Unauthenticated(f"{peer.node_id} presented key {desc.signer_fingerprint()}, "
                                  f"pinned is {peer.fingerprint}")
        return PeerKeys({peer.node_id: desc.public_keys})

    def record_hello(self, peer: Peer, *, version: str, capabilities: tuple[str, ...],
                     descriptor: bytes) -> Peer:
        """Store the outcome of a handshake; applies the key update rule (module docstring)."""
        values: dict[str, Any] = {"status": ACTIVE, "protocol_version": version,
                                  "capabilities": json.dumps(sorted(capabilities)),
                                  "last_hello_ms": now_ms(), "last_error": None}
        if descriptor:
            desc = None
            try:
                desc = NodeDescriptor.from_json(descriptor)
            except (InvalidArgument, Unauthenticated) as exc:
                log.warning("ignoring descriptor in Hello of %s: %s", peer.node_id, exc)
            if desc is not None and desc.node_id == peer.node_id:
                if self._may_update_keys(peer, desc):
                    values.update(public_keys=keys_json(desc.public_keys),
                                  descriptor=desc.to_json())
                elif set(desc.public_keys) != set(peer.keys):
                    values["last_error"] = (
                        f"descriptor signed by untrusted key {desc.signing_key_id}; keys not "
                        "updated (re-add its descriptor with `peer add FILE --update`)")
                    log.warning("peer %s: %s", peer.node_id, values["last_error"])
        elif peer.status == PENDING:
            raise FailedPrecondition(f"peer {peer.node_id} is pending and sent no descriptor")
        with self.store.transaction() as conn:
            if not peer_repos.update_peer(conn, peer.node_id, **values):
                raise NotFound(f"peer {peer.node_id} was removed meanwhile")
        self.reload()
        return self.lookup(peer.node_id)

    def _may_update_keys(self, peer: Peer, desc: NodeDescriptor) -> bool:
        if peer.status == PENDING:
            return desc.signer_fingerprint() == peer.fingerprint
        known = peer.keys.get(desc.signing_key_id)
        return known is not None and known.public_key == desc.active_key.public_key \
            and known.is_valid_at(now_ms())

    def record_error(self, node_id: str, error: str) -> None:
        with self.store.transaction() as conn:
            peer_repos.update_peer(conn, node_id, last_error=error[:1000])
