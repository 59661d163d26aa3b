"""Holder-held keys: moves of a holder-signed account's bundles need the holder's signature.

An account created with its holder's Ed25519 public key (``CreateAccount.holder_public_key``,
``eap-node account create --holder-key``) is *holder-signed*: the node refuses every
transfer, split, retirement (claim) and cross-node transfer-out of its bundles unless the
request carries a :class:`HolderAuth` — the holder's signature over the canonical bytes of an
:class:`Intent` — so an operator (or a stolen account token) cannot move them alone.
Custodial accounts (no holder key) are not affected.

The canonical message (docs/holder-keys.md), every integer big-endian::

    b"EAP-HOLDER-AUTH-v1\\x00"
    str node_id, str account, str operation
    u16 n, then n times: str bundle_id, i64 wh          (wh 0 = the whole bundle)
    str destination                                     ("" for a claim)
    i64 price_minor, str currency                       (0, "" without a price)
    str beneficiary, str purpose                        ("" unless a claim)
    i64 consumption_start, i64 consumption_end, str consumption_zone
    str request_id
    i64 expires_at_ms

where ``str`` is ``u16 length || UTF-8 bytes``.  The node id and the domain tag keep a
signature from being valid on another node or for another protocol; the request id binds it
to one request: a replay of that request is answered by the idempotency layer with the first
result, and the same signature can never authorize another request (its bytes would differ;
:func:`require` also records each accepted signature in ``holder_auth_uses``).

The holder key never leaves the node: account ids stay random pseudonyms (not derived from
the key), federation messages carry no account key, and TRANSPARENCY reads blank it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Connection

from eap.node.crypto.keys import now_ms
from eap.node.errors import InvalidArgument, PermissionDenied, invalid
from eap.node.records.models import Account
from eap.node.store import holder_repos

DOMAIN = b"EAP-HOLDER-AUTH-v1\x00"
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
#: Longest a holder signature may stay valid: a wallet signs shortly before it sends.
MAX_VALIDITY_MS = 24 * 3600 * 1000
#: The operations a holder signs, as named in the canonical message.
TRANSFER, RETIRE, TRANSFER_OUT = "transfer", "retire", "transfer_out"
OPERATIONS = (TRANSFER, RETIRE, TRANSFER_OUT)
PRIVATE_KEY_FILE = "holder.key"
PUBLIC_KEY_FILE = "holder.pub"

_U16 = struct.Struct(">H")
_I64 = struct.Struct(">q")


@dataclass(frozen=True)
class HolderAuth:
    """A holder's signature on one request, and when it stops being valid (unix ms)."""

    signature: bytes
    expires_at_ms: int


@dataclass(frozen=True)
class Intent:
    """What the holder authorizes: every field of the canonical message but the domain tag."""

    node_id: str
    account: str
    operation: str
    #: ``(bundle id, Wh)`` pairs; Wh 0 = the whole bundle.
    moves: tuple[tuple[str, int], ...]
    request_id: str
    expires_at_ms: int
    destination: str = ""
    price_minor: int = 0
    currency: str = ""
    beneficiary: str = ""
    purpose: str = ""
    consumption_start: int = 0
    consumption_end: int = 0
    consumption_zone: str = ""

    def message(self) -> bytes:
        """The canonical bytes the holder signs (see the module docstring).

        Raises:
            InvalidArgument: an unknown operation, a string over 65535 UTF-8 bytes, or an
                integer outside int64.
        """
        if self.operation not in OPERATIONS:
            raise invalid("operation", f"must be one of {', '.join(OPERATIONS)}")
        if len(self.moves) > 0xFFFF:
            raise invalid("moves", "too many bundles")
        parts = [DOMAIN, _str(self.node_id), _str(self.account), _str(self.operation)]
        parts.append(_U16.pack(len(self.moves)))
        for bundle, wh in self.moves:
            parts += [_str(bundle), _i64(wh)]
        parts += [
            _str(self.destination),
            _i64(self.price_minor),
            _str(self.currency),
            _str(self.beneficiary),
            _str(self.purpose),
            _i64(self.consumption_start),
            _i64(self.consumption_end),
            _str(self.consumption_zone),
            _str(self.request_id),
            _i64(self.expires_at_ms),
        ]
        return b"".join(parts)


def _str(value: str) -> bytes:
    try:
        data = str(value).encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("holder_auth", "a signed field is not valid Unicode") from None
    if len(data) > 0xFFFF:
        raise invalid("holder_auth", "a signed field is longer than 65535 bytes")
    return _U16.pack(len(data)) + data


def _i64(value: int) -> bytes:
    if not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise invalid("holder_auth", "a signed integer is outside int64")
    return _I64.pack(value)


# -- keys ----------------------------------------------------------------------------------------


def check_public_key(raw: bytes | None, field_name: str = "holder_public_key") -> bytes | None:
    """``raw`` as a valid Ed25519 public key, or None when empty (a custodial account).

    Raises:
        InvalidArgument: not 32 bytes, or not a point of the curve.
    """
    if not raw:
        return None
    raw = bytes(raw)
    if len(raw) != PUBLIC_KEY_LEN:
        raise invalid(field_name, f"must be a raw {PUBLIC_KEY_LEN}-byte Ed25519 public key")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise invalid(field_name, "is not a valid Ed25519 public key") from None
    return raw


