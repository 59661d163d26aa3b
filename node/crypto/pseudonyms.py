"""Pseudonyms that let federation name accounts and devices without identifying anyone.

* An **account id** is public and reproducible by every node: ``"acct_"`` + the first 26
  characters of the lowercase, unpadded base32 of SHA-256(raw Ed25519 public key) — 130 bits.
* A **device pseudonym** is computed only by the node that registered the device:
  ``"dev_"`` + 26 base32 characters of HMAC-SHA256(node secret, domain tag || local ref).
  Without the node secret a peer can neither recover the local device reference (meter id,
  serial number, address) nor test a guess of it, so exact device identity never leaves the
  node (DESIGN §8).  The secret is 32 random bytes kept in the node home, mode 0600;
  losing it changes every device pseudonym, so it is backed up with the signing keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from pathlib import Path

from eap.node.crypto import _files
from eap.node.crypto.keys import PUBLIC_KEY_LEN
from eap.node.errors import ConfigError, invalid

logger = logging.getLogger(__name__)

ACCOUNT_PREFIX = "acct_"
DEVICE_PREFIX = "dev_"
PSEUDONYM_CHARS = 26
NODE_SECRET_FILE = "node.secret"
NODE_SECRET_LEN = 32
MIN_NODE_SECRET_LEN = 16
#: Domain tag for device pseudonyms, so the node secret can key other pseudonyms safely.
DEVICE_DOMAIN = b"EAP-DEVICE-PSEUDONYM-v1\x00"


def _b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode("ascii").lower().rstrip("=")[:PSEUDONYM_CHARS]


def account_id_from_public_key(raw: bytes) -> str:
    """The public account id for a raw 32-byte Ed25519 account key.

    Raises:
        InvalidArgument: ``raw`` is not 32 bytes.
    """
    if not isinstance(raw, bytes | bytearray | memoryview) or len(raw) != PUBLIC_KEY_LEN:
        raise invalid("public_key", f"an account key is a raw {PUBLIC_KEY_LEN}-byte Ed25519 key")
    return ACCOUNT_PREFIX + _b32(hashlib.sha256(bytes(raw)).digest())


def device_pseudonym(node_secret: bytes, local_device_ref: str) -> str:
    """The pseudonym under which a local device is known outside this node.

    Args:
        node_secret: this node's pseudonym secret (see :func:`load_node_secret`).
        local_device_ref: the node-local device reference (e.g. a meter id); never sent out.

    Raises:
        ConfigError: the secret is shorter than 16 bytes.
        InvalidArgument: the reference is empty.
    """
    if len(node_secret) < MIN_NODE_SECRET_LEN:
        raise ConfigError(f"node secret must be at least {MIN_NODE_SECRET_LEN} bytes")
    if not local_device_ref:
        raise invalid("local_device_ref", "must not be empty")
    mac = hmac.new(bytes(node_secret), DEVICE_DOMAIN + local_device_ref.encode("utf-8"), "sha256")
    return DEVICE_PREFIX + _b32(mac.digest())


def create_node_secret(path: str | Path) -> bytes:
    """Generate a 32-byte node secret and store it in file ``path`` (mode 0600).

    Raises:
        AlreadyExists: the file exists (a secret is never overwritten: pseudonyms would change).
    """
    path = Path(path)
    _files.ensure_private_dir(path.parent)
    secret = secrets.token_bytes(NODE_SECRET_LEN)
    _files.create_file(path, secret, _files.PRIVATE_FILE_MODE)
    logger.info("created node pseudonym secret %s", path)
    return secret


def load_node_secret(path: str | Path) -> bytes:
    """Read the node secret from ``path``, refusing a file readable by group or others.

    Raises:
        ConfigError: missing file, loose permissions, or not exactly 32 bytes.
    """
    path = Path(path)
    _files.check_private_dir(path.parent)
    secret = _files.read_private_file(path)
    if len(secret) != NODE_SECRET_LEN:
        raise ConfigError(f"node secret {path} must hold exactly {NODE_SECRET_LEN} bytes")
    return secret
