"""Signed envelopes: the exact bytes a node sends to one peer, signed, bound to it, short-lived.

Protobuf serialisation is not canonical, so the signature covers a canonical byte string
built from the envelope's fields (DESIGN §5, docs/security.md "Envelope signing input"):

    b"EAP-ENVELOPE-v1\\x00"
    u16be len || payload_type (UTF-8)
    u16be len || origin       (UTF-8)
    u16be len || destination  (UTF-8)
    i64be expires_at_ms
    u16be len || key_id       (UTF-8)
    u16be len || nonce        (16 random bytes)
    u32be len || payload

:func:`seal` builds and signs one; :func:`open_envelope` is the one place that accepts one,
checking in this order, each with its own error class:

1. payload size within the limit                           -> ResourceExhausted
2. fields well formed (nonce length, string lengths)       -> InvalidArgument
3. origin is a trusted peer (and is the TLS peer, if given) -> PermissionDenied
4. destination is this node                                -> PermissionDenied
5. not expired, expiry not beyond max TTL + clock skew     -> Unauthenticated
6. key id known and still valid for that origin            -> Unauthenticated
7. signature valid                                         -> Unauthenticated
8. payload type is the expected one (if given)             -> InvalidArgument
9. not seen before (if a :class:`ReplayGuard` is given)    -> ReplayDetected (Unauthenticated)

Nothing is remembered by the replay guard before the signature has been verified, so forged
envelopes cannot fill it or pre-empt a genuine nonce.
"""

from __future__ import annotations

import heapq
import logging
import secrets
import struct
import threading
from dataclasses import dataclass
from typing import Any

from eap.node.crypto.keys import KeyRing, PeerKeys, now_ms
from eap.node.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    invalid,
)

logger = logging.getLogger(__name__)

ENVELOPE_DOMAIN = b"EAP-ENVELOPE-v1\x00"
NONCE_LEN = 16
DEFAULT_TTL_S = 60
#: Longest lifetime a sender may give an envelope; receivers refuse later expiries.
MAX_TTL_S = 600
#: Allowed disagreement between the sender's and the receiver's clocks.
CLOCK_SKEW_S = 30
#: Default receive limit for a payload (gRPC's default maximum message size).
MAX_PAYLOAD = 4 * 1024 * 1024
#: Longest payload_type / origin / destination / key_id accepted, in UTF-8 bytes.
MAX_NAME_LEN = 255

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _utf8(field: str, value: str) -> bytes:
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(field, "must be valid Unicode (no lone surrogates)") from exc
    if len(data) > MAX_NAME_LEN:
        raise invalid(field, f"longer than {MAX_NAME_LEN} UTF-8 bytes")
    return data


def signing_input(
    *,
    payload_type: str,
    origin: str,
    destination: str,
    expires_at_ms: int,
    key_id: str,
    nonce: bytes,
    payload: bytes,
) -> bytes:
    """The canonical bytes an envelope's signature covers (see the module docstring).

    Raises:
        InvalidArgument: a string longer than 255 UTF-8 bytes or not encodable, a nonce
            longer than 65535 bytes, a payload of 4 GiB or more, or an expiry outside int64.
    """
    if not isinstance(expires_at_ms, int) or not _I64_MIN <= expires_at_ms <= _I64_MAX:
        raise invalid("expires_at_ms", "must be a signed 64-bit integer")
    nonce, payload = bytes(nonce), bytes(payload)
    if len(nonce) > 0xFFFF:
        raise invalid("nonce", "too long")
    if len(payload) > 0xFFFFFFFF:
        raise invalid("payload", "must be shorter than 4 GiB")
    parts = [ENVELOPE_DOMAIN]
    for name, value in (
        ("payload_type", payload_type),
        ("origin", origin),
        ("destination", destination),
    ):
        data = _utf8(name, value)
        parts += [_U16.pack(len(data)), data]
    parts.append(_I64.pack(expires_at_ms))
    kid = _utf8("key_id", key_id)
    parts += [_U16.pack(len(kid)), kid, _U16.pack(len(nonce)), nonce]
    parts += [_U32.pack(len(payload)), payload]
    return b"".join(parts)


