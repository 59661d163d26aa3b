"""Built-in attestation plugin, scheme ``utility-allowlist``: the baseline of Sybil resistance.

The utility that runs the meters signs a list of the meter ids it has installed with its
Ed25519 key; a device is accepted only when its meter id is on a list whose signature
verifies with the utility key the operator configured::

    [attestation]
    allowlist = "utility-allowlist.json"          # relative to the node home
    utility_public_key = "<64 hex characters>"    # raw Ed25519 public key

The file is JSON ``{"payload": {"utility": str, "issued_at": str, "meter_ids": [str]},
"signature": hex}``; the signature covers the canonical JSON of ``payload`` (sorted keys, no
spaces).  :func:`sign_allowlist` writes one (a utility's tool; tests and the demo use it).
The attestation reference kept by the node is a hash of the list's signature and the meter id,
so an auditor with the same list can check it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from eap.node.errors import invalid
from eap.plugins import hookimpl

SCHEME = "utility-allowlist"


def _canonical(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign_allowlist(
    path: Path, meter_ids: list[str], key: Ed25519PrivateKey, *, utility: str, issued_at: str
) -> None:
    """Write a signed allowlist of ``meter_ids`` to ``path``."""
    payload = {"utility": utility, "issued_at": issued_at, "meter_ids": sorted(set(meter_ids))}
    signature = key.sign(_canonical(payload))
    Path(path).write_text(json.dumps({"payload": payload, "signature": signature.hex()}))


def load_allowlist(path: Path, public_key_hex: str) -> tuple[set[str], bytes]:
    """The meter ids of a signed list and its signature.

    Raises:
        InvalidArgument: missing or unreadable file, malformed key, or a bad signature.
    """
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
    except ValueError as exc:
        raise invalid(
            "attestation.scheme", "[attestation] utility_public_key is not an Ed25519 key"
        ) from exc
    try:
        doc = json.loads(Path(path).read_text())
        payload, signature = doc["payload"], bytes.fromhex(doc["signature"])
        ids = payload["meter_ids"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise invalid("attestation.scheme", f"the utility allowlist is unreadable: {exc}") from exc
    try:
        key.verify(signature, _canonical(payload))
    except InvalidSignature as exc:
        raise invalid(
            "attestation.scheme", "the utility allowlist's signature does not verify"
        ) from exc
    return {str(i) for i in ids}, signature


@hookimpl
def eap_attest_device(device, scheme, evidence, settings):
    if scheme != SCHEME:
        return None
    path, key = settings.get("allowlist"), settings.get("utility_public_key")
    if not path or not key:
        raise invalid(
            "attestation.scheme",
            "utility-allowlist needs [attestation] allowlist and utility_public_key",
        )
    full = Path(path) if Path(path).is_absolute() else Path(settings["home"]) / path
    meters, signature = load_allowlist(full, key)
    if device["meter_id"] not in meters:
        raise invalid(
            "attestation.evidence", "the meter id is not on the utility's signed allowlist"
        )
    ref = hashlib.sha256(signature + b"\0" + device["meter_id"].encode()).hexdigest()
    return {"ref": ref[:32]}
