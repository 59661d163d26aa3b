"""Ed25519 node signing keys: the node's own :class:`KeyRing` and the :class:`PeerKeys` it trusts.

A node signs with exactly one *active* key.  Rotation makes a new active key and *retires* the
old one: its private half is deleted, its public half stays in the ring (and in the node
descriptor) with a ``valid_until_ms`` so that peers keep verifying what was signed with it
until then (Synapse's ``old_verify_keys``).

On disk (``<node home>/keys/``, mode 0700)::

    keyring.json                 public metadata: active key id, every key's public half,
                                 created_at_ms / retired_at_ms / valid_until_ms (mode 0600)
    ed25519_<16 hex>.pem         the active private key, PEM PKCS#8, unencrypted or encrypted
                                 with a passphrase (mode 0600)

A key id is ``"ed25519:" + hex(SHA-256(raw 32-byte public key))[:16]``; it is derived from
the key, so a peer's claimed key id is always checked against the key it names.

Times are integer milliseconds since the Unix epoch (``*_ms``) everywhere they are stored or
sent; the ``now`` arguments are seconds (``time.time()`` style) and exist for tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eap.node.crypto import _files
from eap.node.errors import (
    AlreadyExists,
    ConfigError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    invalid,
)

logger = logging.getLogger(__name__)

KEY_ID_PREFIX = "ed25519:"
KEYRING_FILE = "keyring.json"
KEYRING_FORMAT = "eap-keyring-v1"
#: How long a retired key keeps verifying by default: long enough for every peer to refresh
#: our descriptor and for every envelope signed just before rotation to expire.
DEFAULT_RETIRED_VALIDITY_S = 7 * 24 * 3600
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64

_KEY_ID_RE = re.compile(r"^ed25519:[0-9a-f]{16}$")


def now_ms(now: float | None = None) -> int:
    """``now`` (seconds since the epoch, default the wall clock) as integer milliseconds."""
    if now is None:
        return time.time_ns() // 1_000_000
    return int(now * 1000)


def key_id_for(public_key: bytes) -> str:
    """The key id of a raw Ed25519 public key: ``"ed25519:" + hex(SHA-256(key))[:16]``."""
    _check_public_key_bytes(public_key)
    return KEY_ID_PREFIX + hashlib.sha256(public_key).hexdigest()[:16]


def fingerprint(public_key: bytes) -> str:
    """A full-strength fingerprint for comparing a key out of band: ``SHA256:<base64>``.

    Unlike the 64-bit key id (a lookup handle), this carries all 256 bits of the hash.  It is
    computed over the raw 32-byte key, so it differs from ``ssh-keygen -l`` for the same key.
    """
    _check_public_key_bytes(public_key)
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def is_key_id(value: str) -> bool:
    """Whether ``value`` is shaped like an EAP key id (``ed25519:`` + 16 lowercase hex)."""
    return bool(_KEY_ID_RE.match(value))


def _check_public_key_bytes(public_key: bytes) -> None:
    if not isinstance(public_key, bytes | bytearray | memoryview):
        raise invalid("public_key", "must be bytes")
    if len(public_key) != PUBLIC_KEY_LEN:
        raise invalid("public_key", f"an Ed25519 public key is {PUBLIC_KEY_LEN} bytes")


def _raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class PublicKeyInfo:
    """The public half of one of our signing keys, as published in the node descriptor.

    Attributes:
        key_id: ``"ed25519:" + 16 hex``, derived from ``public_key``.
        public_key: raw 32-byte Ed25519 public key.
        created_at_ms: when the key was generated.
        retired_at_ms: when it stopped being the active key; ``None`` while active.
        valid_until_ms: after this instant peers must refuse signatures by this key; ``None``
            means no limit (the active key).
    """

    key_id: str
    public_key: bytes
    created_at_ms: int
    retired_at_ms: int | None = None
    valid_until_ms: int | None = None

    @property
    def retired(self) -> bool:
        return self.retired_at_ms is not None

    def is_valid_at(self, at_ms: int) -> bool:
        """Whether a signature by this key is acceptable at ``at_ms``."""
        return self.valid_until_ms is None or at_ms < self.valid_until_ms

    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form; ``public_key`` is standard base64."""
        return {
            "key_id": self.key_id,
            "public_key": base64.b64encode(self.public_key).decode("ascii"),
            "created_at_ms": self.created_at_ms,
            "retired_at_ms": self.retired_at_ms,
            "valid_until_ms": self.valid_until_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PublicKeyInfo:
        """Parse :meth:`as_dict` output, checking that the key id matches the key.

        Raises:
            InvalidArgument: a field is missing or wrong, or the key id does not match the key.
        """
        try:
            raw = base64.b64decode(data["public_key"], validate=True)
            info = cls(
                key_id=str(data["key_id"]),
                public_key=raw,
                created_at_ms=int(data["created_at_ms"]),
                retired_at_ms=_opt_int(data.get("retired_at_ms")),
                valid_until_ms=_opt_int(data.get("valid_until_ms")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed public key entry: {exc!s}") from exc
        if key_id_for(info.public_key) != info.key_id:
            raise invalid("key_id", f"{info.key_id} does not match its public key")
        return info


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _private_file_name(key_id: str) -> str:
    return key_id.replace(":", "_") + ".pem"


@dataclass(frozen=True, repr=False)
class _RingState:
    signer: Ed25519PrivateKey
    active: str
    infos: dict[str, PublicKeyInfo]


class KeyRing:
    """This node's Ed25519 signing keys: one active key plus retired keys kept for verifying.

    Create one with :meth:`create`, open it with :meth:`load`.  Signing is thread-safe and may
    run concurrently with :meth:`rotate`.  Several processes sharing a node home serialise
    their mutations through a lock file; a process that did not rotate keeps signing with the
    old key (still valid for ``retired_validity_s``) until it loads the ring again.
    """

    __slots__ = ("_mutate", "_passphrase", "_path", "_state")

    def __init__(
        self,
        path: Path,
        signer: Ed25519PrivateKey,
        active: str,
        infos: dict[str, PublicKeyInfo],
        passphrase: bytes | None,
    ) -> None:
        self._path = path
        # One reference swapped whole, so readers never see a signer of one key with the
        # metadata of another.
        self._state = _RingState(signer, active, infos)
        self._passphrase = passphrase
        self._mutate = threading.Lock()  # one rotate/prune at a time in this process

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | Path, *, passphrase: bytes | None = None, now: float | None = None
    ) -> KeyRing:
        """Create a key ring with a fresh active key in directory ``path`` (made 0700).

        Args:
            path: the ``keys/`` directory of the node home; created if missing.
            passphrase: if given, private key files are encrypted with it (PKCS#8, best
                available scheme) and :meth:`load` needs it.
            now: creation time in seconds, for tests.

        Raises:
            AlreadyExists: a key ring exists already in ``path``.
            ConfigError: ``path`` cannot be used (not a directory, another owner).
        """
        path = Path(path)
        _files.ensure_private_dir(path)
        with _files.dir_lock(path):
            if (path / KEYRING_FILE).exists():
                raise AlreadyExists(f"a key ring exists already in {path}")
            signer = Ed25519PrivateKey.generate()
            info = _new_info(signer, now_ms(now))
            _write_private_key(path, info.key_id, signer, passphrase)
            _write_metadata(path, info.key_id, {info.key_id: info})
        logger.info("created key ring in %s, active key %s", path, info.key_id)
        return cls(path, signer, info.key_id, {info.key_id: info}, passphrase)

    @classmethod
    def load(cls, path: str | Path, *, passphrase: bytes | None = None) -> KeyRing:
        """Open the key ring in ``path``, refusing loose permissions as ``ssh`` does.

        Raises:
            ConfigError: missing or malformed files, a directory writable by group or others,
                a private key file readable by group or others, a wrong or missing passphrase,
                or a private key that does not match the metadata.
        """
        path = Path(path)
        _files.check_private_dir(path)
        active, infos = _read_metadata(path)
        pem = _files.read_private_file(path / _private_file_name(active))
        signer = _parse_private_key(pem, passphrase, path / _private_file_name(active))
        if _raw_public(signer) != infos[active].public_key:
            raise ConfigError(f"private key file for {active} in {path} does not match its id")
        _warn_stray_files(path, active)
        logger.debug("loaded key ring %s: active %s, %d key(s)", path, active, len(infos))
        return cls(path, signer, active, infos, passphrase)

    # -- reading ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def active(self) -> PublicKeyInfo:
        """The active key's public information (key id, public key, creation time)."""
        st = self._state
        return st.infos[st.active]

    @property
    def active_key_id(self) -> str:
        return self._state.active

    def public_keys(self) -> dict[str, PublicKeyInfo]:
        """Every key of the ring (active and retired) by key id, for the node descriptor."""
        return dict(self._state.infos)

    def fingerprint(self, key_id: str | None = None) -> str:
        """The ``SHA256:`` fingerprint of the active key, or of ``key_id``.

        Raises:
            InvalidArgument: ``key_id`` is not in the ring.
        """
        st = self._state
        info = st.infos.get(key_id or st.active)
        if info is None:
            raise invalid("key_id", f"{key_id} is not in this key ring")
        return info.fingerprint()

    # -- signing and verifying -----------------------------------------------------------------

    def sign(self, data: bytes) -> tuple[str, bytes]:
        """Sign ``data`` with the active key; returns ``(key_id, 64-byte signature)``.

        Callers sign domain-separated bytes (e.g. the envelope's ``EAP-ENVELOPE-v1`` input),
        never bare protocol messages.
        """
        st = self._state
        return st.active, st.signer.sign(bytes(data))

    def verify(
        self, key_id: str, data: bytes, signature: bytes, *, now: float | None = None
    ) -> None:
        """Verify a signature made by one of our own keys (active, or retired and still valid).

        Raises:
            Unauthenticated: unknown key id, retired key past its validity, or bad signature.
        """
        info = self._state.infos.get(key_id)
        if info is None:
            raise Unauthenticated(f"unknown key id {key_id!r}")
        if not info.is_valid_at(now_ms(now)):
            raise Unauthenticated(f"key {key_id} was retired and is no longer valid")
        _verify(info.public_key, data, signature)

    # -- mutation -----------------------------------------------------------------------------

    def rotate(
        self,
        *,
        retired_validity_s: float | None = DEFAULT_RETIRED_VALIDITY_S,
        now: float | None = None,
    ) -> str:
        """Make a new active key; the old one is retired and keeps verifying for a while.

        The new private key is written first, then the metadata is replaced atomically, then
        the old private key file is deleted: a crash leaves either the old or the new ring,
        plus at most one stray key file (logged on load).

        Args:
            retired_validity_s: how long the old key stays valid for verification;
                ``None`` keeps it valid until pruned by hand.
            now: rotation time in seconds, for tests.

        Returns:
            The new active key id.
        """
        if retired_validity_s is not None and retired_validity_s < 0:
            raise invalid("retired_validity_s", "must be >= 0")
        at = now_ms(now)
        with self._mutate, _files.dir_lock(self._path):
            # Start from the ring on disk: another process may have rotated since we loaded.
            old_id, infos = _read_metadata(self._path)
            signer = Ed25519PrivateKey.generate()
            new = _new_info(signer, at)
            valid_until = (
                None if retired_validity_s is None else at + int(retired_validity_s * 1000)
            )
            infos[old_id] = replace(infos[old_id], retired_at_ms=at, valid_until_ms=valid_until)
            infos[new.key_id] = new
            _write_private_key(self._path, new.key_id, signer, self._passphrase)
            _write_metadata(self._path, new.key_id, infos)
            self._state = _RingState(signer, new.key_id, infos)
            old_file = self._path / _private_file_name(old_id)
            try:
                old_file.unlink()
            except OSError as exc:  # pragma: no cover - stray file only, logged on next load
                logger.warning("could not delete retired private key %s: %s", old_file, exc)
        logger.info(
            "rotated signing key in %s: %s retired, %s active", self._path, old_id, new.key_id
        )
        return new.key_id

    def prune(self, *, now: float | None = None) -> list[str]:
        """Forget retired keys whose validity has ended; returns the key ids removed."""
        at = now_ms(now)
        with self._mutate, _files.dir_lock(self._path):
            active, infos = _read_metadata(self._path)
            gone = [k for k, i in infos.items() if k != active and not i.is_valid_at(at)]
            if gone:
                infos = {k: i for k, i in infos.items() if k not in gone}
                _write_metadata(self._path, active, infos)
            st = self._state
            if st.active == active:
                self._state = _RingState(st.signer, active, infos)
            else:  # rotated elsewhere: keep signing with our (retired) key until reload()
                merged = infos if st.active in infos else infos | {st.active: st.infos[st.active]}
                self._state = _RingState(st.signer, st.active, merged)
        if gone:
            logger.info("pruned expired keys from %s: %s", self._path, ", ".join(gone))
        return gone

    def reload(self) -> None:
        """Re-read the ring from disk, picking up a rotation made by another process.

        Raises:
            ConfigError: as :meth:`load`.
        """
        fresh = KeyRing.load(self._path, passphrase=self._passphrase)
        self._state = fresh._state

    def __repr__(self) -> str:
        return (
            f"KeyRing(path={str(self._path)!r}, active={self._state.active!r}, "
            f"keys={len(self._state.infos)})"
        )


def _new_info(signer: Ed25519PrivateKey, at_ms: int) -> PublicKeyInfo:
    raw = _raw_public(signer)
    return PublicKeyInfo(key_id=key_id_for(raw), public_key=raw, created_at_ms=at_ms)


def _write_private_key(
    path: Path, key_id: str, signer: Ed25519PrivateKey, passphrase: bytes | None
) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = signer.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _files.create_file(path / _private_file_name(key_id), pem, _files.PRIVATE_FILE_MODE)


def _parse_private_key(pem: bytes, passphrase: bytes | None, where: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase or None)
    except TypeError as exc:
        hint = "needs a passphrase" if passphrase is None else "is not encrypted"
        raise ConfigError(f"private key file {where} {hint}") from exc
    except ValueError as exc:
        raise ConfigError(
            f"cannot read private key file {where}: wrong passphrase or not a PEM PKCS#8 key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"private key file {where} does not hold an Ed25519 key")
    return key


def _write_metadata(path: Path, active: str, infos: Mapping[str, PublicKeyInfo]) -> None:
    doc = {
        "format": KEYRING_FORMAT,
        "active": active,
        "keys": [infos[k].as_dict() for k in sorted(infos, key=lambda k: infos[k].created_at_ms)],
    }
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    _files.replace_file(path / KEYRING_FILE, data, _files.PRIVATE_FILE_MODE)


def _read_metadata(path: Path) -> tuple[str, dict[str, PublicKeyInfo]]:
    where = path / KEYRING_FILE
    raw = _files.read_public_file(where)
    try:
        doc = json.loads(raw)
        if doc.get("format") != KEYRING_FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, expected {KEYRING_FORMAT!r}")
        infos: dict[str, PublicKeyInfo] = {}
        for entry in doc["keys"]:
            info = PublicKeyInfo.from_dict(entry)
            if info.key_id in infos:
                raise ValueError(f"duplicate key {info.key_id}")
            infos[info.key_id] = info
        active = doc["active"]
    except (ValueError, KeyError, TypeError, AttributeError, InvalidArgument) as exc:
        raise ConfigError(f"malformed key ring metadata {where}: {exc!s}") from exc
    if not isinstance(active, str) or active not in infos or infos[active].retired:
        raise ConfigError(f"malformed key ring metadata {where}: no valid active key")
    return active, infos


def _warn_stray_files(path: Path, active: str) -> None:
    expected = _private_file_name(active)
    for stray in path.glob("ed25519_*.pem"):
        if stray.name != expected:
            logger.warning(
                "stray private key file %s in key ring (left by an interrupted rotation?); "
                "it is not used and may be deleted",
                stray,
            )


def _verify(public_key: bytes, data: bytes, signature: bytes) -> None:
    if len(signature) != SIGNATURE_LEN:
        raise Unauthenticated(f"signature must be {SIGNATURE_LEN} bytes, got {len(signature)}")
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(bytes(signature), bytes(data))
    except InvalidSignature as exc:
        raise Unauthenticated("invalid signature") from exc


# -- peers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PeerKey:
    public: Ed25519PublicKey
    raw: bytes
    valid_until_ms: int | None


PeerKeySpec = tuple[bytes, int | None] | PublicKeyInfo


class PeerKeys:
    """The public keys of trusted peer nodes: ``node_id -> {key_id: (public key, valid_until)}``.

    Built from the trust list and refreshed from peers' descriptors.  Lookups never lock:
    each update swaps in a new mapping, so verification in server threads sees the old or the
    new trust list, never a mix.

    Errors follow the federation rules: a node that is not a peer is ``PermissionDenied`` (we
    know who they claim to be and refuse them); a peer's unknown or expired key, or a bad
    signature, is ``Unauthenticated`` (they did not prove who they are).
    """

    def __init__(self, peers: Mapping[str, Mapping[str, PeerKeySpec]] | None = None) -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, dict[str, _PeerKey]] = {}
        for node_id, keys in (peers or {}).items():
            self.set_peer(node_id, keys)

    def set_peer(self, node_id: str, keys: Mapping[str, PeerKeySpec]) -> None:
        """Trust ``node_id`` with exactly ``keys`` (replacing what was known for it).

        Args:
            node_id: the peer's node id.
            keys: ``key_id -> (raw public key, valid_until_ms or None)`` or ``key_id ->
                PublicKeyInfo`` (a peer descriptor's keys, or ``KeyRing.public_keys()``).

        Raises:
            InvalidArgument: an empty node id, a key that is not 32 bytes, or a key id that
                does not match its key.
        """
        if not node_id:
            raise invalid("node_id", "must not be empty")
        parsed: dict[str, _PeerKey] = {}
        for key_id, spec in keys.items():
            if isinstance(spec, PublicKeyInfo):
                raw, valid_until = spec.public_key, spec.valid_until_ms
            else:
                try:
                    raw, valid_until = spec
                    raw = bytes(raw)
                except (TypeError, ValueError) as exc:
                    raise invalid(
                        f"keys[{key_id}]", "expected (public key bytes, valid_until_ms or None)"
                    ) from exc
            if key_id_for(raw) != key_id:
                raise invalid(f"keys[{key_id}]", "key id does not match the public key")
            parsed[key_id] = _PeerKey(Ed25519PublicKey.from_public_bytes(raw), raw, valid_until)
        with self._lock:
            peers = dict(self._peers)
            peers[node_id] = parsed
            self._peers = peers

    def add_key(self, node_id: str, public_key: bytes, *, valid_until_ms: int | None = None) -> str:
        """Add one key to ``node_id`` (trusting the node if it was not yet); returns its key id."""
        key_id = key_id_for(bytes(public_key))
        spec = (bytes(public_key), valid_until_ms)
        with self._lock:
            current = {
                k: (v.raw, v.valid_until_ms) for k, v in self._peers.get(node_id, {}).items()
            }
        current[key_id] = spec
        self.set_peer(node_id, current)
        return key_id

    def remove_peer(self, node_id: str) -> None:
        """Stop trusting ``node_id``; unknown ids are ignored."""
        with self._lock:
            peers = dict(self._peers)
            peers.pop(node_id, None)
            self._peers = peers

    def knows(self, node_id: str) -> bool:
        return node_id in self._peers

    __contains__ = knows

    def node_ids(self) -> frozenset[str]:
        return frozenset(self._peers)

    def keys_of(self, node_id: str) -> dict[str, tuple[bytes, int | None]]:
        """``key_id -> (raw public key, valid_until_ms)`` for ``node_id`` (empty if unknown)."""
        return {k: (v.raw, v.valid_until_ms) for k, v in self._peers.get(node_id, {}).items()}

    def public_key(
        self, node_id: str, key_id: str, *, now: float | None = None
    ) -> Ed25519PublicKey:
        """The key to verify ``node_id``'s signature made with ``key_id``, if valid now.

        Raises:
            PermissionDenied: ``node_id`` is not a trusted peer.
            Unauthenticated: the key id is unknown for that peer or past its validity.
        """
        keys = self._peers.get(node_id)
        if keys is None:
            raise PermissionDenied(f"{node_id!r} is not a trusted peer")
        key = keys.get(key_id)
        if key is None:
            raise Unauthenticated(f"unknown key id {key_id!r} for peer {node_id!r}")
        if key.valid_until_ms is not None and now_ms(now) >= key.valid_until_ms:
            raise Unauthenticated(f"key {key_id} of peer {node_id!r} is no longer valid")
        return key.public

    def verify(
        self, node_id: str, key_id: str, data: bytes, signature: bytes, *, now: float | None = None
    ) -> None:
        """Check that ``signature`` over ``data`` was made by ``node_id`` with ``key_id``.

        Raises:
            PermissionDenied: ``node_id`` is not a trusted peer.
            Unauthenticated: unknown or expired key id, or an invalid signature.
        """
        key = self.public_key(node_id, key_id, now=now)
        if len(signature) != SIGNATURE_LEN:
            raise Unauthenticated(f"signature must be {SIGNATURE_LEN} bytes, got {len(signature)}")
        try:
            key.verify(bytes(signature), bytes(data))
        except InvalidSignature as exc:
            raise Unauthenticated(f"invalid signature from {node_id!r}") from exc

    def __repr__(self) -> str:
        return f"PeerKeys({len(self._peers)} peer(s))"
