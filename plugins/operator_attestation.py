"""Built-in attestation plugin, scheme ``operator-signed``: for demos and tests only.

The operator vouches for the device with a document reference (grid-connection agreement,
inspection report); the node keeps only its hash.  This proves nothing to anyone else, so the
scheme is refused unless the node's config enables it explicitly::

    [attestation]
    operator_signed = true

(``eap-node init --operator-signed``; the demo's homes set it).  Real nodes use the utility's
signed allowlist (:mod:`eap.plugins.utility_allowlist`) or a stronger scheme from a plugin.
"""

from __future__ import annotations

import hashlib

from eap.node.errors import invalid
from eap.plugins import hookimpl

SCHEME = "operator-signed"


@hookimpl
def eap_attest_device(device, scheme, evidence, settings):
    if scheme != SCHEME:
        return None
    if settings.get("operator_signed") is not True:
        raise invalid(
            "attestation.scheme",
            "operator-signed is for demos and is not enabled on this node "
            "([attestation] operator_signed = true); use utility-allowlist",
        )
    if len(evidence.strip()) < 3:
        raise invalid("attestation.evidence", "operator-signed needs a document reference")
    ref = hashlib.sha256(f"{SCHEME}\0{device['local_ref']}\0{evidence}".encode()).hexdigest()
    return {"ref": ref[:32]}
