"""Built-in attestation plugin, scheme ``operator-signed``.

The operator vouches for the device with a document reference (grid-connection agreement,
inspection report).  The evidence must be non-empty; the node keeps only its hash as the
attestation reference.  Stronger schemes (utility registry lookups, device keys) are plugins.
"""

from __future__ import annotations

import hashlib

from eap.node.errors import invalid
from eap.plugins import hookimpl

SCHEME = "operator-signed"


@hookimpl
def eap_attest_device(device, scheme, evidence):
    if scheme != SCHEME:
        return None
    if len(evidence.strip()) < 3:
        raise invalid("attestation.evidence", "operator-signed needs a document reference")
    ref = hashlib.sha256(f"{SCHEME}\0{device['local_ref']}\0{evidence}".encode()).hexdigest()
    return {"ref": ref[:32]}