def parse_public_key(text: str) -> bytes:
    """A holder public key given as a file path, base64 (standard or URL-safe) or 64 hex digits.

    Raises:
        InvalidArgument: none of those, or not a valid key.
    """
    value = text.strip()
    if value and len(value) < 4096 and Path(value).is_file():
        value = Path(value).read_text(encoding="utf-8", errors="replace").strip()
    raw = _decode_key(value)
    key = check_public_key(raw, "holder_key") if raw else None
    if key is None:
        raise invalid("holder_key", "neither a key file nor a base64 / hex Ed25519 public key")
    return key


def _decode_key(value: str) -> bytes | None:
    if len(value) == 2 * PUBLIC_KEY_LEN:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    padded = value + "=" * (-len(value) % 4)
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def new_key_pair(out: Path) -> tuple[Path, bytes]:
    """Create ``holder.key`` (PKCS#8 PEM, mode 0600) and ``holder.pub`` (base64) in ``out``.

    Raises:
        AlreadyExists: a key file is already there (a holder key is never overwritten).
    """
    from eap.node.crypto import _files

    out = Path(out)
    _files.ensure_private_dir(out)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    raw = public_key_of(key)
    _files.create_file(out / PRIVATE_KEY_FILE, pem, _files.PRIVATE_FILE_MODE)
    _files.create_file(
        out / PUBLIC_KEY_FILE, base64.b64encode(raw) + b"\n", _files.PUBLIC_FILE_MODE
    )
    return out / PRIVATE_KEY_FILE, raw


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The holder private key in ``path`` (PKCS#8 PEM, as written by :func:`new_key_pair`).

    Raises:
        InvalidArgument: unreadable, or not an unencrypted Ed25519 private key.
    """
    try:
        data = Path(path).read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise invalid("sign_with", f"cannot read a holder private key from {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise invalid("sign_with", f"{path} is not an Ed25519 private key")
    return key


def public_key_of(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(key: Ed25519PrivateKey, intent: Intent) -> HolderAuth:
    """The holder's authorization of ``intent`` (what a wallet does)."""
    return HolderAuth(key.sign(intent.message()), intent.expires_at_ms)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the holder's (``public_key``) over ``message``.

    A general helper: :func:`require` uses it over :meth:`Intent.message`; other holder-bound
    statements (e.g. presentations) call it with their own domain-separated bytes.
    """
    if len(bytes(signature)) != SIGNATURE_LEN or len(bytes(public_key)) != PUBLIC_KEY_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(
            bytes(signature), bytes(message)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def signed_by_holder(account: Account, message: bytes, signature: bytes) -> bool:
    """Whether ``account``'s holder signed ``message`` (False for a custodial account).

    For holder-bound statements of other modules (e.g. presentations of claim receipts): give
    ``message`` its own domain tag, as :data:`DOMAIN` does for moves.
    """
    key = account.holder_public_key
    return bool(key) and verify(key, message, signature)


# -- the node's check ----------------------------------------------------------------------------


def holder_key(conn: Connection, account: str) -> bytes | None:
    """The holder key of a local account, None for a custodial (or unknown) one."""
    return holder_repos.holder_key(conn, account)


def require(
    conn: Connection, intent: Intent, auth: HolderAuth | None, *, at_ms: int | None = None
) -> None:
    """Refuse ``intent`` unless its account is custodial or ``auth`` is the holder's valid
    signature over it; record an accepted signature so it is never accepted again.

    Called in the transaction of the move, after the spend checks, so a refusal changes
    nothing.

    Raises:
        PermissionDenied: no signature, expired, not the holder's over this exact request,
            or already used.
        InvalidArgument: an expiry further ahead than :data:`MAX_VALIDITY_MS`.
    """
    key = holder_key(conn, intent.account)
    if key is None:
        return
    what = f"{intent.operation.replace('_', ' ')} of bundles of account {intent.account}"
    if auth is None or not auth.signature:
        raise PermissionDenied(
            f"the {what} needs its holder's signature (holder_auth): the account is "
            "holder-signed, so neither the operator nor an account token can move it alone"
        )
    now = now_ms() if at_ms is None else at_ms
    if auth.expires_at_ms <= now:
        raise PermissionDenied(
            f"the holder's signature for the {what} expired at {auth.expires_at_ms} (unix ms); "
            "sign the request again"
        )
    if auth.expires_at_ms > now + MAX_VALIDITY_MS:
        raise invalid(
            "holder_auth.expires_at_ms", f"at most {MAX_VALIDITY_MS // 3_600_000} hours ahead"
        )
    if not verify(key, intent.message(), auth.signature):
        raise PermissionDenied(
            f"the holder's signature does not authorize this {what}: wrong key, or a field "
            "(bundle, amount, destination, price, claim details, request id, expiry) differs "
            "from what the holder signed"
        )
    digest = hashlib.sha256(bytes(auth.signature)).hexdigest()
    used = holder_repos.signature_use(conn, digest)
    if used is not None:
        raise PermissionDenied(f"the holder's signature was already used (request {used})")
    holder_repos.record_signature_use(
        conn,
        signature_hash=digest,
        account=intent.account,
        operation=intent.operation,
        request_id=intent.request_id,
        expires_at_ms=auth.expires_at_ms,
        used_at_ms=now,
    )


def from_wire(msg) -> HolderAuth | None:
    """A ``HolderAuthorization`` off the wire (None when the field is absent or empty)."""
    if msg is None or not msg.signature:
        return None
    if len(msg.signature) != SIGNATURE_LEN:
        raise InvalidArgument(
            "holder signature must be 64 bytes",
            [_fv("holder_auth.signature", "an Ed25519 signature is 64 bytes")],
        )
    return HolderAuth(bytes(msg.signature), int(msg.expires_at_ms))


def _fv(name: str, description: str):
    from eap.node.errors import FieldViolation

    return FieldViolation(name, description)
