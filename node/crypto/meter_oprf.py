"""An oblivious PRF over meter ids, for finding a meter registered at two nodes (Sybil check).

The 2HashDH OPRF of Jarecki et al. in the prime-order subgroup of edwards25519 (libsodium via
PyNaCl)::

    H(m)      = from_uniform(h[0:32]) + from_uniform(h[32:64]),
                h = SHA-512(b"EAP-METER-H2G-v1\\x00" || normalise(m))   (two Elligator 2 maps)
    F_k(m)    = k * H(m)                                          the evaluator's secret key k
    tag(n, E) = SHA-256(b"EAP-DEVICE-TAG-v1\\x00" || n || b"\\x00" || E)[:16]

A node publishes ``tag(self, F_k(m))`` for each of its meters.  To test its own meter ``m``
against a peer, a node sends the *blinded* point ``r * H(m)`` (``r`` a fresh random scalar),
the peer answers ``k * r * H(m)``, and the node unblinds it to ``F_k(m)`` with ``r^-1``.  The
peer sees a uniformly random group element and learns nothing about ``m``; the node learns
``F_k(m)`` and nothing about ``k``.  Without the peer's key a tag can only be matched to a
meter id through such an online evaluation, which the peer rate-limits: guessing low-entropy
meter ids offline is impossible (docs/security.md "Duplicate devices").

The key is derived from the node's pseudonym secret (domain separated), so it is backed up
with it and never stored separately.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata

from nacl import bindings as nb
from nacl.exceptions import RuntimeError as NaclRuntimeError

from eap.node.errors import ConfigError, invalid

#: Bytes of a group element (a compressed edwards25519 point) and of a scalar.
ELEMENT_LEN = nb.crypto_core_ed25519_BYTES
SCALAR_LEN = nb.crypto_core_ed25519_SCALARBYTES
#: Bytes of a published tag: 128 bits, collisions are negligible for any federation.
TAG_LEN = 16

H2G_DST = b"EAP-METER-H2G-v1\x00"
KEY_DST = b"EAP-DEVICE-CHECK-OPRF-v1\x00"
TAG_DST = b"EAP-DEVICE-TAG-v1\x00"
#: Characters dropped when normalising a meter id (separators people write differently).
_SEPARATORS = frozenset(" \t-_.:/")


def normalise_meter_id(meter_id: str) -> str:
    """The form in which two nodes compare a meter id: Unicode NFKC, case-folded, without
    whitespace and the separators ``- _ . : /``, so ``"MTR-00 17"`` and ``"mtr0017"`` match.

    Raises:
        InvalidArgument: nothing is left of ``meter_id``.
    """
    text = unicodedata.normalize("NFKC", meter_id or "").casefold()
    out = "".join(ch for ch in text if ch not in _SEPARATORS and not ch.isspace())
    if not out:
        raise invalid("device.meter_id", "must contain a letter or digit")
    return out


def hash_to_group(meter_id: str) -> bytes:
    """``H(normalise(meter_id))``: a point of the prime-order subgroup, discrete log unknown."""
    h = hashlib.sha512(H2G_DST + normalise_meter_id(meter_id).encode("utf-8")).digest()
    return nb.crypto_core_ed25519_add(
        nb.crypto_core_ed25519_from_uniform(h[:32]), nb.crypto_core_ed25519_from_uniform(h[32:])
    )


def derive_key(node_secret: bytes) -> bytes:
    """This node's OPRF key: a non-zero scalar derived from its pseudonym secret.

    Raises:
        ConfigError: the secret is shorter than 16 bytes.
    """
    if len(node_secret) < 16:
        raise ConfigError("node secret must be at least 16 bytes")
    wide = hmac.new(bytes(node_secret), KEY_DST, "sha512").digest()
    key = nb.crypto_core_ed25519_scalar_reduce(wide)
    if key == bytes(SCALAR_LEN):  # probability 2^-252; never with a real secret
        raise ConfigError("node secret yields a zero OPRF key")
    return key


def check_element(value: bytes, field: str) -> bytes:
    """``value`` if it is a valid element of the prime-order subgroup (not the identity, not of
    small order, canonical encoding).

    Raises:
        InvalidArgument: anything else, naming ``field``.
    """
    if not isinstance(value, bytes | bytearray) or len(value) != ELEMENT_LEN:
        raise invalid(field, f"must be a {ELEMENT_LEN}-byte edwards25519 point")
    if not nb.crypto_core_ed25519_is_valid_point(bytes(value)):
        raise invalid(field, "not a point of the prime-order subgroup")
    return bytes(value)


def _mul(scalar: bytes, point: bytes, field: str) -> bytes:
    try:
        return nb.crypto_scalarmult_ed25519_noclamp(scalar, point)
    except NaclRuntimeError as exc:  # the product is the identity: only for a bad point
        raise invalid(field, "not a point of the prime-order subgroup") from exc


def blind(meter_id: str) -> tuple[bytes, bytes]:
    """``(r, r * H(m))`` with a fresh random non-zero scalar ``r``; send only the point."""
    point = hash_to_group(meter_id)
    while True:
        r = nb.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64))
        if r != bytes(SCALAR_LEN):
            return r, _mul(r, point, "meter_id")


def evaluate(key: bytes, blinded: bytes, field: str = "blinded") -> bytes:
    """The evaluator's step: ``k * blinded``.

    Raises:
        InvalidArgument: ``blinded`` is not a valid subgroup element.
    """
    return _mul(key, check_element(blinded, field), field)


def unblind(r: bytes, evaluated: bytes, field: str = "evaluated") -> bytes:
    """``r^-1 * evaluated`` = ``F_k(m)``.

    Raises:
        InvalidArgument: ``evaluated`` is not a valid subgroup element (a broken or lying peer).
    """
    return _mul(nb.crypto_core_ed25519_scalar_invert(r), check_element(evaluated, field), field)


def element(key: bytes, meter_id: str) -> bytes:
    """``F_k(m)`` computed directly by the key holder."""
    return _mul(key, hash_to_group(meter_id), "meter_id")


def tag(evaluator: str, value: bytes) -> bytes:
    """The published tag of ``F_k(m)`` under the key of node ``evaluator``."""
    data = TAG_DST + evaluator.encode("utf-8") + b"\x00" + bytes(value)
    return hashlib.sha256(data).digest()[:TAG_LEN]
