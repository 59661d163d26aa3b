"""Signed envelopes: canonical signing input, every check of open_envelope, replay guard."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from eap.node.crypto import (
    KeyRing,
    PeerKeys,
    ReplayDetected,
    ReplayGuard,
    SignedEnvelope,
    key_id_for,
    open_envelope,
    seal,
    signing_input,
)
from eap.node.crypto.envelope import CLOCK_SKEW_S, MAX_TTL_S
from eap.node.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)

T0 = 1_700_000_000.0
A, B, C = "node-a", "node-b", "node-c"


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    """Node A (rotated once, old key still valid), node C; we are node B."""
    base = tmp_path_factory.mktemp("fed")
    ring_a = KeyRing.create(base / "a", now=T0 - 100)
    old_a = ring_a.active_key_id
    ring_a.rotate(retired_validity_s=3600, now=T0 - 50)
    ring_c = KeyRing.create(base / "c", now=T0 - 100)
    peers = PeerKeys({A: ring_a.public_keys(), C: ring_c.public_keys()})
    return {"a": ring_a, "c": ring_c, "peers": peers, "old_a": old_a}


def _open(env, fed, **kw):
    kw.setdefault("now", T0)
    return open_envelope(env, me=B, peers=fed["peers"], **kw)


# -- signing input ------------------------------------------------------------------------------

GOLDEN_SEED = bytes(range(32))
GOLDEN_INPUT_HEX = (
    "4541502d454e56454c4f50452d763100000b6561702e76312e50696e6700146d6564656c6c696e2e6561702e"
    "6578616d706c65001562617263656c6f6e612e6561702e6578616d706c650000018bcfe65260001865643235"
    "3531393a353634373561613735343633343734630010000102030405060708090a0b0c0d0e0f000000056865"
    "6c6c6f"
)
GOLDEN_SIGNATURE_HEX = (
    "6829c2d48a0690f0dac6d6cdef28e4c9acafbddb369221b8e601d701516677103c6b6a94b7486504b65f223ed3"
    "575acfbd1b12b3f8b3dffd80dff4c6593a580f"
)


def test_golden_vector_matches_docs():
    """The test vector published in docs/security.md, for other implementations."""
    key = Ed25519PrivateKey.from_private_bytes(GOLDEN_SEED)
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert raw.hex() == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    assert key_id_for(raw) == "ed25519:56475aa75463474c"
    data = signing_input(
        payload_type="eap.v1.Ping",
        origin="medellin.eap.example",
        destination="barcelona.eap.example",
        expires_at_ms=1_700_000_060_000,
        key_id="ed25519:56475aa75463474c",
        nonce=bytes(range(16)),
        payload=b"hello",
    )
    assert data.hex() == GOLDEN_INPUT_HEX
    assert key.sign(data).hex() == GOLDEN_SIGNATURE_HEX
    env = SignedEnvelope(
        payload=b"hello",
        payload_type="eap.v1.Ping",
        origin="medellin.eap.example",
        destination="barcelona.eap.example",
        expires_at_ms=1_700_000_060_000,
        key_id="ed25519:56475aa75463474c",
        signature=bytes.fromhex(GOLDEN_SIGNATURE_HEX),
        nonce=bytes(range(16)),
    )
    peers = PeerKeys({"medellin.eap.example": {key_id_for(raw): (raw, None)}})
    opened = open_envelope(env, me="barcelona.eap.example", peers=peers, now=1_700_000_000.0)
    assert opened.payload == b"hello" and opened.origin == "medellin.eap.example"


def test_signing_input_layout():
    data = signing_input(
        payload_type="t",
        origin="o",
        destination="dé",
        expires_at_ms=-1,
        key_id="k",
        nonce=b"\x00" * 16,
        payload=b"p" * 3,
    )
    expected = (
        b"EAP-ENVELOPE-v1\x00"
        + b"\x00\x01t"
        + b"\x00\x01o"
        + b"\x00\x03d\xc3\xa9"
        + struct.pack(">q", -1)
        + b"\x00\x01k"
        + b"\x00\x10"
        + b"\x00" * 16
        + b"\x00\x00\x00\x03ppp"
    )
    assert data == expected


_fields = st.fixed_dictionaries(
    {
        "payload_type": st.text(max_size=8),
        "origin": st.text(max_size=8),
        "destination": st.text(max_size=8),
        "expires_at_ms": st.integers(-(2**63), 2**63 - 1),
        "key_id": st.text(max_size=8),
        "nonce": st.binary(max_size=8),
        "payload": st.binary(max_size=8),
    }
)


@settings(max_examples=200, deadline=None)
@given(_fields, _fields)
def test_signing_input_is_injective(f1, f2):
    """Length prefixes make field boundaries unambiguous: different fields, different bytes."""
    try:
        d1, d2 = signing_input(**f1), signing_input(**f2)
    except InvalidArgument:  # lone surrogates cannot be encoded; not a wire value
        return
    assert (d1 == d2) == (f1 == f2)


def test_signing_input_rejects_oversized_fields():
    base = dict(
        payload_type="t", origin="o", destination="d", expires_at_ms=0, key_id="k", nonce=b"n"
    )
    with pytest.raises(InvalidArgument):
        signing_input(**(base | {"origin": "x" * 256}), payload=b"")
    with pytest.raises(InvalidArgument):
        signing_input(**(base | {"expires_at_ms": 2**63}), payload=b"")
    with pytest.raises(InvalidArgument):
        signing_input(**(base | {"origin": "\ud800"}), payload=b"")


# -- seal / open --------------------------------------------------------------------------------


def test_seal_and_open(fed):
    env = seal(fed["a"], b"batch", "eap.v1.RecordBatch", A, B, ttl_s=60, now=T0)
    assert env.key_id == fed["a"].active_key_id
    assert len(env.nonce) == 16 and len(env.signature) == 64
    assert env.expires_at_ms == int(T0 * 1000) + 60_000
    opened = _open(env, fed, expected_type="eap.v1.RecordBatch", tls_peer=A)
    assert (opened.payload, opened.payload_type, opened.origin) == (
        b"batch",
        "eap.v1.RecordBatch",
        A,
    )
    assert SignedEnvelope.from_message(env) == env
    assert SignedEnvelope(**env.as_dict()) == env
    assert "batch" not in repr(env)


def test_nonce_makes_each_envelope_unique(fed):
    e1 = seal(fed["a"], b"x", "t", A, B, now=T0)
    e2 = seal(fed["a"], b"x", "t", A, B, now=T0)
    assert e1.nonce != e2.nonce and e1.signature != e2.signature


def test_seal_validates_arguments(fed):
    with pytest.raises(InvalidArgument):
        seal(fed["a"], b"x", "t", A, B, ttl_s=0)
    with pytest.raises(InvalidArgument):
        seal(fed["a"], b"x", "t", A, B, ttl_s=MAX_TTL_S + 1)
    with pytest.raises(InvalidArgument):
        seal(fed["a"], b"x", "", A, B)
    with pytest.raises(InvalidArgument):
        seal(fed["a"], b"x", "t", A, "")


def test_payload_limit(fed):
    env = seal(fed["a"], b"x" * 1001, "t", A, B, now=T0)
    with pytest.raises(ResourceExhausted):
        _open(env, fed, max_payload=1000)
    _open(env, fed, max_payload=1001)


def test_unknown_origin(fed, tmp_path):
    stranger = KeyRing.create(tmp_path / "z")
    env = seal(stranger, b"x", "t", "node-z", B, now=T0)
    with pytest.raises(PermissionDenied, match="unknown peer"):
        _open(env, fed)


def test_origin_must_be_tls_peer(fed):
    env = seal(fed["a"], b"x", "t", A, B, now=T0)
    with pytest.raises(PermissionDenied, match="TLS peer"):
        _open(env, fed, tls_peer=C)


def test_wrong_destination(fed):
    env = seal(fed["a"], b"x", "t", A, C, now=T0)
    with pytest.raises(PermissionDenied, match="wrong destination"):
        _open(env, fed)


def test_expiry_with_clock_skew(fed):
    env = seal(fed["a"], b"x", "t", A, B, ttl_s=60, now=T0)
    limit = T0 + 60 + CLOCK_SKEW_S
    _open(env, fed, now=limit - 0.001)
    with pytest.raises(Unauthenticated, match="expired"):
        _open(env, fed, now=limit)


def test_expiry_too_far_in_the_future(fed):
    env = seal(fed["a"], b"x", "t", A, B, ttl_s=MAX_TTL_S, now=T0 + CLOCK_SKEW_S)
    _open(env, fed, now=T0)  # sender's clock 30 s ahead: tolerated
    env = seal(fed["a"], b"x", "t", A, B, ttl_s=MAX_TTL_S, now=T0 + CLOCK_SKEW_S + 1)
    with pytest.raises(Unauthenticated, match="future"):
        _open(env, fed, now=T0)


def test_retired_key_verifies_until_validity_ends(fed, tmp_path):
    ring = KeyRing.create(tmp_path / "r", now=T0)
    old = seal(ring, b"x", "t", "node-r", B, ttl_s=MAX_TTL_S, now=T0)
    ring.rotate(retired_validity_s=120, now=T0 + 1)
    new = seal(ring, b"y", "t", "node-r", B, ttl_s=MAX_TTL_S, now=T0 + 2)
    assert old.key_id != new.key_id
    peers = PeerKeys({"node-r": ring.public_keys()})
    open_envelope(old, me=B, peers=peers, now=T0 + 100)
    with pytest.raises(Unauthenticated, match="no longer valid"):
        open_envelope(old, me=B, peers=peers, now=T0 + 121)
    open_envelope(new, me=B, peers=peers, now=T0 + 121)


def test_old_key_of_fixture_peer_still_accepted(fed):
    info = fed["a"].public_keys()[fed["old_a"]]
    assert info.retired and info.valid_until_ms > T0 * 1000


def test_unexpected_payload_type(fed):
    env = seal(fed["a"], b"x", "eap.v1.Ping", A, B, now=T0)
    with pytest.raises(InvalidArgument):
        _open(env, fed, expected_type="eap.v1.RecordBatch")


def test_malformed_nonce(fed):
    env = seal(fed["a"], b"x", "t", A, B, now=T0)
    for nonce in (b"", env.nonce[:15], env.nonce + b"\x00"):
        with pytest.raises(InvalidArgument):
            _open(SignedEnvelope(**(env.as_dict() | {"nonce": nonce})), fed)


def test_order_of_checks(fed):
    """A payload that is too large is refused before anything else is looked at."""
    env = seal(fed["a"], b"x" * 10, "t", A, C, ttl_s=1, now=T0 - 1000)
    env = SignedEnvelope(**(env.as_dict() | {"origin": "node-z", "signature": b"\x00" * 64}))
    with pytest.raises(ResourceExhausted):
        _open(env, fed, max_payload=5)
    with pytest.raises(PermissionDenied, match="unknown peer"):
        _open(env, fed)
    env = SignedEnvelope(**(env.as_dict() | {"origin": A}))
    with pytest.raises(PermissionDenied, match="wrong destination"):
        _open(env, fed)
    env = SignedEnvelope(**(env.as_dict() | {"destination": B}))
    with pytest.raises(Unauthenticated, match="expired"):
        _open(env, fed)
    env = SignedEnvelope(**(env.as_dict() | {"expires_at_ms": int(T0 * 1000) + 1000}))
    with pytest.raises(Unauthenticated, match="invalid signature"):
        _open(env, fed)


# -- tampering ----------------------------------------------------------------------------------

FIELDS = ["payload", "payload_type", "origin", "destination", "expires_at_ms", "key_id", "nonce"]


def _flip(value, index: int, mask: int):
    if isinstance(value, bytes):
        if not value:
            return bytes([mask])
        i = index % len(value)
        return value[:i] + bytes([value[i] ^ mask]) + value[i + 1 :]
    if isinstance(value, str):
        i = index % len(value)
        return value[:i] + chr(ord(value[i]) ^ (mask & 0x7F or 1)) + value[i + 1 :]
    raw = bytearray(struct.pack(">q", value))
    raw[index % 8] ^= mask
    return struct.unpack(">q", bytes(raw))[0]


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from([*FIELDS, "signature"]),
    index=st.integers(0, 1000),
    mask=st.integers(1, 255),
    payload=st.binary(max_size=64),
)
def test_tampering_any_field_is_refused(fed, field, index, mask, payload):
    env = seal(fed["a"], payload, "eap.v1.RecordBatch", A, B, ttl_s=60, now=T0)
    _open(env, fed)  # the untouched envelope is fine

    tampered = SignedEnvelope(**(env.as_dict() | {field: _flip(getattr(env, field), index, mask)}))
    assert tampered != env
    if field == "origin":
        expected = Unauthenticated if tampered.origin in fed["peers"] else PermissionDenied
    elif field == "destination":
        expected = PermissionDenied
    else:
        expected = Unauthenticated
    with pytest.raises(expected) as err:
        _open(tampered, fed)
    assert type(err.value) is expected


def test_swapping_to_another_valid_key_id_of_the_origin_is_refused(fed):
    env = seal(fed["a"], b"x", "t", A, B, now=T0)
    swapped = SignedEnvelope(**(env.as_dict() | {"key_id": fed["old_a"]}))
    with pytest.raises(Unauthenticated, match="invalid signature"):
        _open(swapped, fed)


def test_origin_changed_to_another_peer_is_refused(fed):
    env = seal(fed["a"], b"x", "t", A, B, now=T0)
    with pytest.raises(Unauthenticated, match="unknown key id"):
        _open(SignedEnvelope(**(env.as_dict() | {"origin": C})), fed)


# -- replay guard -------------------------------------------------------------------------------


def test_replay_is_detected(fed):
    guard = ReplayGuard()
    env = seal(fed["a"], b"x", "t", A, B, now=T0)
    _open(env, fed, replay_guard=guard)
    with pytest.raises(ReplayDetected):
        _open(env, fed, replay_guard=guard, now=T0 + 1)
    assert issubclass(ReplayDetected, Unauthenticated)
    _open(seal(fed["a"], b"x", "t", A, B, now=T0), fed, replay_guard=guard)
    assert len(guard) == 2


def test_forged_envelope_does_not_poison_the_guard(fed):
    guard = ReplayGuard()
    env = seal(fed["a"], b"x", "t", A, B, now=T0)
    forged = SignedEnvelope(**(env.as_dict() | {"payload": b"evil"}))
    with pytest.raises(Unauthenticated):
        _open(forged, fed, replay_guard=guard)
    assert len(guard) == 0
    _open(env, fed, replay_guard=guard)


def test_guard_forgets_after_expiry():
    guard = ReplayGuard()
    until = int(T0 * 1000) + 5000
    guard.check_and_remember(A, b"n" * 16, until_ms=until, now=T0)
    with pytest.raises(ReplayDetected):
        guard.check_and_remember(A, b"n" * 16, until_ms=until, now=T0 + 4.9)
    guard.check_and_remember(A, b"m" * 16, until_ms=until + 10_000, now=T0 + 5)
    assert len(guard) == 1  # the first nonce was dropped at its expiry
    guard.check_and_remember(A, b"n" * 16, until_ms=until + 10_000, now=T0 + 5)


def test_guard_memory_is_bounded_and_fails_closed():
    guard = ReplayGuard(max_entries=3, max_per_origin=2)
    now_ms = int(T0 * 1000)
    guard.check_and_remember(A, b"1", until_ms=now_ms + 1000, now=T0)
    guard.check_and_remember(A, b"2", until_ms=now_ms + 2000, now=T0)
    with pytest.raises(ResourceExhausted) as err:
        guard.check_and_remember(A, b"3", until_ms=now_ms + 3000, now=T0)
    assert err.value.retry_after == pytest.approx(1.0)
    guard.check_and_remember(C, b"1", until_ms=now_ms + 3000, now=T0)  # others unaffected
    with pytest.raises(ResourceExhausted):
        guard.check_and_remember("node-d", b"1", until_ms=now_ms + 3000, now=T0)
    guard.check_and_remember(A, b"3", until_ms=now_ms + 3000, now=T0 + 1)  # room again
    assert len(guard) == 3
    with pytest.raises(ReplayDetected):
        guard.check_and_remember(A, b"2", until_ms=now_ms + 3000, now=T0 + 1)
