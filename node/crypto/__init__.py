"""Node cryptography: identity keys, signed envelopes, pseudonyms and the TLS PKI.

* :mod:`.keys` — this node's Ed25519 :class:`KeyRing` (active key, retired keys, rotation)
  and the :class:`PeerKeys` of trusted peers used to verify their signatures.
* :mod:`.envelope` — :func:`seal` / :func:`open_envelope`: signed, destination-bound,
  expiring envelopes with a canonical signing input, and an optional :class:`ReplayGuard`.
* :mod:`.pseudonyms` — public account ids derived from account keys and keyed device
  pseudonyms, so exact device identity never leaves the node.
* :mod:`.certs` — a demo federation CA, node TLS certificates, gRPC mutual-TLS credentials
  and the peer node id of an incoming call.

The byte layouts and the security model are described in ``docs/security.md``.
"""

from eap.node.crypto.certs import (
    TlsFiles,
    TlsMaterial,
    create_ca,
    is_node_id,
    issue_node_cert,
    load_tls_material,
    node_id_from_certificate,
    peer_channel_options,
    peer_node_id_from_auth_context,
)
from eap.node.crypto.envelope import (
    ReplayDetected,
    ReplayGuard,
    SignedEnvelope,
    VerifiedEnvelope,
    open_envelope,
    seal,
    signing_input,
)
from eap.node.crypto.keys import (
    KeyRing,
    PeerKeys,
    PublicKeyInfo,
    fingerprint,
    key_id_for,
)
from eap.node.crypto.pseudonyms import (
    account_id_from_public_key,
    create_node_secret,
    device_pseudonym,
    load_node_secret,
)

__all__ = [
    "KeyRing",
    "PeerKeys",
    "PublicKeyInfo",
    "ReplayDetected",
    "ReplayGuard",
    "SignedEnvelope",
    "TlsFiles",
    "TlsMaterial",
    "VerifiedEnvelope",
    "account_id_from_public_key",
    "create_ca",
    "create_node_secret",
    "device_pseudonym",
    "fingerprint",
    "is_node_id",
    "issue_node_cert",
    "key_id_for",
    "load_node_secret",
    "load_tls_material",
    "node_id_from_certificate",
    "open_envelope",
    "peer_channel_options",
    "peer_node_id_from_auth_context",
    "seal",
    "signing_input",
]