@dataclass(frozen=True, repr=False)
class SignedEnvelope:
    """One signed message to one peer; maps 1:1 onto the protocol's ``SignedEnvelope``.

    Attributes:
        payload: the serialised inner message, exactly as signed.
        payload_type: the inner message's full protobuf name (e.g. ``eap.v1.RecordBatch``).
        origin: sender node id.
        destination: receiver node id; an envelope is only valid at its destination.
        expires_at_ms: Unix milliseconds after which the envelope is refused.
        key_id: the sender's signing key (``ed25519:`` + 16 hex).
        signature: Ed25519 signature (64 bytes) over :meth:`signing_input`.
        nonce: 16 random bytes, making every envelope unique (replay detection).
    """

    payload: bytes
    payload_type: str
    origin: str
    destination: str
    expires_at_ms: int
    key_id: str
    signature: bytes
    nonce: bytes

    def signing_input(self) -> bytes:
        """The canonical bytes covered by :attr:`signature`."""
        return signing_input(
            payload_type=self.payload_type,
            origin=self.origin,
            destination=self.destination,
            expires_at_ms=self.expires_at_ms,
            key_id=self.key_id,
            nonce=self.nonce,
            payload=self.payload,
        )

    def as_dict(self) -> dict[str, Any]:
        """Field values by name, e.g. ``eap.v1.SignedEnvelope(**env.as_dict())``."""
        return {
            "payload": self.payload,
            "payload_type": self.payload_type,
            "origin": self.origin,
            "destination": self.destination,
            "expires_at_ms": self.expires_at_ms,
            "key_id": self.key_id,
            "signature": self.signature,
            "nonce": self.nonce,
        }

    @classmethod
    def from_message(cls, msg: Any) -> SignedEnvelope:
        """Copy the fields of a protocol message (or anything with the same attributes)."""
        return cls(
            payload=bytes(msg.payload),
            payload_type=str(msg.payload_type),
            origin=str(msg.origin),
            destination=str(msg.destination),
            expires_at_ms=int(msg.expires_at_ms),
            key_id=str(msg.key_id),
            signature=bytes(msg.signature),
            nonce=bytes(msg.nonce),
        )

    def __repr__(self) -> str:
        return (
            f"SignedEnvelope(payload_type={self.payload_type!r}, origin={self.origin!r}, "
            f"destination={self.destination!r}, expires_at_ms={self.expires_at_ms}, "
            f"key_id={self.key_id!r}, nonce={self.nonce.hex()}, payload=<{len(self.payload)} B>)"
        )


@dataclass(frozen=True, repr=False)
class VerifiedEnvelope:
    """What :func:`open_envelope` returns: an envelope whose every check has passed."""

    payload: bytes
    payload_type: str
    origin: str
    key_id: str
    nonce: bytes
    expires_at_ms: int

    def __repr__(self) -> str:
        return (
            f"VerifiedEnvelope(payload_type={self.payload_type!r}, origin={self.origin!r}, "
            f"key_id={self.key_id!r}, payload=<{len(self.payload)} B>)"
        )


class ReplayDetected(Unauthenticated):
    """An envelope (same origin and nonce) was presented a second time while still valid."""


