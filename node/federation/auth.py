"""The one authenticator of every inbound federation call, and the per-peer rate limit.

Every RPC of the Federation service passes :meth:`Authenticator.caller` first:

1. the call came over mutual TLS and the client certificate names a node id
   (``peer_node_id_from_auth_context``)                                   -> UNAUTHENTICATED
2. that node id is on the trust list                                       -> PERMISSION_DENIED
3. the peer has tokens left in its bucket                                  -> RESOURCE_EXHAUSTED
                                                                              with RetryInfo

RPCs carrying a :class:`SignedEnvelope` then pass :meth:`Authenticator.open`, which hands the
envelope to :func:`~eap.node.crypto.open_envelope` with the TLS node id as ``tls_peer``:
origin = TLS peer, destination = this node, not expired, signed by a current key of that
peer, payload type as expected, payload within the size limit, and not a replay (one
:class:`~eap.node.crypto.ReplayGuard` shared by all calls).  Nothing else in the federation
server authenticates, so no endpoint can forget a check.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from eap.node.crypto import (
    ReplayGuard,
    SignedEnvelope,
    VerifiedEnvelope,
    open_envelope,
    peer_node_id_from_auth_context,
)
from eap.node.errors import EapError, FailedPrecondition, ResourceExhausted
from eap.node.federation.peers import PENDING, Peer, TrustList


class RateLimiter:
    """Per-peer token buckets: ``rate`` tokens per second up to ``burst``; thread-safe."""

    def __init__(self, rate: float, burst: int, *, clock=time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, cost: float = 1.0) -> None:
        """Spend ``cost`` tokens of ``key``'s bucket.

        Raises:
            ResourceExhausted: not enough tokens; ``retry_after`` says when there will be.
        """
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                err = ResourceExhausted(f"rate limit for {key}: {self.rate:g} calls/s, "
                                        f"burst {self.burst:g}")
                err.retry_after = round((cost - tokens) / self.rate, 3)
                raise err
            self._buckets[key] = (tokens - cost, now)


def describe_caller(context) -> str:
    """Who is calling, for the log: ``node <id> (<address>)`` when the client certificate
    names a node id (whether or not that node is trusted), else the socket address, saying
    that the node id is unknown and why.  Never raises."""
    try:
        address = context.peer()
    except Exception:  # a context without a transport (tests, a closed call)
        address = "unknown address"
    try:
        node_id = peer_node_id_from_auth_context(context)
    except EapError as exc:
        return f"unauthenticated {address} (node id unknown: {exc.message})"
    except Exception:
        return f"unauthenticated {address} (node id unknown: no TLS auth context)"
    return f"node {node_id} ({address})"


@dataclass(frozen=True)
class Caller:
    """An authenticated inbound call: who it is and their trust-list entry."""

    node_id: str
    peer: Peer


class Authenticator:
    """Authenticates inbound calls against the trust list (see the module docstring)."""

    def __init__(self, me: str, trust: TrustList, *, limiter: RateLimiter,
                 replay_guard: ReplayGuard | None = None, max_payload: int) -> None:
        self.me = me
        self.trust = trust
        self.limiter = limiter
        self.replay_guard = replay_guard or ReplayGuard()
        self.max_payload = max_payload

    def caller(self, context, *, cost: float = 1.0, allow_pending: bool = False) -> Caller:
        """Steps 1-3: TLS identity, trust list, rate limit.

        Args:
            context: the gRPC servicer context.
            cost: tokens this call spends.
            allow_pending: accept a peer whose keys are not known yet (only ``Hello``).
        """
        node_id = peer_node_id_from_auth_context(context)
        peer = self.trust.require(node_id)
        if peer.status == PENDING and not allow_pending:
            raise FailedPrecondition(f"peer {node_id} must complete a Hello first")
        self.limiter.take(node_id, cost)
        return Caller(node_id, peer)

    def open(self, caller: Caller, message, *, expected_type: str,
             keys=None) -> VerifiedEnvelope:
        """Authenticate the envelope ``message`` (an ``eap.v1.SignedEnvelope``) of ``caller``.

        Args:
            caller: from :meth:`caller`.
            message: the protocol message as received.
            expected_type: the payload type the endpoint parses.
            keys: the :class:`~eap.node.crypto.PeerKeys` to verify with (default: the trust
                list's; ``Hello`` of a pending peer passes the keys its pinned descriptor gave).
        """
        return open_envelope(
            SignedEnvelope.from_message(message), me=self.me,
            peers=keys if keys is not None else self.trust.peer_keys,
            max_payload=self.max_payload, replay_guard=self.replay_guard,
            tls_peer=caller.node_id, expected_type=expected_type)