def seal(
    keyring: KeyRing,
    payload: bytes,
    payload_type: str,
    origin: str,
    destination: str,
    ttl_s: float = DEFAULT_TTL_S,
    now: float | None = None,
) -> SignedEnvelope:
    """Sign ``payload`` for ``destination`` with the key ring's active key.

    Args:
        keyring: this node's key ring.
        payload: the serialised inner message.
        payload_type: its full message name.
        origin: this node's id.
        destination: the receiving peer's id.
        ttl_s: lifetime in seconds, in ``(0, MAX_TTL_S]``.
        now: current time in seconds, for tests.

    Raises:
        InvalidArgument: empty origin/destination/payload_type, a field too long, or a bad TTL.
    """
    for name, value in (
        ("payload_type", payload_type),
        ("origin", origin),
        ("destination", destination),
    ):
        if not value:
            raise invalid(name, "must not be empty")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise invalid("ttl_s", f"must be in (0, {MAX_TTL_S}] seconds")
    nonce = secrets.token_bytes(NONCE_LEN)
    expires_at_ms = now_ms(now) + int(ttl_s * 1000)
    payload = bytes(payload)
    with_key = keyring.active_key_id
    data = signing_input(
        payload_type=payload_type,
        origin=origin,
        destination=destination,
        expires_at_ms=expires_at_ms,
        key_id=with_key,
        nonce=nonce,
        payload=payload,
    )
    key_id, signature = keyring.sign(data)
    if key_id != with_key:  # rotated between reading the key id and signing: sign again
        return seal(keyring, payload, payload_type, origin, destination, ttl_s, now)
    return SignedEnvelope(
        payload=payload,
        payload_type=payload_type,
        origin=origin,
        destination=destination,
        expires_at_ms=expires_at_ms,
        key_id=key_id,
        signature=signature,
        nonce=nonce,
    )


def open_envelope(
    env: SignedEnvelope,
    *,
    me: str,
    peers: PeerKeys,
    now: float | None = None,
    max_payload: int = MAX_PAYLOAD,
    replay_guard: ReplayGuard | None = None,
    tls_peer: str | None = None,
    expected_type: str | None = None,
    clock_skew_s: float = CLOCK_SKEW_S,
    max_ttl_s: float = MAX_TTL_S,
) -> VerifiedEnvelope:
    """Authenticate an inbound envelope; returns its payload only if every check passes.

    Args:
        env: the envelope as received.
        me: this node's id; the envelope's destination must equal it exactly.
        peers: trusted peers' public keys.
        now: current time in seconds, for tests.
        max_payload: largest payload accepted, in bytes.
        replay_guard: if given, remembers (origin, nonce) and refuses a second delivery.
        tls_peer: the node id of the mutual-TLS peer (``peer_node_id_from_auth_context``);
            if given, the envelope's origin must be that node.
        expected_type: if given, the payload type the caller is prepared to parse.
        clock_skew_s: tolerated clock disagreement with the sender.
        max_ttl_s: the furthest future expiry accepted (beyond ``clock_skew_s``).

    Raises:
        ResourceExhausted: payload larger than ``max_payload``; or the replay guard is full.
        InvalidArgument: a malformed field, or an unexpected payload type.
        PermissionDenied: unknown origin, origin is not the TLS peer, or wrong destination.
        Unauthenticated: expired or too far in the future, unknown or expired key id, invalid
            signature; :class:`ReplayDetected` for a replay.
    """
    if len(env.payload) > max_payload:
        raise ResourceExhausted(
            f"envelope payload of {len(env.payload)} bytes exceeds the limit of {max_payload}"
        )
    if len(env.nonce) != NONCE_LEN:
        raise invalid("nonce", f"must be {NONCE_LEN} bytes", "malformed envelope")
    try:
        data = env.signing_input()
    except InvalidArgument as exc:
        raise InvalidArgument("malformed envelope", exc.violations) from exc

    origin = env.origin
    if not peers.knows(origin):
        _reject(env, "unknown origin")
        raise PermissionDenied(f"envelope from unknown peer {origin!r}")
    if tls_peer is not None and tls_peer != origin:
        _reject(env, f"TLS peer is {tls_peer!r}")
        raise PermissionDenied(f"envelope origin {origin!r} is not the TLS peer {tls_peer!r}")
    if env.destination != me:
        _reject(env, "wrong destination")
        raise PermissionDenied(f"wrong destination: envelope is for {env.destination!r}")

    at = now_ms(now)
    skew_ms = int(clock_skew_s * 1000)
    if at >= env.expires_at_ms + skew_ms:
        _reject(env, "expired")
        raise Unauthenticated(f"envelope expired {at - env.expires_at_ms} ms ago")
    if env.expires_at_ms > at + int(max_ttl_s * 1000) + skew_ms:
        _reject(env, "expiry too far ahead")
        raise Unauthenticated("envelope expiry is too far in the future")

    peers.verify(origin, env.key_id, data, env.signature, now=now)

    if expected_type is not None and env.payload_type != expected_type:
        raise invalid(
            "payload_type", f"expected {expected_type!r}, got {env.payload_type!r}", "wrong payload"
        )
    if replay_guard is not None:
        replay_guard.check_and_remember(
            origin, env.nonce, until_ms=env.expires_at_ms + skew_ms, now=now
        )
    return VerifiedEnvelope(
        payload=env.payload,
        payload_type=env.payload_type,
        origin=origin,
        key_id=env.key_id,
        nonce=env.nonce,
        expires_at_ms=env.expires_at_ms,
    )


def _reject(env: SignedEnvelope, why: str) -> None:
    logger.debug("rejected envelope %r: %s", env, why)


class ReplayGuard:
    """Remembers ``(origin, nonce)`` of accepted envelopes until they could no longer be accepted.

    Memory is bounded: at most ``max_entries`` nonces in all and ``max_per_origin`` per peer.
    When a bound is reached after dropping what has expired, the guard fails closed: the
    envelope is refused with ``ResourceExhausted`` (``retry_after`` set) rather than forgetting
    a nonce that could then be replayed.  Only authenticated envelopes reach the guard, so a
    bound can only be reached by a trusted peer sending too fast, and the per-origin bound
    keeps one such peer from starving the others.  Thread-safe.

    The guard lives in memory: after a restart, envelopes still inside their lifetime could be
    replayed once; the federation inbox (de-duplication by message id) covers that case.
    """

    def __init__(self, *, max_entries: int = 200_000, max_per_origin: int = 50_000) -> None:
        if max_entries < 1 or max_per_origin < 1:
            raise invalid("max_entries", "bounds must be >= 1")
        self._max = max_entries
        self._max_origin = max_per_origin
        self._seen: dict[tuple[str, bytes], int] = {}
        self._per_origin: dict[str, int] = {}
        self._heap: list[tuple[int, str, bytes]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(
        self, origin: str, nonce: bytes, *, until_ms: int, now: float | None = None
    ) -> None:
        """Record ``(origin, nonce)`` until ``until_ms``; refuse it if already recorded.

        Raises:
            ReplayDetected: this (origin, nonce) was recorded and has not expired.
            ResourceExhausted: a bound is reached; ``retry_after`` says when room frees up.
        """
        at = now_ms(now)
        key = (origin, bytes(nonce))
        with self._lock:
            self._expire(at)
            if key in self._seen:
                raise ReplayDetected(f"replayed envelope from {origin!r}")
            count = self._per_origin.get(origin, 0)
            if count >= self._max_origin or len(self._seen) >= self._max:
                err = ResourceExhausted(f"too many recent envelopes (from {origin!r}); retry later")
                err.retry_after = max(0.0, (self._heap[0][0] - at) / 1000) if self._heap else 1.0
                raise err
            self._seen[key] = until_ms
            self._per_origin[origin] = count + 1
            heapq.heappush(self._heap, (until_ms, origin, key[1]))

    def _expire(self, at: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= at:
            until, origin, nonce = heapq.heappop(heap)
            if self._seen.get((origin, nonce)) == until:
                del self._seen[(origin, nonce)]
                left = self._per_origin[origin] - 1
                if left:
                    self._per_origin[origin] = left
                else:
                    del self._per_origin[origin]
